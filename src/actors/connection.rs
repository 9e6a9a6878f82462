//! One actor per WebSocket. It reads and checks client frames, holds the socket's
//! identity and joined channels, enforces frame size, rate limit and liveness, and
//! writes frames through the socket's outbox. It never encodes a broadcast.

use super::channel::{ChannelActor, ClientMessage, HistoryRequest, Join, Leave, Member};
use super::registry::JoinChannel;
use crate::auth::Identity;
use crate::config::ChannelRule;
use crate::http::linger::{self, RawSocket};
use crate::outbox::{Outbox, Push};
use crate::protocol::{self, close, Action, Inbound, SharedJson};
use crate::rules::{self, Denied};
use crate::state::{Admission, AppContext, ServerState};
use crate::triggers::{self, Verdict};
use actix::prelude::*;
use actix_http::ws::{Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    limiter: Option<DefaultDirectRateLimiter>,
    last_heard: Instant,
    partial: Option<Partial>,
    close_reason: &'static str,
    /// The close code sent or echoed (None: the connection just ended).
    close_code: Option<u16>,
    raw_socket: Option<RawSocket>,
    self_addr: Addr<ConnectionActor>,
}

impl ConnectionActor {
    pub fn new(
        state: Arc<ServerState>,
        app: Arc<AppContext>,
        identity: Identity,
        outbox: Arc<Outbox>,
        admission: Admission,
        raw_socket: Option<RawSocket>,
        self_addr: Addr<ConnectionActor>,
    ) -> Self {
        let limiter = NonZeroU32::new(state.limits.messages_per_minute)
            .map(|n| RateLimiter::direct(Quota::per_minute(n)));
        let client = protocol::shared_json(&identity.client_json());
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
            last_heard: Instant::now(),
            partial: None,
            close_reason: "peer closed",
            close_code: None,
            raw_socket,
            self_addr,
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

    fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let frame = match protocol::parse_inbound(text) {
            Ok(f) => f,
            Err(invalid) => {
                return self.send_error(invalid.channel.as_deref(), &invalid.message(), ctx)
            }
        };
        match frame.action {
            Action::Join => self.join(frame, ctx),
            Action::Leave => self.leave(&frame.channel, ctx),
            Action::Message => self.message(frame, ctx),
            Action::History => match self.joined.get(&frame.channel) {
                Some(j) => j.addr.do_send(HistoryRequest {
                    socket_id: self.socket_id.clone(),
                }),
                None => self.deny(&frame.channel, Denied::NotJoined, ctx),
            },
        }
    }

    fn join(&mut self, frame: Inbound, ctx: &mut Context<Self>) {
        let channel = frame.channel.clone();
        let request = match frame.join_request() {
            Ok(r) => r,
            Err(invalid) => return self.send_error(Some(&channel), &invalid.message(), ctx),
        };
        if let Err(d) = rules::validate_channel_name(&channel) {
            return self.deny(&channel, d, ctx);
        }
        let Some(rule) = self.app.settings().rules.find(&channel).cloned() else {
            return self.deny(&channel, Denied::ChannelNotFound, ctx);
        };
        if let Err(d) = rules::check_join(&rule, &self.identity, &channel) {
            return self.deny(&channel, d, ctx);
        }
        if let Some(j) = self.joined.get(&channel) {
            // A repeated join goes straight to the channel (in order with this
            // socket's other frames there), which re-acks it; no trigger, no count.
            let member = self.member();
            j.addr.do_send(Join {
                member,
                request,
                via_registry: false,
            });
            return;
        }
        let Some(url) = rule.trigger_url.clone() else {
            return self.finish_join(channel, rule, request, ctx);
        };
        let body = serde_json::json!({
            "action": "join",
            "channel": channel,
            "client": self.identity.client_json(),
            "options": frame.options,
            "payload": frame.payload,
        });
        let timeout = Duration::from_millis(rule.trigger_timeout_ms);
        let api_key = self.app.settings().config.api_key.clone();
        // `wait`: later frames of this socket are held until the verdict, so a message
        // sent right after a join is not refused as "not joined".
        ctx.wait(
            async move { triggers::call(&url, &api_key, timeout, body).await }
                .into_actor(self)
                .map(move |verdict, act, ctx| match verdict {
                    Verdict::Deny => act.deny(&channel, Denied::JoinRejected, ctx),
                    _ => act.finish_join(channel, rule, request, ctx),
                }),
        );
    }

