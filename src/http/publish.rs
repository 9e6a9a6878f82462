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

pub async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<Arc<ServerState>>,
) -> HttpResponse {
    let Some(app) = state.app(path.as_str()) else {
        return reply(404, "unknown app");
    };
    let given = bearer(&req).unwrap_or("");
    let settings = app.settings();
    if !key_matches(given, &settings.config.api_key) {
        return reply(401, "invalid API key");
    }
    if state.is_draining() || !state.engine.ready() {
        return reply(503, "unavailable");
    }
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
