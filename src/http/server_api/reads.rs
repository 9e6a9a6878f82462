//! The questions: which channels are occupied, who is present, how many, and the
//! stored history (read and clear). Answers come from the engine, so they are the
//! same whichever node is asked.

use super::{authorize, channel_and_rule, query, ApiError, ApiResult};
use crate::cluster::ChannelKey;
use crate::state::ServerState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::sync::Arc;

type State = web::Data<Arc<ServerState>>;

/// `GET /api/apps/{hash}/channels[?prefix=P]`
pub async fn channels(req: HttpRequest, path: web::Path<String>, state: State) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let params = query(&req)?;
    let prefix = params.get("prefix").map(String::as_str).unwrap_or("");
    let mut found = state.engine.occupied_channels(&app.hash, prefix).await?;
    found.sort();
    let channels: Vec<_> = found
        .into_iter()
        .map(|(channel, sockets)| json!({ "channel": channel, "sockets": sockets }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "channels": channels })))
}

/// `GET /api/apps/{hash}/presence?channel=C`
pub async fn presence(req: HttpRequest, path: web::Path<String>, state: State) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let params = query(&req)?;
    let (channel, rule) = channel_and_rule(&app, params.get("channel").map(String::as_str))?;
    let clients = if rule.settings.presence {
        state
            .engine
            .presence(&ChannelKey::new(&app.hash, &channel))
            .await?
    } else {
        Vec::new()
    };
    Ok(HttpResponse::Ok().json(json!({ "channel": channel, "presence": clients })))
}

/// `GET /api/apps/{hash}/presence_stats?channel=C`: members, and the distinct
/// authenticated users among them (two tabs of one user are one user).
pub async fn presence_stats(req: HttpRequest, path: web::Path<String>, state: State) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let params = query(&req)?;
    let (channel, _) = channel_and_rule(&app, params.get("channel").map(String::as_str))?;
    let members = state
        .engine
        .members(&ChannelKey::new(&app.hash, &channel))
        .await?;
    let users: HashSet<String> = members
        .iter()
        .filter(|m| m.authenticated)
        .filter_map(|m| {
            let client: serde_json::Value = serde_json::from_str(m.client.get()).ok()?;
            Some(client.get("permissions")?.to_string())
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "channel": channel,
        "sockets": members.len(),
        "users": users.len(),
    })))
}

/// `GET /api/apps/{hash}/history?channel=C[&limit=N]`: every stored frame whatever
/// its audience (the backend is trusted), the newest `limit`, oldest first.
pub async fn history(req: HttpRequest, path: web::Path<String>, state: State) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let params = query(&req)?;
    let (channel, _) = channel_and_rule(&app, params.get("channel").map(String::as_str))?;
    let limit = match params.get("limit") {
        None => usize::MAX,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(ApiError::Bad("limit", "a positive integer"))?,
    };
    let entries = state
        .engine
        .history(&ChannelKey::new(&app.hash, &channel))
        .await?;
    let skip = entries.len().saturating_sub(limit);
    let frames: Vec<&RawValue> = entries[skip..]
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.json).ok())
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "channel": channel, "history": frames })))
}

/// `DELETE /api/apps/{hash}/history?channel=C`
pub async fn clear_history(req: HttpRequest, path: web::Path<String>, state: State) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let params = query(&req)?;
    let (channel, _) = channel_and_rule(&app, params.get("channel").map(String::as_str))?;
    state
        .engine
        .clear_history(&ChannelKey::new(&app.hash, &channel))
        .await?;
    tracing::info!(app = %app.hash, channel, "history cleared by the server API");
    Ok(HttpResponse::NoContent().finish())
}
