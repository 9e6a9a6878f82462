//! The cluster engine over Redis: one `Shard` per Redis server (`shards` routes
//! between them). Per shard, one dedicated pub/sub connection per node (the
//! bridge) receives the topics of this node's live channels; a multiplexed
//! connection carries commands. Broadcasts go out in batches, one Lua script each,
//! that append history and publish, and every node, the origin too, delivers what
//! comes back, so all nodes see one order per channel.
//!
//! Keys (P = `cluster.prefix`, A = app hash, C = channel):
//! - `P A:ch:C`   pub/sub topic of a channel; payload = stream id line, header line (id
//!   `<node>:<sequence>`, audience, republished flag), frame JSON
//! - `P A:s:C`    stream of a channel: the same envelopes with their history cap, ~1,000;
//!   a node recovers what it missed from it, and it is the history (`history`)
//! - `P A:m:C`    members hash: socket id -> `node\n<presence><authenticated>\n<client JSON>`
//! - `P A:u:U`    per-user connection counts: node -> count
//! - `P nodes`    sorted set: node id -> last heartbeat (ms)
//! - `P node:N`   what node N registered (members, users), removed by whoever sweeps N
//! - `P publish`  backends' events (pub/sub); `P publish-stream` the durable path
//! - `P A:wh`     lifecycle webhook events of app A (stream), `:bytes` their size, `:lease` its sender
//! - `P control`  server API commands for every node; `P control:N` node N's answers
//!
//! Files: this one holds the shard and its subscriptions; `broker` the shard as the
//! channels' `Broker`; `writer` publishes and history reads, many channels' batches
//! in one script call; `history` the stream as history; `ttl` how often
//! a publish sets its stream's TTL; `shards` the router over shards; `members`
//! membership, presence lists and user slots; `bridge` the pub/sub connection and
//! recovery; `publish` the wire envelope and the broadcasts kept for a republish;
//! `presence` heartbeats and the sweep of dead nodes; `events` the durable event stream;
//! `control` the server API's commands to every node's sockets; `webhooks` the queue
//! of lifecycle events and its sender's lease.

mod bridge;
mod broker;
mod control;
mod events;
mod history;
mod members;
mod place;
mod presence;
mod publish;
mod shards;
mod subscriber;
mod topology;
mod ttl;
mod webhooks;
mod writer;

pub use shards::RedisEngine;

use bridge::{Route, SubCommand};
use events::{collect_entries, durable_events};
use presence::{heartbeats, parse_record};
use publish::{decode_envelope, encode_envelope, Pending, PendingQueue};

use crate::cluster::engine::{
    Audience, Broadcast, Broker, ChannelKey, Deliver, Engine, EngineError, EngineResult, EventSink,
    HistoryEntry, MemberRecord, Membership, UserSlots,
};
use crate::protocol::{self, SharedJson};
use actix::Recipient;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use place::{Place, Server};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use topology::Commands;

const ADMIT_USER_LUA: &str = r#"
local sum = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do sum = sum + tonumber(v) end
if sum >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"#;

