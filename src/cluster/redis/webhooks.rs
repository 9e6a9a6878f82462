//! Lifecycle webhook events in Redis (docs/protocol.md section 7.1): one stream per
//! app (`P A:wh`) with a byte count of what it holds (`P A:wh:bytes`), and a lease
//! (`P A:wh:lease`) that lets one node at a time send them. Membership events are
//! queued by the membership scripts, in the same step as the change, so
//! `channel_occupied`/`channel_vacated` alternate per channel whichever nodes the
//! members are on. What is queued survives the node (a graceful stop releases the
//! lease and another node sends it) and, with persistence, a Redis restart.

use super::*;
use crate::cluster::lifecycle::{self, QueuedEvent, Webhooks};
use std::collections::HashSet;

/// The Lua function that queues one event unless the app's queue is full.
/// KEYS[3]: stream, KEYS[4]: byte count; ARGV[n]: the budget (bytes).
const QUEUE_FN: &str = r#"
local dropped = 0
local function queue(event, budget)
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used + #event > tonumber(budget) then
    dropped = dropped + 1
    return
  end
  redis.call('XADD', KEYS[3], '*', 'e', event)
  redis.call('INCRBY', KEYS[4], #event)
end
"#;

/// KEYS: members hash, node set, webhook stream, byte count. ARGV: socket id,
/// record, node entry, webhooks on ('1'), member_added, channel_occupied, budget.
/// Answers the number of events dropped for lack of room.
pub(super) fn member_joined_lua() -> String {
    format!(
        "{QUEUE_FN}{}",
        r#"
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] == '1' and new == 1 then
  if redis.call('HLEN', KEYS[1]) == 1 then queue(ARGV[6], ARGV[7]) end
  queue(ARGV[5], ARGV[7])
end
return dropped
"#
    )
}

/// KEYS: members hash, node set, webhook stream, byte count. ARGV: socket id, node
/// entry, webhooks on ('1'), the channel as a JSON string, budget. Answers
/// `{record or false, dropped}`: the member's record when it was there.
pub(super) fn member_left_lua() -> String {
    format!(
        "{QUEUE_FN}{}",
        r#"
local record = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if not record then return {false, 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  local first = string.find(record, '\n', 1, true)
  local second = first and string.find(record, '\n', first + 1, true)
  if second then
    local client = string.sub(record, second + 1)
    queue('{"name":"member_removed","channel":' .. ARGV[4] .. ',"client":' .. client .. '}', ARGV[5])
  end
  if redis.call('HLEN', KEYS[1]) == 0 then
    queue('{"name":"channel_vacated","channel":' .. ARGV[4] .. '}', ARGV[5])
  end
end
return {record, dropped}
"#
    )
}

/// KEYS: (unused), (unused), stream, byte count. ARGV: event, budget.
pub(super) fn queue_lua() -> String {
    format!("{QUEUE_FN}queue(ARGV[1], ARGV[2])\nreturn dropped\n")
}

/// KEYS: lease. ARGV: node id, ttl (ms). Answers 1 when this node holds it now.
const LEASE_LUA: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS: lease. ARGV: node id.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// KEYS: stream, byte count. ARGV: bytes freed, then the ids.
const FORGET_LUA: &str = r#"
local n = 0
for i = 2, #ARGV do n = n + redis.call('XDEL', KEYS[1], ARGV[i]) end
if n > 0 then
  local left = redis.call('DECRBY', KEYS[2], ARGV[1])
  if left <= 0 or redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[2]) end
end
return n
"#;

/// Which apps queue events, and each app's budget.
#[derive(Default)]
pub(super) struct WebhookApps {
    on: HashSet<String>,
    pub(super) budget: usize,
}

impl Inner {
    pub(super) fn webhook_stream(&self, app: &str) -> String {
        format!("{}{}:wh", self.prefix, app)
    }
    pub(super) fn webhook_bytes(&self, app: &str) -> String {
        format!("{}{}:wh:bytes", self.prefix, app)
    }
    fn webhook_lease_key(&self, app: &str) -> String {
        format!("{}{}:wh:lease", self.prefix, app)
    }

    /// ('1' or '0', budget) for the membership scripts.
    pub(super) fn webhooks_on(&self, app: &str) -> (&'static str, usize) {
        let apps = self.webhook_apps.read();
        (if apps.on.contains(app) { "1" } else { "0" }, apps.budget)
    }
}

