//! Lifecycle webhook events as they cross the engine (docs/protocol.md section 7.1).
//! The engine queues them (in Redis when there is one, so any node can send them
//! and a graceful stop loses none) and decides the cluster-wide ones itself: a
//! member's `member_added`/`member_removed` and the channel's
//! `channel_occupied`/`channel_vacated` are queued in the same step as the change
//! of membership, so they alternate per channel whichever nodes the members were on.
//! An event is stored without its `id` and `time_ms`; the sender adds both from
//! the queue's entry, so a retry sends the same id.

use super::result::EngineResult;
use crate::protocol::SharedJson;
use bytes::Bytes;
use serde_json::json;
use std::time::Duration;

/// A queued event: its id (unique in the app's queue), when it was queued, and
/// its JSON object without `id` and `time_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub id: String,
    pub time_ms: u64,
    pub json: Bytes,
}

impl QueuedEvent {
    /// The event as sent: its fields with `id` and `time_ms` first.
    pub fn to_json(&self) -> Vec<u8> {
        let head = json!({ "id": self.id, "time_ms": self.time_ms }).to_string();
        let rest = self.json.strip_prefix(b"{").unwrap_or(&self.json);
        let mut out = Vec::with_capacity(head.len() + rest.len() + 1);
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        if rest != b"}" {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        out
    }
}

pub fn connect(socket_id: &str, client: &SharedJson) -> Bytes {
    let v = json!({"name": "connect", "socket_id": socket_id, "client": client});
    Bytes::from(v.to_string())
}

pub fn disconnect(socket_id: &str, client: &SharedJson, code: u16) -> Bytes {
    let v = json!({"name": "disconnect", "socket_id": socket_id, "client": client, "code": code});
    Bytes::from(v.to_string())
}

pub fn member_added(channel: &str, client: &SharedJson) -> Bytes {
    Bytes::from(json!({"name": "member_added", "channel": channel, "client": client}).to_string())
}

pub fn member_removed(channel: &str, client: &SharedJson) -> Bytes {
    Bytes::from(json!({"name": "member_removed", "channel": channel, "client": client}).to_string())
}

pub fn channel_occupied(channel: &str) -> Bytes {
    Bytes::from(json!({"name": "channel_occupied", "channel": channel}).to_string())
}

pub fn channel_vacated(channel: &str) -> Bytes {
    Bytes::from(json!({"name": "channel_vacated", "channel": channel}).to_string())
}

/// The queue of lifecycle events per app, and who sends them.
pub trait Webhooks {
    /// The apps whose events are queued (those with a `webhook_url`), and how many
    /// bytes of unsent events each may have queued; past that, new events are
    /// dropped (counted and logged).
    fn set_webhook_apps(&self, apps: Vec<String>, queue_bytes: usize);

    /// Whether the app's events are queued: callers skip encoding events otherwise.
    fn webhooks_on(&self, app: &str) -> bool;

    /// Queue an event of a socket (`connect`, `disconnect`); resolves once it is
    /// queued (dropped events are counted and logged). Membership events are
    /// queued by the engine itself, with the change of membership.
    fn queue_webhook(&self, app: &str, event: Bytes) -> EngineResult<()>;

    /// Take, or keep, the right to send an app's events for `ttl`: one node at a
    /// time sends them, so each is sent by one node and in queue order.
    fn webhook_lease(&self, app: &str, ttl: Duration) -> EngineResult<bool>;

    /// Give the right up (a graceful stop: another node sends what is left).
    fn release_webhook_lease(&self, app: &str) -> EngineResult<()>;

    /// The oldest queued events of an app, up to `max`, oldest first.
    fn queued_webhooks(&self, app: &str, max: usize) -> EngineResult<Vec<QueuedEvent>>;

    /// Forget events that were delivered (or given up on).
    fn forget_webhooks(&self, app: &str, events: Vec<QueuedEvent>) -> EngineResult<()>;
}

/// Count and log events dropped because an app's queue was full.
pub fn dropped_for_room(app: &str, n: u64) {
    if n > 0 {
        metrics::counter!("switchboard_webhook_events_dropped_total", "reason" => "queue_full")
            .increment(n);
        tracing::warn!(
            app,
            dropped = n,
            "webhook queue full: lifecycle events dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_event_carries_its_id_and_time_first() {
        let e = QueuedEvent {
            id: "5-1".into(),
            time_ms: 5,
            json: channel_occupied("a\"b"),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"id": "5-1", "time_ms": 5, "name": "channel_occupied", "channel": "a\"b"})
        );
        let empty = QueuedEvent {
            id: "x".into(),
            time_ms: 1,
            json: Bytes::from_static(b"{}"),
        };
        let v: serde_json::Value = serde_json::from_slice(&empty.to_json()).unwrap();
        assert_eq!(v, json!({"id": "x", "time_ms": 1}));
    }
}
