//! `GET /rt/{hash}`: the WebSocket upgrade. The socket is held by a connection actor
//! fed by the request body (decoded frames) and writing through the response body
//! (an `OutboxBody`): one task per socket, no `actix_ws::Session` channel per send.

use crate::actors::connection::{ConnectionActor, Peer};
use crate::auth::{self, Identity};
use crate::config::{ExpiredToken, InvalidToken};
use crate::http::client_addr::limit_key;
use crate::http::linger::RawSocket;
use crate::outbox::{Outbox, OutboxBody};
use crate::protocol::{self, close};
use crate::state::{Admission, AppContext, AppSettings, Refused, ServerState};
use actix::{Actor, AsyncContext};
use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::Stream;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub async fn upgrade(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<Arc<ServerState>>,
) -> HttpResponse {
    let state = state.get_ref().clone();
    let address = client_address(&state, &req);
    if let Some(refused) = refuse_before_handshake(&state, address) {
        return refused;
    }
    let mut response = match actix_http::ws::handshake(req.head()) {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    // The SDK offers its token as the only subprotocol; the 101 must select it, or
    // browsers and `ws` abort. Of a list, the first is the token and is selected.
    let offered = offered_subprotocol(&req);
    if let Some(p) = &offered {
        response.insert_header(("sec-websocket-protocol", p.as_str()));
    }
    let token = offered.or_else(|| crate::http::api_key::bearer(&req).map(str::to_string));
    let outbox = Outbox::new(state.limits.send_queue_bytes);
    let Some(app) = state.app(path.as_str()) else {
        refuse(
            &outbox,
            Some("Unknown connection hash"),
            close::UNAUTHORIZED,
            "unknown connection hash",
        );
        return respond(response, OutboxBody::new(outbox));
    };
    let settings = app.settings();
    if !origin_allowed(&settings.config.allowed_origins, &req) {
        crate::metrics::disconnect("origin refused");
        return HttpResponse::Forbidden().body("origin not allowed");
    }
    let Some((identity, session_ends)) = identify(&settings, token, &outbox) else {
        return respond(response, OutboxBody::new(outbox));
    };
    let user = identity
        .authenticated
        .then(|| (app.hash.clone(), identity.row_id_key()));
    let admission = match Admission::admit(&state, user, address).await {
        Ok(a) => a,
        Err(refused) => {
            let (code, reason) = close_for(refused);
            refuse(&outbox, None, code, reason);
            return respond(response, OutboxBody::new(outbox));
        }
    };
    let body = OutboxBody::new(outbox.clone());
    let raw_socket = req.conn_data::<RawSocket>().copied();
    let frames = FrameStream::new(payload, state.limits.max_frame_bytes);
    let peer = Peer {
        identity,
        session_ends,
        raw_socket,
    };
    start_connection(state, app, peer, outbox, admission, frames);
    respond(response, body)
}

/// The key per-address limits count by: the client's address (forwarded by a
/// trusted proxy, else the peer's), IPv6 per /64.
fn client_address(state: &ServerState, req: &HttpRequest) -> IpAddr {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let client = state
        .trusted_proxies
        .client(peer, header("forwarded"), header("x-forwarded-for"));
    limit_key(client)
}

/// The close code and reason of a socket the connection table has no room for.
fn close_for(refused: Refused) -> (u16, &'static str) {
    match refused {
        Refused::ServerFull => (close::OVERLOAD, "server full"),
        Refused::UserFull => (
            close::TOO_MANY_FOR_USER,
            "too many connections for this user",
        ),
        Refused::AddressFull => (close::OVERLOAD, "too many connections from this address"),
    }
}

/// Refusals that need no handshake: a draining node, a client over the connect rate.
fn refuse_before_handshake(state: &ServerState, address: IpAddr) -> Option<HttpResponse> {
    if state.is_draining() {
        return Some(HttpResponse::ServiceUnavailable().body("draining"));
    }
    if let Some(limiter) = &state.connect_limiter {
        if limiter.check_key(&address).is_err() {
            crate::metrics::disconnect("connect rate");
            return Some(
                HttpResponse::TooManyRequests().body("too many connections from this address"),
            );
        }
    }
    None
}

/// The first subprotocol offered (the SDK's token), if any.
fn offered_subprotocol(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Cross-site WebSocket hijacking: browsers always send Origin; other clients may
/// not, and are let through.
fn origin_allowed(allowed: &[String], req: &HttpRequest) -> bool {
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get("origin").and_then(|v| v.to_str().ok()) {
        Some(origin) => allowed.iter().any(|o| o == origin),
        None => true,
    }
}

/// Close a socket before it started: an optional error frame, then the close.
fn refuse(outbox: &Arc<Outbox>, message: Option<&str>, code: u16, reason: &'static str) {
    crate::metrics::disconnect(reason);
    if let Some(m) = message {
        crate::metrics::error_sent(m);
        outbox.push(protocol::error_frame(None, m));
    }
    outbox.close(code, reason, false);
}

/// Who the socket is: anonymous without a token; with a bad one, anonymous with an
/// error frame, or refused (None) when the app says `invalid_token = "reject"`.
/// With it, when its session ends (`expired_token = "reconnect"` and a token with `exp`).
fn identify(
    settings: &AppSettings,
    token: Option<String>,
    outbox: &Arc<Outbox>,
) -> Option<(Identity, Option<Duration>)> {
    let socket_id = auth::new_socket_id();
    let Some(token) = token else {
        return Some((Identity::anonymous(socket_id), None));
    };
    match settings.verifier.verify_session(&token, socket_id.clone()) {
        Ok(session) => {
            let ends = match settings.config.expired_token {
                ExpiredToken::Reconnect => session.remaining(),
                ExpiredToken::Keep => None,
            };
            Some((session.identity, ends))
        }
        Err(e) => {
            let message = format!("Auth token rejected: {e}");
            if settings.config.invalid_token == InvalidToken::Reject {
                refuse(
                    outbox,
                    Some(&message),
                    close::UNAUTHORIZED,
                    "token rejected",
                );
                return None;
            }
            crate::metrics::error_sent(&message);
            outbox.push(protocol::error_frame(None, &message));
            Some((Identity::anonymous(socket_id), None))
        }
    }
}

/// Start the socket's connection actor, fed by the decoded frames.
fn start_connection(
    state: Arc<ServerState>,
    app: Arc<AppContext>,
    peer: Peer,
    outbox: Arc<Outbox>,
    admission: Admission,
    frames: FrameStream,
) {
    let identity = &peer.identity;
    crate::metrics::connection_opened(&app.hash);
    tracing::info!(
        socket = %identity.socket_id,
        app = %app.hash,
        user = %identity.row_id_key(),
        authenticated = identity.authenticated,
        "connected"
    );
    ConnectionActor::create(move |ctx| {
        ctx.add_stream(frames);
        ConnectionActor::new(
            state,
            app,
            peer,
            outbox,
            admission,
            ctx.address().recipient(),
        )
    });
}

fn respond(mut builder: actix_http::ResponseBuilder, body: OutboxBody) -> HttpResponse {
    match builder.message_body(body) {
        Ok(response) => HttpResponse::from(response).map_into_boxed_body(),
        Err(e) => HttpResponse::from_error(e),
    }
}

/// Decodes WebSocket frames from the request body.
pub struct FrameStream {
    payload: web::Payload,
    buf: BytesMut,
    codec: Codec,
    done: bool,
}

impl FrameStream {
    fn new(payload: web::Payload, max_frame_bytes: usize) -> Self {
        Self {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_frame_bytes),
            done: false,
        }
    }
}

impl Stream for FrameStream {
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => this.buf.extend_from_slice(&bytes),
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