struct Inner {
    /// Where this shard's Redis is (`topology`).
    server: Server,
    /// Every key and topic of the shard starts with it: `cluster.prefix`, and
    /// under Redis Cluster the partition's hash tag (`P{tag}`).
    prefix: String,
    /// Redis Cluster: `SPUBLISH` and `SSUBSCRIBE`, so topics spread over masters.
    sharded_pubsub: bool,
    /// The stream backends add durable events to (`events`).
    events_stream: String,
    node_id: String,
    presence_ttl: Duration,
    history_ttl_ms: u64,
    commands: Commands,
    /// Topic -> channel actors on this node (two briefly, while one stops and
    /// another starts) and what was delivered.
    routes: Mutex<HashMap<String, Route>>,
    sub_tx: mpsc::UnboundedSender<SubCommand>,
    /// The connection publishes go on: made by the bridge once a reconnect's
    /// republish is done, dropped when it loses Redis (`writer`).
    publish_conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Each channel's publishes and history reads waiting to go (`writer`).
    writes: Mutex<writer::Writes>,
    /// Bytes of the publishes in `writes`, and their bound (`cluster.resend_buffer_bytes`).
    queued_bytes: std::sync::atomic::AtomicUsize,
    queue_limit: usize,
    /// This node's own records, written again after Redis comes back.
    own_members: Mutex<HashMap<(String, String), (String, String)>>,
    own_users: Mutex<HashMap<(String, String), usize>>,
    connected: AtomicBool,
    pending: Mutex<PendingQueue>,
    /// The node's count of Redis reconnects (shared by its shards): members remember
    /// it at their join (`Broker::watermark`), and a republished broadcast is not
    /// delivered to members that joined after its shard's last reconnect.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// `epoch` as this shard's last reconnect left it.
    reconnected_at: std::sync::atomic::AtomicU64,
    /// The Redis server's `run_id` when last connected: a new one means Redis
    /// restarted (or failed over) and may have lost what it had not sent yet.
    run_id: Mutex<Option<String>>,
    sequence: std::sync::atomic::AtomicU64,
    events: Mutex<Option<EventSink>>,
    /// Where this node runs the server API's socket commands.
    command_sink: Mutex<Option<crate::cluster::engine::CommandSink>>,
    /// Commands this node asked, by id: where the other nodes' answers go.
    awaiting_answers: Mutex<HashMap<String, mpsc::UnboundedSender<usize>>>,
    publish_script: Script,
    history_script: Script,
    /// When this node last set each stream's TTL (`ttl`).
    ttl_refresh: Mutex<ttl::TtlRefresh>,
    admit_script: Script,
    member_joined_script: Script,
    member_left_script: Script,
    webhook_queue_script: Script,
    webhook_apps: parking_lot::RwLock<webhooks::WebhookApps>,
    own_topics: OwnTopics,
}

/// The pub/sub topics every node listens to besides its channels'.
struct OwnTopics {
    /// `P publish`: backends' events (under Redis Cluster a classic topic, which
    /// reaches every master: only the first partition listens).
    events: Option<String>,
    /// `P control`: server API commands for every node.
    control: String,
    /// `P control:N`: answers to this node's commands.
    answers: String,
}

/// One Redis and the channels, users and webhook events that hash to it: a complete
/// engine for its share of the keys. `RedisEngine` (in `shards`) routes to them.
#[derive(Clone)]
struct Shard {
    inner: Arc<Inner>,
}

fn refused<T: Send + 'static>(why: &str) -> EngineResult<T> {
    Box::pin(futures_util::future::ready(Err(EngineError::Unavailable(
        why.into(),
    ))))
}

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Escape Redis glob characters.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Inner {
    fn topic(&self, key: &ChannelKey) -> String {
        format!("{}{}:ch:{}", self.prefix, key.app, key.channel)
    }
    fn members_key(&self, key: &ChannelKey) -> String {
        format!("{}{}:m:{}", self.prefix, key.app, key.channel)
    }
    fn user_key(&self, app: &str, user: &str) -> String {
        format!("{}{}:u:{}", self.prefix, app, user)
    }
    fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    fn node_key(&self, node: &str) -> String {
        format!("{}node:{}", self.prefix, node)
    }
    fn recovery_stream(&self, key: &ChannelKey) -> String {
        format!("{}{}:s:{}", self.prefix, key.app, key.channel)
    }
    fn conn(&self) -> Commands {
        self.commands.clone()
    }

    /// Publish `body` on `topic` of this shard; answers how many received it.
    async fn publish_on(&self, topic: &str, body: Vec<u8>) -> redis::RedisResult<usize> {
        redis::cmd(self.publish_command())
            .arg(topic)
            .arg(body)
            .query_async(&mut self.conn())
            .await
    }

    /// The command that publishes to a topic of this shard.
    fn publish_command(&self) -> &'static str {
        if self.sharded_pubsub {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn next_mid(&self) -> String {
        let n = self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.node_id)
    }
}

