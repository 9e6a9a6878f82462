//! `POST /api/apps/{hash}/events`: backends publish events (docs/protocol.md section 6).

use crate::events::parse_events;
use crate::http::api_key::{bearer, key_matches};
use crate::state::ServerState;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

fn reply(status: u16, message: &str) -> HttpResponse {
    crate::metrics::publish_request(status);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"))
        .json(serde_json::json!({ "error": message }))
}

/// The key is checked from the headers before a byte of the body is read, and an
/// unknown app gets the same 401 as a wrong key: the API does not tell which app
/// hashes exist, nor read a megabyte for a caller it will refuse.
pub async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<Arc<ServerState>>,
) -> HttpResponse {
    let given = bearer(&req).unwrap_or("");
    let app = state
        .app(path.as_str())
        .filter(|app| key_matches(given, &app.settings().config.api_key));
    let Some(app) = app else {
        return reply(401, "invalid API key");
    };
    let settings = app.settings();
    if state.is_draining() || !state.engine.ready() {
        return reply(503, "unavailable");
    }
    let body = match payload
        .to_bytes_limited(state.limits.max_publish_bytes)
        .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return reply(400, "body could not be read"),
        Err(_) => return reply(413, "body too large"),
    };
    let events = match parse_events(&body) {
        Ok(e) => e,
        Err((status, message)) => return reply(status, &message),
    };
    for event in &events {
        if let Err((status, message)) = event.validate(&settings.rules) {
            return reply(status, &message);
        }
    }
    let count = events.len();
    for event in events {
        match app.registry.send(event.into_publish()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(app = %app.hash, error = %e, "event refused");
                return reply(503, "unavailable");
            }
            Err(_) => return reply(503, "unavailable"),
        }
    }
    crate::metrics::publish_request(202);
    HttpResponse::Accepted().json(serde_json::json!({ "accepted": count }))
}
