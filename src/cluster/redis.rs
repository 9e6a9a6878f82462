//! The cluster engine over Redis. One dedicated pub/sub connection per node (the
//! bridge) receives the topics of this node's live channels; a multiplexed
//! connection carries commands. Broadcasts go out as one Lua script that appends
//! history and publishes, and every node, the origin too, delivers what comes back,
//! so all nodes see one order per channel.
//!
//! Keys (P = `cluster.prefix`, A = app hash, C = channel):
//! - `P A:ch:C`   pub/sub topic of a channel; payload = audience header line + frame JSON
//! - `P A:h:C`    history list (entries: auth-only flag byte + frame JSON), capped, with TTL
//! - `P A:m:C`    members hash: socket id -> `node\n<presence><authenticated>\n<client JSON>`
//! - `P A:u:U`    per-user connection counts: node -> count
//! - `P nodes`    sorted set: node id -> last heartbeat (ms)
//! - `P node:N`   what node N registered (members, users), removed by whoever sweeps N
//! - `P publish`  backends' events (pub/sub); `P publish-stream` the durable path

use super::{
    Audience, Broadcast, ChannelKey, Deliver, Engine, EngineError, EngineResult, HistoryEntry,
    MemberRecord, Published,
};
use crate::protocol::{self, SharedJson};
use actix::Recipient;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// Handles an event envelope from Redis (`durable`: from the stream, publish it
/// cluster-wide; else deliver to this node's members). Answers whether it is done.
pub type EventSink = Arc<dyn Fn(Bytes, bool) -> BoxFuture<'static, bool> + Send + Sync>;

