//! `/healthz` (the process is alive) and `/readyz` (it should get traffic).

use crate::state::ServerState;
use actix_web::{web, HttpResponse};
use std::sync::Arc;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::metrics::render())
}

pub async fn readyz(state: web::Data<Arc<ServerState>>) -> HttpResponse {
    if state.is_draining() {
        HttpResponse::ServiceUnavailable().body("draining")
    } else if !state.engine.ready() {
        HttpResponse::ServiceUnavailable().body("engine not ready")
    } else {
        HttpResponse::Ok().body("ready")
    }
}
