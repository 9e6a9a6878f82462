//! Events published by backends (docs/protocol.md section 6): the body of the HTTP
//! publish API, and envelopes that arrive through Redis.

use crate::actors::registry::PublishEvent;
use crate::protocol;
use crate::rules::{self, EventTarget};
use crate::state::ServerState;
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
            local_only: false,
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

struct Envelope {
    app: String,
    event: EventIn,
}

/// An envelope from Redis: an event plus `"app": <hash>`. `durable` (from the
/// stream, read by one node) publishes it cluster-wide; otherwise every node got it
/// and delivers it to its own members. Answers false only when it should be retried.
pub async fn from_redis(state: &Arc<ServerState>, payload: &[u8], durable: bool) -> bool {
    let parsed = serde_json::from_slice::<Value>(payload)
        .map_err(|e| e.to_string())
        .and_then(|mut v| {
            let app = match v.as_object_mut().and_then(|o| o.remove("app")) {
                Some(Value::String(app)) => app,
                _ => return Err("missing \"app\"".to_string()),
            };
            let event = serde_json::from_value::<EventIn>(v).map_err(|e| e.to_string())?;
            Ok(Envelope { app, event })
        });
    let envelope = match parsed {
        Ok(e) => e,
        Err(why) => {
            tracing::warn!(reason = %why, "Redis event envelope dropped: invalid");
            crate::metrics::event_dropped("invalid");
            return true;
        }
    };
    let Some(app) = state.app(&envelope.app) else {
        tracing::warn!(app = %envelope.app, "Redis event envelope dropped: unknown app");
        crate::metrics::event_dropped("unknown_app");
        return true;
    };
    if let Err((_, why)) = envelope.event.validate(&app.settings().rules) {
        tracing::warn!(app = %envelope.app, reason = %why, "Redis event envelope dropped");
        crate::metrics::event_dropped("no_rule");
        return true;
    }
    let mut publish = envelope.event.into_publish();
    publish.local_only = !durable;
    match app.registry.send(publish).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(app = %envelope.app, error = %e, "Redis event not published yet");
            false
        }
        Err(_) => false,
    }
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
}
