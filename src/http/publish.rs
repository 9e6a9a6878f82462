//! `POST /api/apps/{hash}/events`: backends publish events (PROTOCOL.md section 6).

use crate::events::parse_events;
use crate::state::ServerState;
use actix_web::{web, HttpRequest, HttpResponse};
use std::sync::Arc;

pub fn key_matches(given: &str, expected: &str) -> bool {
    // Constant time over the expected key's length.
    let (g, e) = (given.as_bytes(), expected.as_bytes());
    let mut diff = g.len() ^ e.len();
    for (i, b) in e.iter().enumerate() {
        diff |= (*b ^ g.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

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
    let given = super::bearer(&req).unwrap_or("");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_compare_exactly() {
        assert!(key_matches("secret-key", "secret-key"));
        assert!(!key_matches("secret-ke", "secret-key"));
        assert!(!key_matches("secret-keyy", "secret-key"));
        assert!(!key_matches("", "secret-key"));
    }
}
