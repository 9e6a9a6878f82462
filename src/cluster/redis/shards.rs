//! The Redis engine over one Redis or several independent ones (`cluster.redis_url`
//! or `cluster.redis_shards`, docs/protocol.md section 11).
//!
//! Each shard is a complete one-Redis engine for the keys that hash to it, so a
//! shard never needs another's data in a script:
//! - a channel (its topic, history, recovery stream, members, and the webhook
//!   events its membership queues) lives on `shard_of(app, channel)`;
//! - a user's connection count on `shard_of(app, user)`;
//! - node-wide traffic (server API commands, `connect`/`disconnect` webhook events
//!   and the app's webhook sender lease) on shard 0, the home shard.
//!
//! Every shard keeps its own heartbeats and sweeps dead nodes' records from itself;
//! backends may publish events to any shard (every node listens on all of them).
//! The shard is chosen by jump consistent hash (Lamping and Veach, 2014) of the
//! FNV-1a hash of the name, as Centrifugo does: going from N to N+1 shards moves
//! about 1/(N+1) of the channels, all of them to the new shard.

use super::{Place, Shard};
use crate::cluster::engine::{
    done, Broadcast, Broker, ChannelKey, CommandSink, Control, Deliver, Engine, EngineError,
    EngineResult, EventSink, HistoryEntry, MemberRecord, Membership, SocketCommand, UserSlots,
};
use crate::cluster::lifecycle::{QueuedEvent, Webhooks};
use crate::protocol::SharedJson;
use actix::Recipient;
use bytes::Bytes;
use futures_util::future::try_join_all;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The Redis engine: routes every call to the shard that owns its keys.
#[derive(Clone)]
pub struct RedisEngine {
    shards: Arc<[Shard]>,
}

impl RedisEngine {
    /// Connect to every Redis of the configuration (one, or the shards in order) as
    /// one node, and start their background tasks (call inside an actix system).
    pub fn start(config: &crate::config::ClusterConfig) -> Result<RedisEngine, EngineError> {
        let node_id = crate::auth::new_socket_id();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let places = if config.redis_cluster.is_empty() {
            config
                .redis_urls()
                .into_iter()
                .map(|url| Place::server(config, url))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Place::cluster(config)?
        };
        if places.is_empty() {
            return Err(EngineError::Unavailable("no Redis configured".into()));
        }
        let shards: Vec<Shard> = places
            .into_iter()
            .map(|place| Shard::start(config, place, &node_id, epoch.clone()))
            .collect();
        tracing::info!(node = %node_id, shards = shards.len(), "cluster engine started");
        Ok(RedisEngine {
            shards: shards.into(),
        })
    }

    fn home(&self) -> &Shard {
        &self.shards[0]
    }

    fn of_channel(&self, key: &ChannelKey) -> &Shard {
        &self.shards[shard_of(&key.app, &key.channel, self.shards.len())]
    }

    fn of_user(&self, app: &str, user: &str) -> &Shard {
        &self.shards[shard_of(app, user, self.shards.len())]
    }

    /// Ask every shard at once; their answers, one after another.
    fn ask_every_shard<T: Send + 'static>(
        &self,
        ask: impl Fn(&Shard) -> EngineResult<Vec<T>>,
    ) -> EngineResult<Vec<T>> {
        let asks: Vec<_> = self.shards.iter().map(ask).collect();
        Box::pin(async move { Ok(try_join_all(asks).await?.into_iter().flatten().collect()) })
    }
}

/// Which of `shards` holds `name` of `app`.
pub fn shard_of(app: &str, name: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut hash = Fnv1a::default();
    hash.write(app.as_bytes());
    hash.write(b":");
    hash.write(name.as_bytes());
    jump_consistent_hash(hash.0, shards)
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher), so
/// every node, of any version, puts a channel on the same shard.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`.
fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

impl Engine for RedisEngine {
    /// Ready when every shard is: a channel on a shard that is down could not be served.
    fn ready(&self) -> bool {
        self.shards.iter().all(|s| s.ready())
    }

    fn set_event_sink(&self, sink: EventSink) {
        for s in self.shards.iter() {
            s.set_event_sink(sink.clone());
        }
    }
}

