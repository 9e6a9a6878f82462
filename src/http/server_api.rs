//! The server API for backends (docs/protocol.md section 10): what is live
//! (`channels`, `presence`, `presence_stats`), stored history (read, clear), and
//! commands to sockets (`disconnect`, `unsubscribe`). Every answer is cluster-wide:
//! reads go to the engine, commands through the engine to every node.
//!
//! Files: this one holds what every endpoint shares (who may call, parameters,
//! error answers); `reads` the questions, `sockets` the commands.

mod reads;
mod sockets;

use crate::cluster::EngineError;
use crate::config::ChannelRule;
use crate::http::api_key::{bearer, key_matches};
use crate::state::{AppContext, ServerState};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use std::collections::HashMap;
use std::sync::Arc;

/// The largest JSON body a command takes.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/apps/{hash}/channels", web::get().to(reads::channels))
        .route("/api/apps/{hash}/presence", web::get().to(reads::presence))
        .route(
            "/api/apps/{hash}/presence_stats",
            web::get().to(reads::presence_stats),
        )
        .route("/api/apps/{hash}/history", web::get().to(reads::history))
        .route(
            "/api/apps/{hash}/history",
            web::delete().to(reads::clear_history),
        )
        .route(
            "/api/apps/{hash}/disconnect",
            web::post().to(sockets::disconnect),
        )
        .route(
            "/api/apps/{hash}/unsubscribe",
            web::post().to(sockets::unsubscribe),
        );
}

/// Why a request was refused; each is an HTTP status and `{"error": text}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid API key")]
    Unauthorized,
    #[error("missing parameter: {0}")]
    Missing(&'static str),
    #[error("bad parameter: {0} ({1})")]
    Bad(&'static str, &'static str),
    #[error("malformed query string")]
    MalformedQuery,
    #[error("body is not a JSON object")]
    MalformedBody,
    #[error("body too large")]
    TooLarge,
    #[error("no rule matches")]
    NoRule,
    #[error("unavailable")]
    Unavailable,
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        tracing::warn!(error = %e, "server API: engine unavailable");
        ApiError::Unavailable
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Missing(_)
            | ApiError::Bad(..)
            | ApiError::MalformedQuery
            | ApiError::MalformedBody => StatusCode::BAD_REQUEST,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NoRule => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}

pub type ApiResult = Result<HttpResponse, ApiError>;

/// The app of the path, when the caller holds its API key or the admin token. An
/// unknown app gets the same 401 as a wrong key, as on the publish API.
fn authorize(
    req: &HttpRequest,
    state: &ServerState,
    hash: &str,
) -> Result<Arc<AppContext>, ApiError> {
    let app = state.app(hash).ok_or(ApiError::Unauthorized)?;
    let given = bearer(req).unwrap_or("");
    let app_key = key_matches(given, &app.settings().config.api_key);
    if app_key || crate::http::admin::authorized(req, state) {
        Ok(app)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The query string's parameters.
fn query(req: &HttpRequest) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| ApiError::MalformedQuery)
}

/// A concrete channel name, and the app's rule for it.
fn channel_and_rule(
    app: &AppContext,
    channel: Option<&str>,
) -> Result<(String, Arc<ChannelRule>), ApiError> {
    let channel = channel.ok_or(ApiError::Missing("channel"))?;
    crate::rules::validate_channel_name(channel)
        .map_err(|_| ApiError::Bad("channel", "a concrete channel name"))?;
    let rule = app
        .settings()
        .rules
        .find(channel)
        .cloned()
        .ok_or(ApiError::NoRule)?;
    Ok((channel.to_string(), rule))
}
