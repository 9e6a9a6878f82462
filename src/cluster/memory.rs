//! One node, everything in memory. A publish appends to the channel's history ring
//! and hands the broadcast to the channel's subscribers in the same step, so history
//! order is delivery order. Rings outlive the channel actor and expire after
//! `history_ttl` without writes; all of them together stay under
//! `limits.history_memory_bytes`, the least recently written channels losing theirs
//! first. Members and per-user slots are counted here too:
//! the same questions the Redis engine answers for a cluster.

use super::engine::{
    done, Broadcast, Broker, ChannelKey, CommandSink, Control, Deliver, Engine, EngineResult,
    HistoryEntry, MemberRecord, Membership, SocketCommand, UserSlots,
};
use super::lifecycle::{self, QueuedEvent, Webhooks};
use crate::protocol::SharedJson;
use actix::Recipient;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Ring {
    entries: VecDeque<HistoryEntry>,
    last_write: Instant,
    bytes: usize,
}

/// Every channel's ring, and their bytes together.
#[derive(Default)]
struct Rings {
    by_channel: HashMap<ChannelKey, Ring>,
    bytes: usize,
}

impl Rings {
    /// Drop whole rings, least recently written first, until under `budget`.
    fn evict_to(&mut self, budget: usize) {
        while self.bytes > budget {
            let Some(oldest) = self
                .by_channel
                .iter()
                .min_by_key(|(_, ring)| ring.last_write)
                .map(|(key, _)| key.clone())
            else {
                return;
            };
            if let Some(ring) = self.by_channel.remove(&oldest) {
                self.bytes -= ring.bytes;
            }
        }
    }
}

/// A channel that has a subscriber or a member.
#[derive(Default)]
struct Live {
    subscribers: Vec<Recipient<Deliver>>,
    members: HashMap<Arc<str>, MemberRecord>,
}

impl Live {
    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.members.is_empty()
    }
}

pub struct MemoryEngine {
    history: Mutex<Rings>,
    history_budget: usize,
    live: Mutex<HashMap<ChannelKey, Live>>,
    users: Mutex<HashMap<(String, String), usize>>,
    /// Numbers every broadcast, so a joiner skips what its join reply already held.
    seq: AtomicU64,
    history_ttl: Duration,
    commands: Mutex<Option<CommandSink>>,
    webhooks: Mutex<WebhookQueues>,
}

/// Lifecycle events waiting to be sent, per app with webhooks on.
#[derive(Default)]
struct WebhookQueues {
    on: HashSet<String>,
    budget: usize,
    by_app: HashMap<String, AppQueue>,
    next_id: u64,
}

#[derive(Default)]
struct AppQueue {
    events: VecDeque<QueuedEvent>,
    bytes: usize,
}

impl WebhookQueues {
    /// Queue an event; the caller checked that the app has webhooks on.
    fn push(&mut self, app: &str, json: Bytes) {
        let budget = self.budget;
        let q = self.by_app.entry(app.to_string()).or_default();
        if q.bytes + json.len() > budget {
            lifecycle::dropped_for_room(app, 1);
            return;
        }
        self.next_id += 1;
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        q.bytes += json.len();
        q.events.push_back(QueuedEvent {
            id: format!("{time_ms}-{}", self.next_id),
            time_ms,
            json,
        });
    }
}

impl MemoryEngine {
    /// `history_budget`: the bytes all channels' history may take together.
    pub fn new(history_ttl: Duration, history_budget: usize) -> Self {
        Self {
            history: Mutex::new(Rings::default()),
            history_budget,
            live: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            history_ttl,
            commands: Mutex::new(None),
            webhooks: Mutex::new(WebhookQueues::default()),
        }
    }

    /// Drop the history of channels nobody wrote to within the TTL; returns how many.
    pub fn sweep(&self) -> usize {
        let mut h = self.history.lock();
        let before = h.by_channel.len();
        let ttl = self.history_ttl;
        let mut freed = 0;
        h.by_channel.retain(|_, ring| {
            let keep = ring.last_write.elapsed() < ttl;
            if !keep {
                freed += ring.bytes;
            }
            keep
        });
        h.bytes -= freed;
        before - h.by_channel.len()
    }

    pub fn channels_with_history(&self) -> usize {
        self.history.lock().by_channel.len()
    }

    /// The bytes all stored history takes (frames only).
    pub fn history_bytes(&self) -> usize {
        self.history.lock().bytes
    }

    fn with_live<T>(&self, key: &ChannelKey, f: impl FnOnce(&mut Live) -> T) -> T {
        let mut live = self.live.lock();
        let entry = live.entry(key.clone()).or_default();
        let out = f(entry);
        if entry.is_empty() {
            live.remove(key);
        }
        out
    }
}

