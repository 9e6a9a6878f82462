//! The admin API: `GET /admin/stats` (JSON), guarded by `server.admin_token`.
//! The admin page (`GET /admin`) polls it.

use crate::actors::registry::ListChannels;
use crate::state::ServerState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Whether the request carries the admin token (`Authorization: Bearer`).
pub fn authorized(req: &HttpRequest, state: &ServerState) -> bool {
    let Some(expected) = state.admin_token.as_deref() else {
        return false;
    };
    crate::http::api_key::bearer(req)
        .is_some_and(|given| crate::http::api_key::key_matches(given, expected))
}

/// The refusal for a request that may not use the admin API, if any.
fn refusal(req: &HttpRequest, state: &ServerState) -> Option<HttpResponse> {
    if state.admin_token.is_none() {
        return Some(
            HttpResponse::NotFound().json(json!({"error": "admin is off (server.admin_token)"})),
        );
    }
    if !authorized(req, state) {
        return Some(HttpResponse::Unauthorized().json(json!({"error": "invalid admin token"})));
    }
    None
}

/// `POST /admin/reload`: 200 with what was reloaded, or 400 with why it was refused.
pub async fn reload(req: HttpRequest, state: web::Data<Arc<ServerState>>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state) {
        return refused;
    }
    match crate::reload::reload(state.get_ref()) {
        Ok(done) => HttpResponse::Ok().json(json!({"reloaded": done})),
        Err(why) => HttpResponse::BadRequest().json(json!({"error": why})),
    }
}

pub async fn stats(req: HttpRequest, state: web::Data<Arc<ServerState>>) -> HttpResponse {
    if let Some(refused) = refusal(&req, &state) {
        return refused;
    }
    let mut apps = Vec::new();
    for app in state.apps() {
        let channels = app.registry.send(ListChannels).await.unwrap_or_default();
        apps.push(json!({
            "hash": app.hash.as_ref(),
            "name": app.settings().config.name,
            "channels": channels,
        }));
    }
    HttpResponse::Ok().json(json!({
        "connections": state.connections.count(),
        "draining": state.is_draining(),
        "ready": state.engine.ready(),
        "messages_in_total": crate::metrics::MESSAGES_IN.load(Ordering::Relaxed),
        "deliveries_total": crate::metrics::DELIVERIES.load(Ordering::Relaxed),
        "apps": apps,
    }))
}
