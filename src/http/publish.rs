//! `POST /api/apps/{hash}/events`: backends publish events (PROTOCOL.md section 6).

use crate::actors::registry::PublishEvent;
use crate::protocol;
use crate::rules::{self, EventTarget};
use crate::state::ServerState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;

/// One event as a backend sends it (HTTP body or Redis envelope).
#[derive(Debug, Deserialize)]
pub struct EventIn {
    pub channel: String,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
    #[serde(default)]
    pub auth_table: Option<i64>,
    #[serde(default)]
    pub auth_id: Option<Value>,
}

/// Why an event cannot be published: (HTTP status, message).
pub type Rejection = (u16, String);

impl EventIn {
    /// Check the channel and targeting against the app's rules.
    pub fn validate(&self, rules: &rules::RuleSet) -> Result<(), Rejection> {
        let (name, pattern) = match self.channel.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (self.channel.as_str(), false),
        };
        let valid = if pattern {
            !name.is_empty() && rules::validate_pattern(&self.channel).is_ok()
        } else {
            rules::validate_channel_name(name).is_ok()
        };
        if !valid {
            return Err((400, format!("invalid channel {:?}", self.channel)));
        }
        let covered = if pattern {
            rules.covers_prefix(name)
        } else {
            rules.find(name).is_some()
        };
        if !covered {
            return Err((404, format!("no rule for channel {:?}", self.channel)));
        }
        match &self.auth_id {
            None | Some(Value::Null) | Some(Value::Number(_)) | Some(Value::String(_)) => Ok(()),
            Some(_) => Err((400, "auth_id must be a number or a string".into())),
        }
    }

    fn target(&self) -> Option<EventTarget> {
        let row_id = match self.auth_id.as_ref()? {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => return None,
        };
        Some(EventTarget {
            row_id,
            dbo_id: self.auth_table,
        })
    }

    /// The message for the app's registry.
    pub fn into_publish(self) -> PublishEvent {
        let target = self.target();
        let dbo_id = self.auth_table.unwrap_or(0);
        let row_id = self.auth_id.clone().unwrap_or(Value::from(0));
        let data = self
            .data
            .unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
        let event = self.event;
        PublishEvent {
            channel: self.channel,
            encode: Arc::new(move |name: &str| {
                protocol::event_json(name, event.as_deref(), &data, dbo_id, &row_id)
            }),
            target,
        }
    }
}

/// A body is one event or an array of them.
pub fn parse_events(body: &[u8]) -> Result<Vec<EventIn>, Rejection> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| (400, format!("invalid JSON: {e}")))?;
    let list = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    if list.is_empty() {
        return Err((400, "no events".into()));
    }
    list.into_iter()
        .map(|v| {
            serde_json::from_value::<EventIn>(v).map_err(|e| (400, format!("invalid event: {e}")))
        })
        .collect()
}

fn key_matches(given: &str, expected: &str) -> bool {
    // Constant time over the expected key's length.
    let (g, e) = (given.as_bytes(), expected.as_bytes());
    let mut diff = g.len() ^ e.len();
    for (i, b) in e.iter().enumerate() {
        diff |= (*b ^ g.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

fn reply(status: u16, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("valid status"))
        .json(serde_json::json!({ "error": message }))
}

pub async fn publish(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<Arc<ServerState>>,
) -> HttpResponse {
    let Some(app) = state.apps.get(path.as_str()).cloned() else {
        return reply(404, "unknown app");
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !key_matches(given.trim(), &app.config.api_key) {
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
        if let Err((status, message)) = event.validate(&app.rules) {
            return reply(status, &message);
        }
    }
    let count = events.len();
    for event in events {
        if app.registry.send(event.into_publish()).await.is_err() {
            return reply(503, "unavailable");
        }
    }
    HttpResponse::Accepted().json(serde_json::json!({ "accepted": count }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChannelRule;

    #[test]
    fn events_are_validated_against_rules() {
        let set = rules::RuleSet::new(&[ChannelRule::new("chat/*"), ChannelRule::new("news")]);
        let ev = |c: &str| EventIn {
            channel: c.into(),
            event: None,
            data: None,
            auth_table: None,
            auth_id: None,
        };
        for (channel, expected) in [
            ("chat/a", Ok(())),
            ("chat/*", Ok(())),
            ("news", Ok(())),
            ("other", Err(404)),
            ("other/*", Err(404)),
            ("", Err(400)),
            ("*", Err(400)),
            ("has space", Err(400)),
            ("a*b", Err(400)),
        ] {
            let got = ev(channel).validate(&set).map_err(|(s, _)| s);
            assert_eq!(got, expected, "{channel}");
        }
    }

    #[test]
    fn bodies_are_one_event_or_many() {
        assert_eq!(
            parse_events(br#"{"channel":"a","data":1}"#).unwrap().len(),
            1
        );
        assert_eq!(
            parse_events(br#"[{"channel":"a"},{"channel":"b","event":"x"}]"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_events(b"nope").unwrap_err().0, 400);
        assert_eq!(parse_events(b"[]").unwrap_err().0, 400);
        assert_eq!(parse_events(br#"{"data":1}"#).unwrap_err().0, 400);
    }

    #[test]
    fn api_keys_compare_exactly() {
        assert!(key_matches("secret-key", "secret-key"));
        assert!(!key_matches("secret-ke", "secret-key"));
        assert!(!key_matches("secret-keyy", "secret-key"));
        assert!(!key_matches("", "secret-key"));
    }
}