/// A client for one Redis URL; `rediss://` trusts the system's roots, or only the
/// CAs of `cluster.redis_ca_file` when it is set.
fn client(url: &str, ca_file: Option<&std::path::Path>) -> Result<redis::Client, EngineError> {
    match tls_certificates(ca_file)? {
        Some(certs) => redis::Client::build_with_tls(url, certs).map_err(unavailable),
        None => redis::Client::open(url).map_err(unavailable),
    }
}

/// The CAs of `cluster.redis_ca_file`, when it is set (else the system's roots).
fn tls_certificates(
    ca_file: Option<&std::path::Path>,
) -> Result<Option<redis::TlsCertificates>, EngineError> {
    let Some(ca_file) = ca_file else {
        return Ok(None);
    };
    let root_cert = std::fs::read(ca_file)
        .map_err(|e| unavailable(format!("cluster.redis_ca_file {}: {e}", ca_file.display())))?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    }))
}

impl Shard {
    /// Start a shard at `place` as node `node_id`, with its background tasks (call
    /// inside an actix system). Never fails on an unreachable Redis: the node
    /// starts and is not ready until it connects.
    fn start(
        config: &crate::config::ClusterConfig,
        place: Place,
        node_id: &str,
        epoch: Arc<std::sync::atomic::AtomicU64>,
    ) -> Shard {
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let node_id = node_id.to_string();
        let own_topics = OwnTopics {
            events: place
                .events_topic
                .then(|| format!("{}publish", config.prefix)),
            control: format!("{}control", place.prefix),
            answers: format!("{}control:{node_id}", place.prefix),
        };
        let sharded_pubsub = matches!(place.server, Server::Cluster { .. });
        let publish_lua = writer::publish_lua(sharded_pubsub);
        let inner = Arc::new(Inner {
            server: place.server,
            prefix: place.prefix,
            sharded_pubsub,
            events_stream: place.events_stream,
            node_id,
            presence_ttl: Duration::from_secs(config.presence_ttl_s.max(1)),
            history_ttl_ms: config.history_ttl_s.max(1) * 1000,
            commands: place.commands,
            routes: Mutex::new(HashMap::new()),
            sub_tx,
            publish_conn: Mutex::new(None),
            writes: Mutex::new(writer::Writes::default()),
            queued_bytes: std::sync::atomic::AtomicUsize::new(0),
            queue_limit: config.resend_buffer_bytes,
            own_members: Mutex::new(HashMap::new()),
            own_users: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            pending: Mutex::new(PendingQueue::new(config.resend_buffer_bytes)),
            epoch,
            reconnected_at: std::sync::atomic::AtomicU64::new(0),
            run_id: Mutex::new(None),
            sequence: std::sync::atomic::AtomicU64::new(0),
            events: Mutex::new(None),
            command_sink: Mutex::new(None),
            awaiting_answers: Mutex::new(HashMap::new()),
            publish_script: Script::new(&publish_lua),
            history_script: Script::new(history::READ_LUA),
            ttl_refresh: Mutex::new(ttl::TtlRefresh::default()),
            admit_script: Script::new(ADMIT_USER_LUA),
            member_joined_script: Script::new(&webhooks::member_joined_lua()),
            member_left_script: Script::new(&webhooks::member_left_lua()),
            webhook_queue_script: Script::new(&webhooks::queue_lua()),
            webhook_apps: parking_lot::RwLock::new(webhooks::WebhookApps::default()),
            own_topics,
        });
        actix_rt::spawn(bridge::run(inner.clone(), sub_rx));
        actix_rt::spawn(heartbeats(inner.clone()));
        actix_rt::spawn(durable_events(inner.clone()));
        Shard { inner }
    }
}

/// A Redis URL fit for a log line: without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

impl Engine for Shard {
    fn ready(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Where events published by backends through Redis go.
    fn set_event_sink(&self, sink: EventSink) {
        *self.inner.events.lock() = Some(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_hide_the_password() {
        assert_eq!(
            redacted("rediss://u:secret@h:6380/0"),
            "rediss://…@h:6380/0"
        );
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
