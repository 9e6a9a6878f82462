//! The commands: close sockets (`disconnect`) or take them out of a channel
//! (`unsubscribe`), wherever in the cluster they are. The engine brings the
//! command to every node and sums what each reached.

use super::{authorize, channel_and_rule, ApiError, ApiResult, MAX_BODY_BYTES};
use crate::cluster::{SocketCommand, SocketTarget};
use crate::rules::EventTarget;
use crate::state::ServerState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use std::sync::Arc;

type State = web::Data<Arc<ServerState>>;

/// The body as a JSON object, read only after the caller was authorized.
async fn body(payload: web::Payload) -> Result<Map<String, Value>, ApiError> {
    let bytes = match payload.to_bytes_limited(MAX_BODY_BYTES).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return Err(ApiError::MalformedBody),
        Err(_) => return Err(ApiError::TooLarge),
    };
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::MalformedBody),
    }
}

/// Which sockets: `socket_id`, or `auth_id` (a number or a string) with an
/// optional `auth_table`; exactly one of the two.
fn target(body: &Map<String, Value>) -> Result<SocketTarget, ApiError> {
    let present = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    match (present("socket_id"), present("auth_id")) {
        (true, true) => Err(ApiError::Bad(
            "socket_id",
            "give socket_id or auth_id, not both",
        )),
        (false, false) => Err(ApiError::Missing("auth_id or socket_id")),
        (true, false) => match &body["socket_id"] {
            Value::String(s) if !s.is_empty() => Ok(SocketTarget::Socket(s.clone())),
            _ => Err(ApiError::Bad("socket_id", "a non-empty string")),
        },
        (false, true) => {
            let row_id = match &body["auth_id"] {
                Value::Number(n) => n.to_string(),
                Value::String(s) if !s.is_empty() => s.clone(),
                _ => return Err(ApiError::Bad("auth_id", "a number or a non-empty string")),
            };
            let dbo_id = match body.get("auth_table") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_i64()
                        .ok_or(ApiError::Bad("auth_table", "an integer"))?,
                ),
            };
            Ok(SocketTarget::User(EventTarget { row_id, dbo_id }))
        }
    }
}

/// `POST /api/apps/{hash}/disconnect` `{"auth_id":I,"auth_table"?:T}` or
/// `{"socket_id":S}`, optional `"reconnect": true`.
pub async fn disconnect(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: State,
) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let body = body(payload).await?;
    let target = target(&body)?;
    let reconnect = match body.get("reconnect") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::Bad("reconnect", "a boolean")),
    };
    let command = SocketCommand::Disconnect {
        app: app.hash.to_string(),
        target,
        reconnect,
    };
    let disconnected = state.engine.command(command).await?;
    tracing::info!(app = %app.hash, disconnected, reconnect, "sockets disconnected by the server API");
    Ok(HttpResponse::Ok().json(json!({ "disconnected": disconnected })))
}

/// `POST /api/apps/{hash}/unsubscribe` `{"channel":C, "auth_id":I or "socket_id":S}`.
pub async fn unsubscribe(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: State,
) -> ApiResult {
    let app = authorize(&req, &state, &path)?;
    let body = body(payload).await?;
    let channel = match body.get("channel") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::Bad("channel", "a concrete channel name")),
    };
    let (channel, _) = channel_and_rule(&app, channel)?;
    let target = target(&body)?;
    let command = SocketCommand::Unsubscribe {
        app: app.hash.to_string(),
        channel: channel.clone(),
        target,
    };
    let unsubscribed = state.engine.command(command).await?;
    tracing::info!(app = %app.hash, channel, unsubscribed, "sockets unsubscribed by the server API");
    Ok(HttpResponse::Ok().json(json!({ "unsubscribed": unsubscribed })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(body: Value) -> Result<SocketTarget, String> {
        target(body.as_object().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_target_is_a_socket_or_a_user_never_both() {
        assert_eq!(
            target_of(json!({"socket_id": "abc"})),
            Ok(SocketTarget::Socket("abc".into()))
        );
        assert_eq!(
            target_of(json!({"auth_id": 42, "auth_table": 7})),
            Ok(SocketTarget::User(EventTarget {
                row_id: "42".into(),
                dbo_id: Some(7)
            }))
        );
        assert_eq!(
            target_of(json!({"auth_id": "u-1"})),
            Ok(SocketTarget::User(EventTarget {
                row_id: "u-1".into(),
                dbo_id: None
            }))
        );
        let refused = [
            (json!({}), "auth_id or socket_id"),
            (json!({"socket_id": "a", "auth_id": 1}), "socket_id"),
            (json!({"socket_id": 5}), "socket_id"),
            (json!({"auth_id": [1]}), "auth_id"),
            (json!({"auth_id": 1, "auth_table": "x"}), "auth_table"),
        ];
        for (body, named) in refused {
            let why = target_of(body.clone()).expect_err("refused");
            assert!(why.contains(named), "{body}: {why}");
        }
    }
}