impl Broker for MemoryEngine {
    fn publish(&self, key: &ChannelKey, mut msg: Broadcast) -> EngineResult<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        msg.seq = Some(seq);
        if msg.history_cap > 0 {
            let mut h = self.history.lock();
            let ring = h.by_channel.entry(key.clone()).or_insert_with(|| Ring {
                entries: VecDeque::new(),
                last_write: Instant::now(),
                bytes: 0,
            });
            ring.last_write = Instant::now();
            ring.bytes += msg.json.len();
            let mut delta = msg.json.len() as isize;
            ring.entries.push_back(HistoryEntry {
                json: msg.json.clone(),
                audience: msg.audience.clone(),
            });
            while ring.entries.len() > msg.history_cap {
                if let Some(old) = ring.entries.pop_front() {
                    ring.bytes -= old.json.len();
                    delta -= old.json.len() as isize;
                }
            }
            h.bytes = h.bytes.saturating_add_signed(delta);
            h.evict_to(self.history_budget);
        }
        // Sent under the lock: two publishes of one channel reach its subscribers in
        // the order their history entries were written.
        let live = self.live.lock();
        if let Some(l) = live.get(key) {
            for sink in &l.subscribers {
                sink.do_send(Deliver(msg.clone()));
            }
        }
        done(())
    }

    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>> {
        let entries = self
            .history
            .lock()
            .by_channel
            .get(key)
            .map(|r| r.entries.iter().cloned().collect())
            .unwrap_or_default();
        done(entries)
    }

    fn subscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) -> EngineResult<()> {
        self.with_live(key, |l| l.subscribers.push(sink));
        done(())
    }

    fn unsubscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) {
        self.with_live(key, |l| l.subscribers.retain(|s| s != &sink));
    }

    fn watermark(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    fn clear_history(&self, key: &ChannelKey) -> EngineResult<()> {
        let mut h = self.history.lock();
        if let Some(ring) = h.by_channel.remove(key) {
            h.bytes -= ring.bytes;
        }
        done(())
    }
}

impl Membership for MemoryEngine {
    fn member_joined(&self, key: &ChannelKey, member: MemberRecord) -> EngineResult<()> {
        // Decided under the lock that changes membership: occupied and vacated alternate.
        self.with_live(key, |l| {
            let client = member.client.clone();
            let new = l.members.insert(member.socket_id.clone(), member).is_none();
            let mut queues = self.webhooks.lock();
            if new && queues.on.contains(&*key.app) {
                if l.members.len() == 1 {
                    queues.push(&key.app, lifecycle::channel_occupied(&key.channel));
                }
                queues.push(&key.app, lifecycle::member_added(&key.channel, &client));
            }
        });
        done(())
    }

    fn member_left(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<()> {
        self.with_live(key, |l| {
            let gone = l.members.remove(&socket_id);
            let mut queues = self.webhooks.lock();
            if let Some(gone) = gone.filter(|_| queues.on.contains(&*key.app)) {
                queues.push(
                    &key.app,
                    lifecycle::member_removed(&key.channel, &gone.client),
                );
                if l.members.is_empty() {
                    queues.push(&key.app, lifecycle::channel_vacated(&key.channel));
                }
            }
        });
        done(())
    }

    fn presence(&self, key: &ChannelKey) -> EngineResult<Vec<SharedJson>> {
        let list = self.live.lock().get(key).map(|l| {
            l.members
                .values()
                .filter(|m| m.presence)
                .map(|m| m.client.clone())
                .collect()
        });
        done(list.unwrap_or_default())
    }

    fn find_member(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<Option<bool>> {
        let found = self
            .live
            .lock()
            .get(key)
            .and_then(|l| l.members.get(&socket_id).map(|m| m.authenticated));
        done(found)
    }

    fn live_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<String>> {
        let names = self
            .live
            .lock()
            .iter()
            .filter(|(k, l)| !l.subscribers.is_empty() && &*k.app == app)
            .map(|(k, _)| &k.channel)
            .filter(|name| name.len() > prefix.len() && name.starts_with(prefix))
            .map(|name| name.to_string())
            .collect();
        done(names)
    }

    fn members(&self, key: &ChannelKey) -> EngineResult<Vec<MemberRecord>> {
        let list = self
            .live
            .lock()
            .get(key)
            .map(|l| l.members.values().cloned().collect());
        done(list.unwrap_or_default())
    }

    fn occupied_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<(String, usize)>> {
        let found = self
            .live
            .lock()
            .iter()
            .filter(|(k, l)| !l.members.is_empty() && &*k.app == app)
            .filter(|(k, _)| k.channel.starts_with(prefix))
            .map(|(k, l)| (k.channel.to_string(), l.members.len()))
            .collect();
        done(found)
    }
}

impl UserSlots for MemoryEngine {
    fn admit_user(&self, app: &str, user: &str, limit: usize) -> EngineResult<bool> {
        let mut users = self.users.lock();
        let n = users
            .entry((app.to_string(), user.to_string()))
            .or_insert(0);
        let admitted = *n < limit;
        if admitted {
            *n += 1;
        }
        done(admitted)
    }

    fn release_user(&self, app: &str, user: &str) {
        let mut users = self.users.lock();
        let key = (app.to_string(), user.to_string());
        if let Some(n) = users.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                users.remove(&key);
            }
        }
    }
}