    fn finish_join(
        &mut self,
        channel: String,
        rule: Arc<ChannelRule>,
        request: protocol::JoinRequest,
        ctx: &mut Context<Self>,
    ) {
        if self.joined.len() >= self.state.limits.max_channels_per_socket {
            return self.deny(&channel, Denied::TooManyChannels, ctx);
        }
        let join = JoinChannel {
            channel: channel.clone(),
            rule: rule.clone(),
            member: self.member(),
            request,
        };
        ctx.wait(
            self.app.registry.send(join).into_actor(self).map(
                move |result, act, ctx| match result {
                    Ok(addr) => {
                        act.joined.insert(channel, Joined { addr, rule });
                    }
                    Err(_) => act.send_error(Some(&channel), "Service unavailable", ctx),
                },
            ),
        );
    }

    fn member(&self) -> Member {
        Member {
            identity: self.identity.clone(),
            client: self.client.clone(),
            outbox: self.outbox.clone(),
            conn: Addr::clone(&self.self_addr),
            presence: false,
        }
    }

    fn leave(&mut self, channel: &str, ctx: &mut Context<Self>) {
        if let Some(j) = self.joined.remove(channel) {
            j.addr.do_send(Leave {
                socket_id: self.socket_id.clone(),
            });
            self.send(protocol::leave_frame(channel), ctx);
            self.forget_channels_if_none();
        }
    }

    /// A socket that left its last channel keeps no table for them: thousands of
    /// sockets idling between channels would otherwise each keep their largest one.
    fn forget_channels_if_none(&mut self) {
        if self.joined.is_empty() {
            self.joined = HashMap::new();
        }
    }

    fn message(&mut self, frame: Inbound, ctx: &mut Context<Self>) {
        crate::metrics::message_in();
        let channel = frame.channel.clone();
        let Some(joined) = self.joined.get(&channel) else {
            return self.deny(&channel, Denied::NotJoined, ctx);
        };
        // The current rule: a reload may have changed it since the join.
        let addr = joined.addr.clone();
        let rule = self
            .app
            .settings()
            .rules
            .find(&channel)
            .cloned()
            .unwrap_or_else(|| joined.rule.clone());
        let requested_authenticated = frame.requested_authenticated();
        let target = frame.target_socket().map(str::to_string);
        // Sender-side checks here; the channel checks the recipient.
        let checked = match &target {
            None => rules::check_public_message(&rule, &self.identity, requested_authenticated)
                .map(|_| ()),
            Some(_) => rules::check_direct_message(&rule, &self.identity, Some(true)),
        };
        if let Err(d) = checked {
            return self.deny(&channel, d, ctx);
        }
        if let Some(limiter) = &self.limiter {
            if limiter.check().is_err() {
                crate::metrics::dropped("rate_limit");
                return self.deny(&channel, Denied::RateLimited, ctx);
            }
        }
        let sender = self.socket_id.clone();
        let Some(url) = rule.trigger_url.clone() else {
            addr.do_send(ClientMessage {
                sender,
                payload: frame.payload,
                requested_authenticated,
                target,
            });
            return;
        };
        let body = serde_json::json!({
            "action": "message",
            "channel": channel,
            "client": self.identity.client_json(),
            "options": frame.options,
            "payload": frame.payload,
        });
        let payload = frame.payload;
        let timeout = Duration::from_millis(rule.trigger_timeout_ms);
        let api_key = self.app.settings().config.api_key.clone();
        ctx.wait(
            async move { triggers::call(&url, &api_key, timeout, body).await }
                .into_actor(self)
                .map(move |verdict, act, ctx| {
                    let payload: Box<RawValue> = match verdict {
                        Verdict::Deny => return act.deny(&channel, Denied::MessageRejected, ctx),
                        Verdict::Allow => payload,
                        Verdict::Replace(p) => p,
                    };
                    addr.do_send(ClientMessage {
                        sender,
                        payload,
                        requested_authenticated,
                        target,
                    });
                }),
        );
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
            Err(_) => self.close_with(1007, "invalid UTF-8", ctx),
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
            return self.close_with(1002, "continuation without a first frame", ctx);
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
        self.state
            .connections
            .register(self.admission.id, ctx.address());
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
        for (_, j) in self.joined.drain() {
            j.addr.do_send(Leave {
                socket_id: self.socket_id.clone(),
            });
        }
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
                self.close_with(1002, "protocol error", ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// From a channel: this socket's queue overflowed; it is closing with 1013.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SlowConsumer;

impl Handler<SlowConsumer> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, _: SlowConsumer, ctx: &mut Context<Self>) {
        self.close_reason = "slow consumer";
        ctx.stop();
    }
}

/// From a channel: the join did not take effect (the engine refused it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unjoined {
    pub channel: String,
}

impl Handler<Unjoined> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: Unjoined, _: &mut Context<Self>) {
        self.joined.remove(&msg.channel);
        self.forget_channels_if_none();
    }
}

/// Close the socket with a code (drain on shutdown: 1012).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseSocket {
    pub code: u16,
    pub reason: &'static str,
}

impl Handler<CloseSocket> for ConnectionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) {
        self.close_with(msg.code, msg.reason, ctx);
    }
}