/// KEYS: topic, history list, recovery stream. ARGV: envelope, history cap,
/// history TTL (ms), history entry. Every broadcast is also kept briefly in the
/// channel's recovery stream, and published with its stream id, so a node that
/// re-subscribes after losing Redis can fetch what it missed.
const PUBLISH_LUA: &str = r#"
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[3], 120000)
local cap = tonumber(ARGV[2])
if cap > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[4])
  redis.call('LTRIM', KEYS[2], -cap, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return redis.call('PUBLISH', KEYS[1], id .. '\n' .. ARGV[1])
"#;

const ADMIT_USER_LUA: &str = r#"
local sum = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do sum = sum + tonumber(v) end
if sum >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"#;

/// A stream entry id `ms-seq`, ordered.
type StreamId = (u64, u64);

fn parse_stream_id(s: &str) -> Option<StreamId> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

struct Route {
    recipients: Vec<Recipient<Deliver>>,
    /// The last broadcast delivered here; later ones with a smaller id are repeats.
    last_id: Option<StreamId>,
    /// When this node subscribed (ms): recovery never reaches further back.
    since_ms: u64,
    /// While catching up after a reconnect, live broadcasts wait here.
    recovering: Option<Vec<(StreamId, Vec<u8>)>>,
    /// Ids of recent broadcasts: a broadcast republished after Redis was lost may
    /// reach a node that had already delivered it.
    recent: std::collections::VecDeque<String>,
}

const RECENT_IDS: usize = 2048;

impl Route {
    /// Deliver unless already delivered.
    fn deliver(&mut self, id: StreamId, envelope: &[u8]) {
        if self.last_id.is_some_and(|last| id <= last) {
            return;
        }
        self.last_id = Some(id);
        let Some((mid, broadcast)) = decode_envelope(envelope) else {
            tracing::warn!("undecodable broadcast dropped");
            return;
        };
        if self.recent.iter().any(|m| *m == mid) {
            return;
        }
        if self.recent.len() == RECENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(mid);
        for r in &self.recipients {
            r.do_send(Deliver(broadcast.clone()));
        }
    }
}

enum SubCommand {
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    Unsubscribe(String),
}

struct Inner {
    client: redis::Client,
    prefix: String,
    node_id: String,
    presence_ttl: Duration,
    history_ttl_ms: u64,
    commands: ConnectionManager,
    /// Topic -> channel actors on this node (two briefly, while one stops and
    /// another starts) and what was delivered.
    routes: Mutex<HashMap<String, Route>>,
    sub_tx: mpsc::UnboundedSender<SubCommand>,
    /// This node's own records, written again after Redis comes back.
    own_members: Mutex<HashMap<(String, String), (String, String)>>,
    own_users: Mutex<HashMap<(String, String), usize>>,
    connected: AtomicBool,
    pending: Mutex<std::collections::VecDeque<Pending>>,
    sequence: std::sync::atomic::AtomicU64,
    events: Mutex<Option<EventSink>>,
    publish_script: Script,
    admit_script: Script,
}

#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
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
    fn history_key(&self, key: &ChannelKey) -> String {
        format!("{}{}:h:{}", self.prefix, key.app, key.channel)
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
    fn events_topic(&self) -> String {
        format!("{}publish", self.prefix)
    }
    fn recovery_stream(&self, key: &ChannelKey) -> String {
        format!("{}{}:s:{}", self.prefix, key.app, key.channel)
    }
    fn events_stream(&self) -> String {
        format!("{}publish-stream", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.commands.clone()
    }

    fn next_mid(&self) -> String {
        let n = self
            .sequence
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.node_id)
    }

    /// Our own broadcast came back: it is no longer at risk.
    fn confirmed(&self, envelope: &[u8]) {
        let Some(split) = envelope.iter().position(|&c| c == b'\n') else {
            return;
        };
        let Ok(header) = serde_json::from_slice::<Header>(&envelope[..split]) else {
            return;
        };
        if !header.m.starts_with(self.node_id.as_str()) {
            return;
        }
        let mut pending = self.pending.lock();
        if let Some(i) = pending.iter().position(|p| p.mid == header.m) {
            pending.remove(i);
        }
    }

    /// After a reconnect: publish again what Redis accepted but never sent back.
    async fn republish_pending(&self) -> redis::RedisResult<usize> {
        let mut conn = self.conn();
        let waiting: Vec<_> = {
            let pending = self.pending.lock();
            pending
                .iter()
                .map(|p| {
                    (
                        p.key.clone(),
                        p.envelope.clone(),
                        p.history_cap,
                        p.entry.clone(),
                    )
                })
                .collect()
        };
        for (key, envelope, cap, entry) in &waiting {
            let _: i64 = self
                .publish_script
                .key(self.topic(key))
                .key(self.history_key(key))
                .key(self.recovery_stream(key))
                .arg(envelope)
                .arg(*cap)
                .arg(self.history_ttl_ms)
                .arg(entry)
                .invoke_async(&mut conn)
                .await?;
        }
        if !waiting.is_empty() {
            tracing::info!(
                republished = waiting.len(),
                "republished broadcasts Redis lost"
            );
        }
        Ok(waiting.len())
    }

    /// Broadcasts pending for long while connected were lost for good; forget them.
    fn prune_pending(&self) {
        let mut pending = self.pending.lock();
        let before = pending.len();
        pending.retain(|p| p.at.elapsed() < Duration::from_secs(60));
        if pending.len() < before {
            tracing::warn!(
                lost = before - pending.len(),
                "broadcasts never came back from Redis"
            );
        }
    }

    /// Route one pub/sub message to the channel actors of its topic.
    fn route(&self, topic: &str, payload: &[u8]) {
        if topic == self.events_topic() {
            let sink = self.events.lock().clone();
            if let Some(sink) = sink {
                actix_rt::spawn(sink(Bytes::copy_from_slice(payload), false));
            }
            return;
        }
        let Some(split) = payload.iter().position(|&c| c == b'\n') else {
            return;
        };
        let Some(id) = std::str::from_utf8(&payload[..split])
            .ok()
            .and_then(parse_stream_id)
        else {
            tracing::warn!(topic, "broadcast without a stream id dropped");
            return;
        };
        let envelope = &payload[split + 1..];
        self.confirmed(envelope);
        let mut routes = self.routes.lock();
        let Some(route) = routes.get_mut(topic) else {
            return;
        };
        match &mut route.recovering {
            Some(waiting) => waiting.push((id, envelope.to_vec())),
            None => route.deliver(id, envelope),
        }
    }

    /// After re-subscribing: fetch from each channel's recovery stream what was
    /// published while this node was not listening, deliver it in order, then the
    /// live broadcasts that arrived meanwhile.
    async fn recover(&self, since_disconnect_ms: u64) {
        let topics: Vec<(String, String)> = self
            .routes
            .lock()
            .iter()
            .map(|(topic, r)| {
                let from = match r.last_id {
                    Some((ms, seq)) => format!("({ms}-{seq}"),
                    None => format!("{}-0", r.since_ms.max(since_disconnect_ms)),
                };
                (topic.clone(), from)
            })
            .collect();
        let mut conn = self.conn();
        for (topic, from) in topics {
            let Some(stream) = self.stream_of_topic(&topic) else {
                continue;
            };
            let entries: redis::RedisResult<redis::Value> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(&from)
                .arg("+")
                .query_async(&mut conn)
                .await;
            let mut found = Vec::new();
            if let Ok(list) = &entries {
                collect_entries(list, &mut found);
            }
            let mut routes = self.routes.lock();
            let Some(route) = routes.get_mut(&topic) else {
                continue;
            };
            let waiting = route.recovering.take().unwrap_or_default();
            if !found.is_empty() {
                tracing::info!(
                    topic,
                    recovered = found.len(),
                    "recovered missed broadcasts"
                );
            }
            for (id, envelope) in found {
                if let Some(id) = parse_stream_id(&id) {
                    route.deliver(id, &envelope);
                }
            }
            for (id, envelope) in waiting {
                route.deliver(id, &envelope);
            }
        }
    }

    fn stream_of_topic(&self, topic: &str) -> Option<String> {
        let rest = topic.strip_prefix(&self.prefix)?;
        let (app, channel) = rest.split_once(":ch:")?;
        Some(self.recovery_stream(&ChannelKey::new(app, channel)))
    }

    /// Write this node's records again (after Redis came back or swept us).
    async fn reannounce(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        let node_key = self.node_key(&self.node_id);
        let members: Vec<_> = self
            .own_members
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let users: Vec<_> = self
            .own_users
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut pipe = redis::pipe();
        pipe.zadd(self.nodes_key(), &self.node_id, now_ms())
            .ignore();
        for ((hash, socket), (record, entry)) in &members {
            pipe.hset(hash, socket, record).ignore();
            pipe.sadd(&node_key, entry).ignore();
        }
        for ((app, user), n) in &users {
            pipe.hset(self.user_key(app, user), &self.node_id, *n)
                .ignore();
            pipe.sadd(&node_key, format!("u\n{app}\n{user}")).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// Heartbeat; remove the records of nodes whose heartbeat stopped, sending the
    /// `leave`s. Claiming a dead node is one ZREM, so only one node sweeps it.
    async fn heartbeat_and_sweep(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn();
        let added: i64 = conn.zadd(self.nodes_key(), &self.node_id, now_ms()).await?;
        if added == 1 && self.connected.load(Ordering::Acquire) {
            // We had been swept (a long pause): put our records back.
            self.reannounce().await?;
        }
        let deadline = now_ms().saturating_sub(self.presence_ttl.as_millis() as u64);
        let dead: Vec<String> = conn
            .zrangebyscore(self.nodes_key(), "-inf", deadline)
            .await?;
        for node in dead {
            if node == self.node_id {
                continue;
            }
            let claimed: i64 = conn.zrem(self.nodes_key(), &node).await?;
            if claimed != 1 {
                continue;
            }
            let node_key = self.node_key(&node);
            let entries: Vec<String> = conn.smembers(&node_key).await?;
            let mut leaves = 0;
            for entry in &entries {
                let parts: Vec<&str> = entry.splitn(3, '\n').collect();
                if parts.len() != 3 {
                    continue;
                }
                if parts[0] == "u" {
                    let _: () = conn.hdel(self.user_key(parts[1], parts[2]), &node).await?;
                    continue;
                }
                let (app, channel, socket) = (parts[0], parts[1], parts[2]);
                let key = ChannelKey::new(app, channel);
                let hash = self.members_key(&key);
                let record: Option<String> = conn.hget(&hash, socket).await?;
                let removed: i64 = conn.hdel(&hash, socket).await?;
                let Some(record) = record.filter(|_| removed == 1) else {
                    continue;
                };
                let Some(parsed) = parse_record(&record) else {
                    continue;
                };
                if parsed.presence {
                    let leave = Broadcast {
                        json: protocol::presence_update_json(channel, false, &parsed.client),
                        audience: Audience::Presence {
                            except: Arc::from(socket),
                        },
                        history_cap: 0,
                        origin: None,
                    };
                    let _: i64 = self
                        .publish_script
                        .key(self.topic(&key))
                        .key(self.history_key(&key))
                        .key(self.recovery_stream(&key))
                        .arg(encode_envelope(&self.next_mid(), &leave))
                        .arg(0)
                        .arg(self.history_ttl_ms)
                        .arg("")
                        .invoke_async(&mut conn)
                        .await?;
                    leaves += 1;
                }
            }
            let _: () = conn.del(&node_key).await?;
            tracing::info!(node, entries = entries.len(), leaves, "swept a dead node");
        }
        Ok(())
    }
}

struct ParsedRecord {
    presence: bool,
    authenticated: bool,
    client: SharedJson,
}

/// `node\n<presence><authenticated>\n<client JSON>`
fn parse_record(record: &str) -> Option<ParsedRecord> {
    let mut parts = record.splitn(3, '\n');
    let _node = parts.next()?;
    let flags = parts.next()?.as_bytes();
    let client = parts.next()?;
    Some(ParsedRecord {
        presence: flags.first() == Some(&b'1'),
        authenticated: flags.get(1) == Some(&b'1'),
        client: Arc::from(RawValue::from_string(client.to_string()).ok()?),
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    /// The broadcast's id: `<node>:<sequence>`, unique in the cluster.
    m: String,
    a: Audience,
}

/// Header (one JSON line: id and audience) + frame JSON; frames never contain a raw newline.
fn encode_envelope(mid: &str, b: &Broadcast) -> Vec<u8> {
    let header = Header {
        m: mid.to_string(),
        a: b.audience.clone(),
    };
    let mut out = serde_json::to_vec(&header).expect("headers serialise");
    out.push(b'\n');
    out.extend_from_slice(&b.json);
    out
}

fn decode_envelope(payload: &[u8]) -> Option<(String, Broadcast)> {
    let split = payload.iter().position(|&c| c == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..split]).ok()?;
    Some((
        header.m,
        Broadcast {
            json: Bytes::copy_from_slice(&payload[split + 1..]),
            audience: header.a,
            history_cap: 0,
            origin: None,
        },
    ))
}

/// A broadcast Redis accepted but this node has not yet seen come back: if Redis
/// dies in between, it is published again after the reconnect (receivers skip
/// repeats by id), so nothing accepted is lost.
struct Pending {
    mid: String,
    key: ChannelKey,
    envelope: Vec<u8>,
    history_cap: usize,
    entry: Vec<u8>,
    at: std::time::Instant,
}

const MAX_PENDING: usize = 100_000;

impl RedisEngine {
    /// Create the engine and start its background tasks (call inside an actix system).
    /// Never fails on an unreachable Redis: the node starts and is not ready until it connects.
    pub fn start(config: &crate::config::ClusterConfig) -> Result<RedisEngine, EngineError> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(unavailable)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(unavailable)?;
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let node_id = crate::auth::new_socket_id();
        let inner = Arc::new(Inner {
            client,
            prefix: config.prefix.clone(),
            node_id,
            presence_ttl: Duration::from_secs(config.presence_ttl_s.max(1)),
            history_ttl_ms: config.history_ttl_s.max(1) * 1000,
            commands,
            routes: Mutex::new(HashMap::new()),
            sub_tx,
            own_members: Mutex::new(HashMap::new()),
            own_users: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            pending: Mutex::new(std::collections::VecDeque::new()),
            sequence: std::sync::atomic::AtomicU64::new(0),
            events: Mutex::new(None),
            publish_script: Script::new(PUBLISH_LUA),
            admit_script: Script::new(ADMIT_USER_LUA),
        });
        tracing::info!(node = %inner.node_id, "cluster engine: Redis");
        actix_rt::spawn(bridge(inner.clone(), sub_rx));
        actix_rt::spawn(heartbeats(inner.clone()));
        actix_rt::spawn(durable_events(inner.clone()));
        Ok(RedisEngine { inner })
    }

    /// Where events published by backends through Redis go.
    pub fn set_event_sink(&self, sink: EventSink) {
        *self.inner.events.lock() = Some(sink);
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }
}

/// The pub/sub connection: (re)connect, (re)subscribe every live topic, route messages.
async fn bridge(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<SubCommand>) {
    let mut logged_down = false;
    let mut disconnected_at = now_ms();
    loop {
        let pubsub = match inner.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                if !logged_down {
                    tracing::warn!(error = %e, "Redis unreachable; not ready until it is");
                    logged_down = true;
                }
                drain_while_down(&mut commands);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut topics: Vec<String> = {
            let mut routes = inner.routes.lock();
            for route in routes.values_mut() {
                route.recovering = Some(Vec::new());
            }
            routes.keys().cloned().collect()
        };
        topics.push(inner.events_topic());
        if let Err(e) = sink.subscribe(&topics).await {
            tracing::warn!(error = %e, "resubscribe failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if let Err(e) = inner.reannounce().await {
            tracing::warn!(error = %e, "re-announcing presence failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if let Err(e) = inner.republish_pending().await {
            tracing::warn!(error = %e, "republishing failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        inner.recover(disconnected_at).await;
        inner.connected.store(true, Ordering::Release);
        if logged_down {
            tracing::info!(topics = topics.len(), "Redis reachable again: resubscribed");
        }
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => inner.route(msg.get_channel_name(), msg.get_payload_bytes()),
                    None => break,
                },
                cmd = commands.recv() => match cmd {
                    Some(SubCommand::Subscribe(topic, ack)) => {
                        let _ = ack.send(sink.subscribe(&topic).await.map_err(unavailable));
                    }
                    Some(SubCommand::Unsubscribe(topic)) => {
                        let _ = sink.unsubscribe(&topic).await;
                    }
                    None => return,
                },
            }
        }
        inner.connected.store(false, Ordering::Release);
        disconnected_at = now_ms();
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        crate::metrics::redis_reconnect();
        logged_down = true;
    }
}

/// While disconnected, subscriptions are answered with an error (they are made again
/// on reconnect from the route table).
fn drain_while_down(commands: &mut mpsc::UnboundedReceiver<SubCommand>) {
    while let Ok(cmd) = commands.try_recv() {
        if let SubCommand::Subscribe(_, ack) = cmd {
            let _ = ack.send(Err(EngineError::Unavailable("Redis unreachable".into())));
        }
    }
}

async fn heartbeats(inner: Arc<Inner>) {
    let period = (inner.presence_ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !inner.connected.load(Ordering::Acquire) {
            continue;
        }
        inner.prune_pending();
        if let Err(e) = inner.heartbeat_and_sweep().await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }
}

/// Backends' durable path: `XADD P publish-stream * event <json>`, read through a
/// consumer group so each entry is published once, even if it was added while every
/// node was down. Entries a dead node had claimed are taken over after 30 s.
async fn durable_events(inner: Arc<Inner>) {
    let stream = inner.events_stream();
    let group = "switchboard";
    // Its own connection: a blocking read would stall the shared command connection.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(1);
    let Ok(mut conn) = ConnectionManager::new_lazy_with_config(inner.client.clone(), config) else {
        tracing::error!("durable events: cannot create a Redis connection");
        return;
    };
    let mut group_ready = false;
    // Our own unacknowledged entries are read first (after a start or a failure).
    let mut pending_first = true;
    let mut last_claim = std::time::Instant::now();
    loop {
        if !group_ready {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(()) => group_ready = true,
                Err(e) if e.code() == Some("BUSYGROUP") => group_ready = true,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let sink = inner.events.lock().clone();
        let Some(sink) = sink else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let read: redis::RedisResult<redis::Value> = if pending_first {
            read_group(group, &inner.node_id, &stream, "0", None)
                .query_async(&mut conn)
                .await
        } else if last_claim.elapsed() > Duration::from_secs(10) {
            // Entries a dead node had read but not acknowledged.
            last_claim = std::time::Instant::now();
            redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(group)
                .arg(&inner.node_id)
                .arg(30_000)
                .arg("0")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await
                .map(|v| match v {
                    // [next id, entries, deleted ids] -> shaped like one stream of XREADGROUP
                    redis::Value::Array(parts) => {
                        redis::Value::Array(vec![redis::Value::Array(vec![
                            redis::Value::Nil,
                            parts.get(1).cloned().unwrap_or(redis::Value::Nil),
                        ])])
                    }
                    other => other,
                })
        } else {
            read_group(group, &inner.node_id, &stream, ">", Some(1000))
                .query_async(&mut conn)
                .await
        };
        match read {
            Ok(redis::Value::Array(streams)) => {
                for s in streams {
                    if let redis::Value::Array(pair) = s {
                        if let Some(list) = pair.get(1) {
                            collect_entries(list, &mut entries);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if e.code() == Some("NOGROUP") {
                    // Redis restarted without our stream: create the group again.
                    group_ready = false;
                }
                tracing::debug!(error = %e, "durable events: read failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if pending_first && entries.is_empty() {
            pending_first = false;
        }
        for (id, payload) in entries {
            if sink(Bytes::from(payload), true).await {
                let _: redis::RedisResult<i64> = conn.xack(&stream, group, &[&id]).await;
            } else {
                // Not published yet (the engine is not ready): retry from our pending list.
                pending_first = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
        }
    }
}

/// `XREADGROUP` for up to 100 entries after `from` (`0`: our own pending ones).
fn read_group(
    group: &str,
    node: &str,
    stream: &str,
    from: &str,
    block_ms: Option<u64>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(group).arg(node).arg("COUNT").arg(100);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(stream).arg(from);
    cmd
}

/// Entries of an XREADGROUP/XAUTOCLAIM answer: `[[id, [field, value, ...]], ...]`;
/// the event is the value of field `event` (or the first value).
fn collect_entries(list: &redis::Value, out: &mut Vec<(String, Vec<u8>)>) {
    let redis::Value::Array(items) = list else {
        return;
    };
    for item in items {
        let redis::Value::Array(pair) = item else {
            continue;
        };
        let (Some(id), Some(redis::Value::Array(fields))) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let Ok(id) = redis::from_redis_value::<String>(id.clone()) else {
            continue;
        };
        let mut payload = None;
        for kv in fields.chunks(2) {
            if let [k, v] = kv {
                let k: String = redis::from_redis_value(k.clone()).unwrap_or_default();
                let v: Vec<u8> = redis::from_redis_value(v.clone()).unwrap_or_default();
                if k == "event" || payload.is_none() {
                    payload = Some(v);
                }
            }
        }
        if let Some(p) = payload {
            out.push((id, p));
        }
    }
}

impl Engine for RedisEngine {
    fn clustered(&self) -> bool {
        true
    }

    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<Published> {
        let inner = self.inner.clone();
        let topic = inner.topic(key);
        let history = inner.history_key(key);
        let stream = inner.recovery_stream(key);
        let key = key.clone();
        Box::pin(async move {
            if !inner.connected.load(Ordering::Acquire) {
                return Err(EngineError::Unavailable("Redis unreachable".into()));
            }
            let mut entry = Vec::with_capacity(msg.json.len() + 1);
            entry.push(if msg.audience.authenticated_only() {
                b'1'
            } else {
                b'0'
            });
            entry.extend_from_slice(&msg.json);
            let mid = inner.next_mid();
            let envelope = encode_envelope(&mid, &msg);
            // Tracked only where this node will see it come back (a local subscription).
            let tracked = inner.routes.lock().contains_key(&topic);
            if tracked {
                let mut pending = inner.pending.lock();
                if pending.len() >= MAX_PENDING {
                    pending.pop_front();
                }
                pending.push_back(Pending {
                    mid: mid.clone(),
                    key: key.clone(),
                    envelope: envelope.clone(),
                    history_cap: msg.history_cap,
                    entry: entry.clone(),
                    at: std::time::Instant::now(),
                });
            }
            let mut conn = inner.conn();
            let started = std::time::Instant::now();
            let sent: Result<i64, _> = inner
                .publish_script
                .key(topic)
                .key(history)
                .key(stream)
                .arg(&envelope)
                .arg(msg.history_cap)
                .arg(inner.history_ttl_ms)
                .arg(entry)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = sent {
                // Refused (the sender is told): it must not be republished later.
                if tracked {
                    inner.pending.lock().retain(|p| p.mid != mid);
                }
                return Err(unavailable(e));
            }
            crate::metrics::redis_roundtrip(started.elapsed());
            Ok(Published::Remote)
        })
    }

    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>> {
        let inner = self.inner.clone();
        let list = inner.history_key(key);
        Box::pin(async move {
            let mut conn = inner.conn();
            let raw: Vec<Vec<u8>> = conn.lrange(list, 0, -1).await.map_err(unavailable)?;
            Ok(raw
                .into_iter()
                .filter(|e| !e.is_empty())
                .map(|e| HistoryEntry {
                    authenticated_only: e[0] == b'1',
                    json: Bytes::copy_from_slice(&e[1..]),
                })
                .collect())
        })
    }

    fn ready(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    fn subscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) -> EngineResult<()> {
        let topic = self.inner.topic(key);
        let first = {
            let mut routes = self.inner.routes.lock();
            let route = routes.entry(topic.clone()).or_insert_with(|| Route {
                recipients: Vec::new(),
                last_id: None,
                since_ms: now_ms(),
                recovering: None,
                recent: std::collections::VecDeque::new(),
            });
            route.recipients.push(sink);
            route.recipients.len() == 1
        };
        if !first {
            return super::done(());
        }
        // Queued in call order, so a later unsubscribe can't overtake it.
        let (ack_tx, ack_rx) = oneshot::channel();
        let _ = self.inner.sub_tx.send(SubCommand::Subscribe(topic, ack_tx));
        Box::pin(async move {
            ack_rx
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("bridge stopped".into())))
        })
    }

    fn unsubscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) {
        let topic = self.inner.topic(key);
        let mut routes = self.inner.routes.lock();
        if let Some(route) = routes.get_mut(&topic) {
            route.recipients.retain(|r| r != &sink);
            if route.recipients.is_empty() {
                routes.remove(&topic);
                let _ = self.inner.sub_tx.send(SubCommand::Unsubscribe(topic));
            }
        }
    }

    fn member_joined(&self, key: &ChannelKey, member: MemberRecord) -> EngineResult<()> {
        let inner = self.inner.clone();
        let hash = inner.members_key(key);
        let record = format!(
            "{}\n{}{}\n{}",
            inner.node_id,
            member.presence as u8,
            member.authenticated as u8,
            member.client.get()
        );
        let entry = format!("{}\n{}\n{}", key.app, key.channel, member.socket_id);
        Box::pin(async move {
            let mut conn = inner.conn();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hset(&hash, member.socket_id.as_ref(), &record)
                .ignore()
                .sadd(inner.node_key(&inner.node_id), &entry)
                .ignore();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
            inner
                .own_members
                .lock()
                .insert((hash, member.socket_id.to_string()), (record, entry));
            Ok(())
        })
    }

    fn member_left(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<()> {
        let inner = self.inner.clone();
        let hash = inner.members_key(key);
        let entry = format!("{}\n{}\n{}", key.app, key.channel, socket_id);
        inner
            .own_members
            .lock()
            .remove(&(hash.clone(), socket_id.to_string()));
        Box::pin(async move {
            let mut conn = inner.conn();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hdel(&hash, socket_id.as_ref())
                .ignore()
                .srem(inner.node_key(&inner.node_id), &entry)
                .ignore();
            pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
        })
    }

    fn presence(&self, key: &ChannelKey) -> EngineResult<Vec<SharedJson>> {
        let inner = self.inner.clone();
        let hash = inner.members_key(key);
        Box::pin(async move {
            let mut conn = inner.conn();
            let all: HashMap<String, String> = conn.hgetall(hash).await.map_err(unavailable)?;
            Ok(all
                .values()
                .filter_map(|r| parse_record(r))
                .filter(|r| r.presence)
                .map(|r| r.client)
                .collect())
        })
    }

    fn find_member(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<Option<bool>> {
        let inner = self.inner.clone();
        let hash = inner.members_key(key);
        Box::pin(async move {
            let mut conn = inner.conn();
            let record: Option<String> = conn
                .hget(hash, socket_id.as_ref())
                .await
                .map_err(unavailable)?;
            Ok(record
                .as_deref()
                .and_then(parse_record)
                .map(|r| r.authenticated))
        })
    }

    fn live_channels(&self, app: &str, prefix: &str) -> EngineResult<Option<Vec<String>>> {
        let inner = self.inner.clone();
        let topic_prefix = format!("{}{}:ch:", inner.prefix, app);
        let pattern = format!("{}{}*", glob_escape(&topic_prefix), glob_escape(prefix));
        let min_len = prefix.len();
        Box::pin(async move {
            let mut conn = inner.conn();
            let topics: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(Some(
                topics
                    .into_iter()
                    .filter_map(|t| t.strip_prefix(&topic_prefix).map(str::to_string))
                    .filter(|name| name.len() > min_len)
                    .collect(),
            ))
        })
    }

    fn admit_user(&self, app: &str, user: &str, limit: usize) -> EngineResult<Option<bool>> {
        let inner = self.inner.clone();
        let key = inner.user_key(app, user);
        let node_key = inner.node_key(&inner.node_id);
        let entry = format!("u\n{app}\n{user}");
        let (app, user) = (app.to_string(), user.to_string());
        Box::pin(async move {
            let mut conn = inner.conn();
            let admitted: i64 = inner
                .admit_script
                .key(key)
                .key(node_key)
                .arg(&inner.node_id)
                .arg(limit)
                .arg(entry)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if admitted == 1 {
                *inner.own_users.lock().entry((app, user)).or_insert(0) += 1;
            }
            Ok(Some(admitted == 1))
        })
    }

    fn release_user(&self, app: &str, user: &str) {
        let inner = self.inner.clone();
        let key = inner.user_key(app, user);
        {
            let mut own = inner.own_users.lock();
            let k = (app.to_string(), user.to_string());
            if let Some(n) = own.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    own.remove(&k);
                }
            }
        }
        actix_rt::spawn(async move {
            let mut conn = inner.conn();
            let left: redis::RedisResult<i64> = conn.hincr(&key, &inner.node_id, -1).await;
            if let Ok(n) = left {
                if n <= 0 {
                    let _: redis::RedisResult<()> = conn.hdel(&key, &inner.node_id).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        for audience in [
            Audience::everyone(),
            Audience::Members {
                authenticated_only: true,
            },
            Audience::Socket {
                id: Arc::from("s1"),
            },
            Audience::Presence {
                except: Arc::from("s2"),
            },
            Audience::User {
                row_id: "42".into(),
                dbo_id: Some(7),
            },
        ] {
            let b = Broadcast {
                json: Bytes::from_static(br#"{"action":"message","payload":"a\nb"}"#),
                audience: audience.clone(),
                history_cap: 5,
                origin: None,
            };
            let (mid, back) = decode_envelope(&encode_envelope("n:1", &b)).unwrap();
            assert_eq!(mid, "n:1");
            assert_eq!(back.audience, audience);
            assert_eq!(back.json, b.json);
        }
    }

    #[test]
    fn records_parse() {
        let r = parse_record("node1\n11\n{\"socketId\":\"x\"}").unwrap();
        assert!(r.presence && r.authenticated);
        assert_eq!(r.client.get(), "{\"socketId\":\"x\"}");
        let r = parse_record("node1\n00\n{}").unwrap();
        assert!(!r.presence && !r.authenticated);
        assert!(parse_record("garbage").is_none());
    }

    #[test]
    fn globs_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
