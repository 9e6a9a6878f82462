//! One actor per WebSocket. It reads WebSocket frames, holds the socket's identity
//! and joined channels, enforces frame size and liveness, and writes frames through
//! the socket's outbox. It never encodes a broadcast. What each client frame does
//! (join, leave, message, history) is in `commands`.

use super::channel::{ChannelActor, Leave, Member, Snapshot};
use super::notices::{CloseSocket, MemberNotice};
use crate::auth::Identity;
use crate::cluster::lifecycle;
use crate::config::ChannelRule;
use crate::http::linger::{self, RawSocket};
use crate::outbox::{Outbox, Push};
use crate::protocol::{self, close, SharedJson};
use crate::rules::Denied;
use crate::state::{Admission, AppContext, LiveSocket, ServerState};
use actix::prelude::*;
use actix_http::ws::{Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod commands;
mod rate;

use rate::{FrameRate, FrameVerdict};

struct Joined {
    addr: Addr<ChannelActor>,
    rule: Arc<ChannelRule>,
}

/// A message being assembled from continuation frames.
struct Partial {
    text: bool,
    buf: BytesMut,
}

pub struct ConnectionActor {
    state: Arc<ServerState>,
    app: Arc<AppContext>,
    identity: Arc<Identity>,
    socket_id: Arc<str>,
    client: SharedJson,
    outbox: Arc<Outbox>,
    admission: Admission,
    joined: HashMap<String, Joined>,
    limiter: Option<rate::Limiter>,
    frame_rate: Option<FrameRate>,
    last_heard: Instant,
    partial: Option<Partial>,
    close_reason: &'static str,
    /// The close code sent or echoed (None: the connection just ended).
    close_code: Option<u16>,
    raw_socket: Option<RawSocket>,
    /// How channels reach this connection back.
    notices: Recipient<MemberNotice>,
    /// When the token's session ends (taken when the actor starts).
    session_ends: Option<Duration>,
}

/// Who is on the other end of a new socket.
pub struct Peer {
    pub identity: Identity,
    /// Close with 4000 after this long (`expired_token = "reconnect"`, the token's
    /// `exp` plus the leeway); None: the session lasts as long as the socket.
    pub session_ends: Option<Duration>,
    pub raw_socket: Option<RawSocket>,
}

impl ConnectionActor {
    pub fn new(
        state: Arc<ServerState>,
        app: Arc<AppContext>,
        peer: Peer,
        outbox: Arc<Outbox>,
        admission: Admission,
        notices: Recipient<MemberNotice>,
    ) -> Self {
        let Peer {
            identity,
            session_ends,
            raw_socket,
        } = peer;
        let limiter = rate::per_minute(state.limits.messages_per_minute);
        let client = protocol::shared_json(&identity.client_json());
        let frame_rate = FrameRate::new(state.limits.frames_per_minute);
        Self {
            socket_id: Arc::from(identity.socket_id.as_str()),
            identity: Arc::new(identity),
            client,
            state,
            app,
            outbox,
            admission,
            joined: HashMap::new(),
            limiter,
            frame_rate,
            last_heard: Instant::now(),
            partial: None,
            close_reason: "peer closed",
            close_code: None,
            raw_socket,
            notices,
            session_ends,
        }
    }

    fn send(&mut self, frame: protocol::Frame, ctx: &mut Context<Self>) {
        if self.outbox.push(frame) == Push::Overflow {
            self.close_reason = "slow consumer";
            ctx.stop();
        }
    }

    fn send_error(&mut self, channel: Option<&str>, message: &str, ctx: &mut Context<Self>) {
        crate::metrics::error_sent(message);
        self.send(protocol::error_frame(channel, message), ctx);
    }

    fn deny(&mut self, channel: &str, denied: Denied, ctx: &mut Context<Self>) {
        self.send_error(Some(channel), &denied.to_string(), ctx);
    }

    fn close_with(&mut self, code: u16, reason: &'static str, ctx: &mut Context<Self>) {
        self.outbox.close(code, reason, false);
        self.close_reason = reason;
        self.close_code = Some(code);
        ctx.stop();
    }

    /// Leave every joined channel. With webhooks on, answers one future per channel
    /// that resolves once that channel's engine work for the leave is done (its
    /// mailbox waits for it), so its `member_removed` is queued.
    fn leave_all(&mut self, webhooks: bool) -> Vec<BoxFuture<'static, ()>> {
        let mut leaves = Vec::new();
        for (_, j) in self.joined.drain() {
            let leave = Leave {
                socket_id: self.socket_id.clone(),
            };
            if !webhooks {
                j.addr.do_send(leave);
                continue;
            }
            let (left, done) = (j.addr.send(leave), j.addr.send(Snapshot));
            leaves.push(Box::pin(async move {
                let _ = left.await;
                let _ = done.await;
            }) as BoxFuture<'static, ()>);
        }
        leaves
    }

    /// Queue the `disconnect` webhook once the channels took the leaves: a receiver
    /// sees the socket's `member_removed` events first (1006: no close frame). A
    /// graceful stop waits for it (`ServerState::closing`).
    fn queue_disconnect(&self, leaves: Vec<BoxFuture<'static, ()>>) {
        let disconnect = lifecycle::disconnect(
            &self.socket_id,
            &self.client,
            self.close_code.unwrap_or(1006),
        );
        let (state, app) = (self.state.clone(), self.app.hash.clone());
        state.closing.fetch_add(1, Ordering::AcqRel);
        actix_rt::spawn(async move {
            futures_util::future::join_all(leaves).await;
            let _ = state.engine.queue_webhook(&app, disconnect).await;
            state.closing.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn handle_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        match frame {
            Frame::Text(bytes) => self.handle_message(true, bytes, ctx),
            Frame::Binary(bytes) => self.handle_message(false, bytes, ctx),
            Frame::Continuation(item) => self.continuation(item, ctx),
            Frame::Ping(data) => self.send(protocol::pong_frame(&data), ctx),
            Frame::Pong(_) => {}
            Frame::Close(reason) => {
                let code = reason.map(|r| u16::from(r.code)).unwrap_or(close::NORMAL);
                // Echo the close, then end.
                let echo = if code == 1005 || code == 1006 {
                    close::NORMAL
                } else {
                    code
                };
                self.close_with(echo, "peer closed", ctx);
            }
        }
    }

    fn handle_message(&mut self, text: bool, bytes: Bytes, ctx: &mut Context<Self>) {
        if !text {
            return self.send_error(None, "Invalid frame: binary frames are not supported", ctx);
        }
        match std::str::from_utf8(&bytes) {
            Ok(s) => self.handle_text(s, ctx),
            Err(_) => self.close_with(close::INVALID_DATA, "invalid UTF-8", ctx),
        }
    }

    fn continuation(&mut self, item: Item, ctx: &mut Context<Self>) {
        let max = self.state.limits.max_frame_bytes;
        let (first, bytes, last, text) = match item {
            Item::FirstText(b) => (true, b, false, true),
            Item::FirstBinary(b) => (true, b, false, false),
            Item::Continue(b) => (false, b, false, false),
            Item::Last(b) => (false, b, true, false),
        };
        if first {
            self.partial = Some(Partial {
                text,
                buf: BytesMut::new(),
            });
        }
        let Some(partial) = self.partial.as_mut() else {
            return self.close_with(
                close::PROTOCOL_ERROR,
                "continuation without a first frame",
                ctx,
            );
        };
        if partial.buf.len() + bytes.len() > max {
            return self.close_with(close::TOO_BIG, "message too big", ctx);
        }
        partial.buf.extend_from_slice(&bytes);
        if last {
            let partial = self.partial.take().expect("checked above");
            self.handle_message(partial.text, partial.buf.freeze(), ctx);
        }
    }
}

impl Actor for ConnectionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.state.connections.register(
            self.admission.id,
            LiveSocket {
                app: self.app.hash.clone(),
                identity: self.identity.clone(),
                addr: ctx.address().recipient(),
            },
        );
        if self.state.engine.webhooks_on(&self.app.hash) {
            let connected = self.state.engine.queue_webhook(
                &self.app.hash,
                lifecycle::connect(&self.socket_id, &self.client),
            );
            actix_rt::spawn(connected);
        }
        // One timer entry in the runtime's shared wheel, no task: the SDK reconnects
        // on 4000 with the token it holds now (docs/protocol.md section 1).
        if let Some(ends) = self.session_ends.take() {
            ctx.run_later(ends, |act, ctx| {
                act.close_with(close::SESSION_EXPIRED, "token expired", ctx)
            });
        }
        let interval = Duration::from_secs(self.state.limits.ping_interval_s);
        let timeout = Duration::from_secs(self.state.limits.pong_timeout_s);
        ctx.run_interval(interval, move |act, ctx| {
            if act.last_heard.elapsed() > timeout {
                act.close_reason = "ping timeout";
                act.outbox.finish();
                ctx.stop();
            } else {
                act.send(protocol::ping_frame(), ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let webhooks = self.state.engine.webhooks_on(&self.app.hash);
        let leaves = self.leave_all(webhooks);
        // The outbox may have closed first (a channel saw it overflow) and ended the
        // stream before our own notice arrived.
        if self.outbox.overflowed() {
            self.close_reason = "slow consumer";
            self.close_code = Some(close::OVERLOAD);
        }
        // A close the server started must finish within the grace period, even when
        // the peer stopped reading.
        if !self.outbox.is_open() {
            linger::reset_if_stuck(self.raw_socket);
        }
        self.outbox.finish();
        if webhooks {
            self.queue_disconnect(leaves);
        }
        crate::metrics::connection_closed(&self.app.hash, self.close_reason);
        tracing::info!(
            socket = %self.socket_id,
            app = %self.app.hash,
            user = %self.identity.row_id_key(),
            reason = self.close_reason,
            code = self.close_code,
            "disconnected"
        );
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for ConnectionActor {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        match item {
            Ok(frame) => self.handle_frame(frame, ctx),
            Err(ProtocolError::Overflow) => self.close_with(close::TOO_BIG, "message too big", ctx),
            Err(e) => {
                tracing::debug!(socket = %self.socket_id, error = %e, "protocol error");
                self.close_with(close::PROTOCOL_ERROR, "protocol error", ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<MemberNotice> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: MemberNotice, ctx: &mut Context<Self>) {
        match msg {
            MemberNotice::SlowConsumer => {
                self.close_reason = "slow consumer";
                ctx.stop();
            }
            MemberNotice::Unjoined { channel } => {
                self.joined.remove(&*channel);
                self.forget_channels_if_none();
            }
        }
    }
}

impl Handler<CloseSocket> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) {
        self.close_with(msg.code, msg.reason, ctx);
    }
}