impl Inner {
    /// A swept node's webhook leases: released at once, so a survivor sends its
    /// apps' events without waiting for the lease to run out.
    pub(super) async fn release_webhook_leases_of(&self, node: &str) -> redis::RedisResult<()> {
        let apps: Vec<String> = self.webhook_apps.read().on.iter().cloned().collect();
        let mut conn = self.conn();
        for app in apps {
            let _: i64 = Script::new(RELEASE_LUA)
                .key(self.webhook_lease_key(&app))
                .arg(node)
                .invoke_async(&mut conn)
                .await?;
        }
        Ok(())
    }
}

fn parse_stream_time(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

impl Webhooks for Shard {
    fn set_webhook_apps(&self, apps: Vec<String>, queue_bytes: usize) {
        let mut w = self.inner.webhook_apps.write();
        w.on = apps.into_iter().collect();
        w.budget = queue_bytes;
    }

    fn webhooks_on(&self, app: &str) -> bool {
        self.inner.webhooks_on(app).0 == "1"
    }

    fn queue_webhook(&self, app: &str, event: Bytes) -> EngineResult<()> {
        let (on, budget) = self.inner.webhooks_on(app);
        if on != "1" {
            return crate::cluster::engine::done(());
        }
        let inner = self.inner.clone();
        let app = app.to_string();
        Box::pin(async move {
            let mut conn = inner.conn();
            let dropped: redis::RedisResult<u64> = inner
                .webhook_queue_script
                .key(inner.webhook_stream(&app))
                .key(inner.webhook_stream(&app))
                .key(inner.webhook_stream(&app))
                .key(inner.webhook_bytes(&app))
                .arg(event.as_ref())
                .arg(budget)
                .invoke_async(&mut conn)
                .await;
            match dropped {
                Ok(n) => lifecycle::dropped_for_room(&app, n),
                Err(e) => {
                    metrics::counter!("switchboard_webhook_events_dropped_total", "reason" => "redis_unavailable")
                        .increment(1);
                    tracing::warn!(app, error = %e, "lifecycle event not queued: Redis unavailable");
                }
            }
            Ok(())
        })
    }

    fn webhook_lease(&self, app: &str, ttl: Duration) -> EngineResult<bool> {
        let inner = self.inner.clone();
        let key = inner.webhook_lease_key(app);
        Box::pin(async move {
            let mut conn = inner.conn();
            let held: i64 = Script::new(LEASE_LUA)
                .key(key)
                .arg(&inner.node_id)
                .arg(ttl.as_millis() as u64)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(held == 1)
        })
    }

    fn release_webhook_lease(&self, app: &str) -> EngineResult<()> {
        let inner = self.inner.clone();
        let key = inner.webhook_lease_key(app);
        Box::pin(async move {
            let mut conn = inner.conn();
            let _: i64 = Script::new(RELEASE_LUA)
                .key(key)
                .arg(&inner.node_id)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn queued_webhooks(&self, app: &str, max: usize) -> EngineResult<Vec<QueuedEvent>> {
        let inner = self.inner.clone();
        let stream = inner.webhook_stream(app);
        Box::pin(async move {
            let mut conn = inner.conn();
            let entries: redis::Value = redis::cmd("XRANGE")
                .arg(&stream)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(max)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let mut found = Vec::new();
            collect_entries(&entries, &mut found);
            Ok(found
                .into_iter()
                .map(|(id, json)| QueuedEvent {
                    time_ms: parse_stream_time(&id),
                    id,
                    json: Bytes::from(json),
                })
                .collect())
        })
    }

    fn forget_webhooks(&self, app: &str, events: Vec<QueuedEvent>) -> EngineResult<()> {
        let inner = self.inner.clone();
        let (stream, bytes) = (inner.webhook_stream(app), inner.webhook_bytes(app));
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            let freed: usize = events.iter().map(|e| e.json.len()).sum();
            let forget = Script::new(FORGET_LUA);
            let mut script = forget.prepare_invoke();
            script.key(stream).key(bytes).arg(freed);
            for e in &events {
                script.arg(&e.id);
            }
            let mut conn = inner.conn();
            let _: i64 = script.invoke_async(&mut conn).await.map_err(unavailable)?;
            Ok(())
        })
    }
}
