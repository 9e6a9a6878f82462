//! `GET /rt/{hash}`: the WebSocket upgrade. The socket is held by a connection actor
//! fed by the request body (decoded frames) and writing through the response body
//! (an `OutboxBody`): one task per socket, no `actix_ws::Session` channel per send.

use crate::actors::connection::ConnectionActor;
use crate::auth::{self, Identity};
use crate::config::InvalidToken;
use crate::http::linger::RawSocket;
use crate::outbox::{Outbox, OutboxBody};
use crate::protocol::{self, close};
use crate::state::{Admission, Refused, ServerState};
use actix::{Actor, AsyncContext};
use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, ProtocolError};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub async fn upgrade(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<Arc<ServerState>>,
) -> HttpResponse {
    let state = state.get_ref().clone();
    if state.is_draining() {
        return HttpResponse::ServiceUnavailable().body("draining");
    }
    if let (Some(limiter), Some(peer)) = (&state.connect_limiter, req.peer_addr()) {
        if limiter.check_key(&peer.ip()).is_err() {
            crate::metrics::disconnect("connect rate");
            return HttpResponse::TooManyRequests().body("too many connections from this address");
        }
    }
    let mut response = match actix_http::ws::handshake(req.head()) {
        Ok(r) => r,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    // The SDK offers its token as the only subprotocol; the 101 must select it, or
    // browsers and `ws` abort. Of a list, the first is the token and is selected.
    let offered = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    if let Some(p) = &offered {
        response.insert_header(("sec-websocket-protocol", p.as_str()));
    }
    let token = offered
        .clone()
        .or_else(|| super::bearer(&req).map(str::to_string));

    let limits = &state.limits;
    let outbox = Outbox::new(limits.send_queue_bytes);
    let refuse = |outbox: &Arc<Outbox>, message: Option<&str>, code: u16, reason: &'static str| {
        crate::metrics::disconnect(reason);
        if let Some(m) = message {
            crate::metrics::error_sent(m);
            outbox.push(protocol::error_frame(None, m));
        }
        outbox.close(code, reason, false);
    };
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
    if !settings.config.allowed_origins.is_empty() {
        // Cross-site WebSocket hijacking: browsers always send Origin; other clients may not.
        if let Some(origin) = req.headers().get("origin").and_then(|v| v.to_str().ok()) {
            if !settings.config.allowed_origins.iter().any(|o| o == origin) {
                crate::metrics::disconnect("origin refused");
                return HttpResponse::Forbidden().body("origin not allowed");
            }
        }
    }
    let socket_id = auth::new_socket_id();
    let identity = match token {
        None => Identity::anonymous(socket_id),
        Some(token) => match settings.verifier.verify(&token, socket_id.clone()) {
            Ok(identity) => identity,
            Err(e) => {
                let message = format!("Auth token rejected: {e}");
                if settings.config.invalid_token == InvalidToken::Reject {
                    refuse(
                        &outbox,
                        Some(&message),
                        close::UNAUTHORIZED,
                        "token rejected",
                    );
                    return respond(response, OutboxBody::new(outbox));
                }
                crate::metrics::error_sent(&message);
                outbox.push(protocol::error_frame(None, &message));
                Identity::anonymous(socket_id)
            }
        },
    };
    let user = identity
        .authenticated
        .then(|| (app.hash.clone(), identity.row_id_key()));
    let admission = match Admission::admit(&state, user).await {
        Ok(a) => a,
        Err(Refused::ServerFull) => {
            refuse(&outbox, None, close::OVERLOAD, "server full");
            return respond(response, OutboxBody::new(outbox));
        }
        Err(Refused::UserFull) => {
            refuse(
                &outbox,
                None,
                close::TOO_MANY_FOR_USER,
                "too many connections for this user",
            );
            return respond(response, OutboxBody::new(outbox));
        }
    };
    crate::metrics::connection_opened(&app.hash);
    tracing::info!(
        socket = %identity.socket_id,
        app = %app.hash,
        user = %identity.row_id_key(),
        authenticated = identity.authenticated,
        "connected"
    );
    let raw_socket = req.conn_data::<RawSocket>().copied();
    let frames = FrameStream::new(payload, limits.max_frame_bytes);
    let body = OutboxBody::new(outbox.clone());
    ConnectionActor::create(move |ctx| {
        ctx.add_stream(frames);
        ConnectionActor::new(
            state,
            app,
            identity,
            outbox,
            admission,
            raw_socket,
            ctx.address(),
        )
    });
    respond(response, body)
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
