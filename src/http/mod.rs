//! HTTP: the WebSocket upgrade, the publish API and health, on one port.

pub mod admin;
pub mod api_key;
pub mod client_addr;
pub mod health;
pub mod linger;
pub mod openapi;
pub mod pages;
pub mod publish;
pub mod server_api;
pub mod tls;
pub mod ws;

use crate::state::ServerState;
use actix_web::web;
use std::sync::Arc;

pub fn routes(cfg: &mut web::ServiceConfig, state: Arc<ServerState>) {
    let publish_limit = state.limits.max_publish_bytes;
    cfg.app_data(web::Data::new(state))
        .route("/rt/{hash}", web::get().to(ws::upgrade))
        .service(
            web::resource("/api/apps/{hash}/events")
                .app_data(web::PayloadConfig::new(publish_limit))
                .route(web::post().to(publish::publish)),
        )
        .configure(server_api::routes)
        .route("/api/openapi.json", web::get().to(openapi::document))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/admin/stats", web::get().to(admin::stats))
        .route("/admin/reload", web::post().to(admin::reload))
        .route("/", web::get().to(pages::demo))
        .route("/admin", web::get().to(pages::admin))
        .route("/static/vendor/xano.min.js", web::get().to(pages::xano_sdk))
        .route(
            "/static/vendor/xano.min.js.LICENSE.txt",
            web::get().to(pages::xano_sdk_license),
        );
}