impl Broker for RedisEngine {
    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<()> {
        self.of_channel(key).publish(key, msg)
    }

    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>> {
        self.of_channel(key).history(key)
    }

    fn subscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) -> EngineResult<()> {
        self.of_channel(key).subscribe(key, sink)
    }

    fn unsubscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) {
        self.of_channel(key).unsubscribe(key, sink)
    }

    /// The node's reconnect count, shared by every shard.
    fn watermark(&self) -> u64 {
        self.home().watermark()
    }

    fn clear_history(&self, key: &ChannelKey) -> EngineResult<()> {
        self.of_channel(key).clear_history(key)
    }
}

impl Membership for RedisEngine {
    fn member_joined(&self, key: &ChannelKey, member: MemberRecord) -> EngineResult<()> {
        self.of_channel(key).member_joined(key, member)
    }

    fn member_left(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<()> {
        self.of_channel(key).member_left(key, socket_id)
    }

    fn presence(&self, key: &ChannelKey) -> EngineResult<Vec<SharedJson>> {
        self.of_channel(key).presence(key)
    }

    fn find_member(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<Option<bool>> {
        self.of_channel(key).find_member(key, socket_id)
    }

    fn live_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<String>> {
        self.ask_every_shard(|s| s.live_channels(app, prefix))
    }

    fn members(&self, key: &ChannelKey) -> EngineResult<Vec<MemberRecord>> {
        self.of_channel(key).members(key)
    }

    fn occupied_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<(String, usize)>> {
        self.ask_every_shard(|s| s.occupied_channels(app, prefix))
    }
}

impl UserSlots for RedisEngine {
    fn admit_user(&self, app: &str, user: &str, limit: usize) -> EngineResult<bool> {
        self.of_user(app, user).admit_user(app, user, limit)
    }

    fn release_user(&self, app: &str, user: &str) {
        self.of_user(app, user).release_user(app, user)
    }
}

impl Control for RedisEngine {
    fn command(&self, command: SocketCommand) -> EngineResult<usize> {
        self.home().command(command)
    }

    fn set_command_sink(&self, sink: CommandSink) {
        for s in self.shards.iter() {
            s.set_command_sink(sink.clone());
        }
    }
}

/// Webhook events queue on the shard whose keys changed (membership events beside
/// the channel's members, so occupied/vacated are decided there; `connect` and
/// `disconnect` on the home shard). One lease, on the home shard, makes one node
/// the app's sender for every shard's queue. With several shards an event id is
/// `<shard>/<stream id>`, unique in the app.
impl Webhooks for RedisEngine {
    fn set_webhook_apps(&self, apps: Vec<String>, queue_bytes: usize) {
        for s in self.shards.iter() {
            s.set_webhook_apps(apps.clone(), queue_bytes);
        }
    }

    fn webhooks_on(&self, app: &str) -> bool {
        self.home().webhooks_on(app)
    }

    fn queue_webhook(&self, app: &str, event: Bytes) -> EngineResult<()> {
        self.home().queue_webhook(app, event)
    }

    fn webhook_lease(&self, app: &str, ttl: Duration) -> EngineResult<bool> {
        self.home().webhook_lease(app, ttl)
    }

    fn release_webhook_lease(&self, app: &str) -> EngineResult<()> {
        self.home().release_webhook_lease(app)
    }

    /// The oldest `max` of all shards, by queue time. The sort is stable and each
    /// shard's events come in queue order, so a channel's events (all on one shard)
    /// keep their order; across shards (a socket's `member_removed` on its channel's
    /// shard, its `disconnect` on the home shard) the order is that of the Redis
    /// servers' clocks, and within one millisecond a `connect` comes first and a
    /// `disconnect` last (`same_ms_rank`).
    fn queued_webhooks(&self, app: &str, max: usize) -> EngineResult<Vec<QueuedEvent>> {
        if self.shards.len() == 1 {
            return self.home().queued_webhooks(app, max);
        }
        let asks: Vec<_> = self
            .shards
            .iter()
            .map(|s| s.queued_webhooks(app, max))
            .collect();
        Box::pin(async move {
            let mut all = Vec::new();
            for (shard, events) in try_join_all(asks).await?.into_iter().enumerate() {
                all.extend(events.into_iter().map(|mut e| {
                    e.id = format!("{shard}/{}", e.id);
                    e
                }));
            }
            all.sort_by_key(|e| (e.time_ms, same_ms_rank(e)));
            all.truncate(max);
            Ok(all)
        })
    }

    fn forget_webhooks(&self, app: &str, events: Vec<QueuedEvent>) -> EngineResult<()> {
        if self.shards.len() == 1 {
            return self.home().forget_webhooks(app, events);
        }
        let mut by_shard: HashMap<usize, Vec<QueuedEvent>> = HashMap::new();
        for mut e in events {
            let Some((shard, id)) = e.id.split_once('/') else {
                continue;
            };
            let Ok(shard) = shard.parse::<usize>() else {
                continue;
            };
            if shard < self.shards.len() {
                e.id = id.to_string();
                by_shard.entry(shard).or_default().push(e);
            }
        }
        let forgets: Vec<_> = by_shard
            .into_iter()
            .map(|(shard, events)| self.shards[shard].forget_webhooks(app, events))
            .collect();
        if forgets.is_empty() {
            return done(());
        }
        Box::pin(async move {
            try_join_all(forgets).await?;
            Ok(())
        })
    }
}

/// Within one millisecond of queue time: a socket's `connect` (home shard) comes
/// before its membership events (its channels' shards), its `disconnect` after.
fn same_ms_rank(e: &QueuedEvent) -> u8 {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        name: Option<&'a str>,
    }
    match serde_json::from_slice::<Named>(&e.json)
        .ok()
        .and_then(|n| n.name)
    {
        Some("connect") => 0,
        Some("disconnect") => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found on a Redis Cluster (tests/webhooks_cluster.rs): a socket's
    /// `member_removed` and `disconnect`, queued in one millisecond on two
    /// partitions, went out disconnect first.
    #[test]
    fn a_sockets_disconnect_goes_after_its_membership_events_of_the_same_ms() {
        let event = |shard: &str, name: &str| QueuedEvent {
            id: format!("{shard}/5-0"),
            time_ms: 5,
            json: Bytes::from(format!(r#"{{"name":"{name}","socket_id":"s"}}"#)),
        };
        let mut all = [
            event("0", "disconnect"),
            event("0", "connect"),
            event("3", "member_added"),
            event("3", "member_removed"),
        ];
        all.sort_by_key(|e| (e.time_ms, same_ms_rank(e)));
        let names: Vec<_> = all.iter().map(|e| e.json.clone()).collect();
        assert!(names[0].starts_with(br#"{"name":"connect""#));
        assert!(names[1].starts_with(br#"{"name":"member_added""#));
        assert!(names[2].starts_with(br#"{"name":"member_removed""#));
        assert!(names[3].starts_with(br#"{"name":"disconnect""#));
    }

    #[test]
    fn one_shard_takes_everything() {
        assert_eq!(shard_of("demo", "chat/1", 1), 0);
    }

    /// Pinned: every node of every version must agree on where a channel lives,
    /// so a change to the hashing (that would strand channels' data on the shard
    /// they used to be on) fails here. Computed with an independent Python copy of
    /// FNV-1a and jump hash.
    #[test]
    fn channels_stay_where_they_were() {
        for (name, on) in [
            ("chat/1", [1, 1, 1]),
            ("room:lobby", [0, 2, 2]),
            ("announcements", [0, 0, 0]),
        ] {
            let got = [2, 3, 8].map(|n| shard_of("demo", name, n));
            assert_eq!(got, on, "{name}");
        }
    }

    #[test]
    fn fnv1a_matches_the_reference() {
        let mut h = Fnv1a::default();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    /// Channels spread evenly, and a third shard takes about a third of them from
    /// the other two without moving any between those two.
    #[test]
    fn channels_spread_and_a_new_shard_moves_few() {
        let names: Vec<String> = (0..30_000).map(|i| format!("chat/{i}")).collect();
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for n in &names {
            let (two, three) = (shard_of("demo", n, 2), shard_of("demo", n, 3));
            counts[three] += 1;
            if two != three {
                assert_eq!(three, 2, "{n} moved between the old shards");
                moved += 1;
            }
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
        assert!((9_000..11_000).contains(&moved), "moved {moved}");
    }
}