impl Control for MemoryEngine {
    /// One node: the command runs here.
    fn command(&self, command: SocketCommand) -> EngineResult<usize> {
        let sink = self.commands.lock().clone();
        Box::pin(async move {
            Ok(match sink {
                Some(run) => run(command).await,
                None => 0,
            })
        })
    }

    fn set_command_sink(&self, sink: CommandSink) {
        *self.commands.lock() = Some(sink);
    }
}

/// One node: it always holds the lease, and the queue lives as long as the process
/// (a graceful stop sends what it can before exiting).
impl Webhooks for MemoryEngine {
    fn set_webhook_apps(&self, apps: Vec<String>, queue_bytes: usize) {
        let mut q = self.webhooks.lock();
        q.on = apps.into_iter().collect();
        q.budget = queue_bytes;
        let on = q.on.clone();
        q.by_app.retain(|app, _| on.contains(app));
    }

    fn webhooks_on(&self, app: &str) -> bool {
        self.webhooks.lock().on.contains(app)
    }

    fn queue_webhook(&self, app: &str, event: Bytes) -> EngineResult<()> {
        let mut queues = self.webhooks.lock();
        if queues.on.contains(app) {
            queues.push(app, event);
        }
        done(())
    }

    fn webhook_lease(&self, _app: &str, _ttl: Duration) -> EngineResult<bool> {
        done(true)
    }

    fn release_webhook_lease(&self, _app: &str) -> EngineResult<()> {
        done(())
    }

    fn queued_webhooks(&self, app: &str, max: usize) -> EngineResult<Vec<QueuedEvent>> {
        let q = self.webhooks.lock();
        let events = q
            .by_app
            .get(app)
            .map(|q| q.events.iter().take(max).cloned().collect())
            .unwrap_or_default();
        done(events)
    }

    fn forget_webhooks(&self, app: &str, events: Vec<QueuedEvent>) -> EngineResult<()> {
        let mut q = self.webhooks.lock();
        if let Some(q) = q.by_app.get_mut(app) {
            let gone: HashSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
            let mut freed = 0;
            q.events.retain(|e| {
                let keep = !gone.contains(e.id.as_str());
                if !keep {
                    freed += e.json.len();
                }
                keep
            });
            q.bytes -= freed;
        }
        done(())
    }
}

impl Engine for MemoryEngine {
    fn ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::engine::Audience;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn msg(text: &'static str, cap: usize) -> Broadcast {
        Broadcast {
            json: Bytes::from_static(text.as_bytes()),
            audience: Audience::everyone(),
            history_cap: cap,
            origin: None,
            seq: None,
        }
    }

    #[test]
    fn idle_history_expires() {
        let e = MemoryEngine::new(Duration::ZERO, usize::MAX);
        let k = ChannelKey::new("a", "c");
        e.publish(&k, msg("1", 5)).now_or_never().unwrap().unwrap();
        assert_eq!(e.sweep(), 1);
        assert_eq!(e.channels_with_history(), 0);
    }

    #[test]
    fn history_stays_under_its_byte_budget_losing_the_oldest_channel_first() {
        let e = MemoryEngine::new(Duration::from_secs(60), 10);
        let (a, b) = (ChannelKey::new("a", "old"), ChannelKey::new("a", "new"));
        e.publish(&a, msg("aaaa", 5))
            .now_or_never()
            .unwrap()
            .unwrap();
        e.publish(&b, msg("bbbb", 5))
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(e.history_bytes(), 8);
        // 12 bytes would be over 10: the least recently written channel goes.
        e.publish(&b, msg("cccc", 5))
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(e.history_bytes(), 8);
        assert!(e.history(&a).now_or_never().unwrap().unwrap().is_empty());
        assert_eq!(e.history(&b).now_or_never().unwrap().unwrap().len(), 2);
        // The cap by count gives bytes back too.
        e.publish(&b, msg("d", 1)).now_or_never().unwrap().unwrap();
        assert_eq!(e.history_bytes(), 1);
    }

    #[test]
    fn the_watermark_follows_every_publish() {
        let e = MemoryEngine::new(Duration::from_secs(60), usize::MAX);
        let k = ChannelKey::new("a", "c");
        let before = e.watermark();
        e.publish(&k, msg("1", 0)).now_or_never().unwrap().unwrap();
        e.publish(&k, msg("2", 5)).now_or_never().unwrap().unwrap();
        assert_eq!(e.watermark(), before + 2);
    }
}
