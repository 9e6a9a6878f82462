//! Publishes leave in batches: a channel does not wait for one publish's answer
//! before the next. Each channel (topic) has a queue; while a batch is at Redis, what
//! the channel publishes meanwhile waits in the queue and goes as the next batch, in
//! one script call (one round trip, one script's fixed cost, for all of it). Order
//! is the queue's: a channel has one writer (its actor), which queues in call order.
//!
//! History reads queue behind the publishes before them, so a join reads a history
//! that holds every message its channel published before it (as when each publish
//! was awaited).
//!
//! A batch is capped in bytes (`BATCH_BYTES`): what one script sends to each
//! subscribed node then fits in one write of Redis's event loop (64 KiB a client),
//! so a Redis that dies leaves no half-sent batch on one node while another node
//! (the sender's) got all of it.

use super::*;
use std::collections::VecDeque;

/// At most this many envelope bytes in one batch.
const BATCH_BYTES: usize = 32 * 1024;
/// At most this many broadcasts in one batch.
const BATCH_COUNT: usize = 256;

/// KEYS: topic, history list, recovery stream. ARGV: history TTL (ms), then per
/// broadcast: envelope, history cap, history entry. Every broadcast is appended to
/// the recovery stream and published with its stream id (so a node that
/// re-subscribes can fetch what it missed), and to the history when its cap is set.
pub(super) const PUBLISH_LUA: &str = r#"
local stored = 0
for i = 2, #ARGV, 3 do
  local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', 1000, '*', 'e', ARGV[i])
  local cap = tonumber(ARGV[i + 1])
  if cap > 0 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 2])
    if cap > stored then stored = cap end
  end
  redis.call('PUBLISH', KEYS[1], id .. '\n' .. ARGV[i])
end
redis.call('PEXPIRE', KEYS[3], 120000)
if stored > 0 then
  redis.call('LTRIM', KEYS[2], -stored, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return (#ARGV - 1) / 3
"#;

/// One broadcast, ready for the script.
pub(super) struct Prepared {
    pub(super) envelope: Vec<u8>,
    pub(super) history_cap: usize,
    pub(super) entry: Vec<u8>,
    /// Its id when this node keeps it until it comes back (see `Pending`).
    pub(super) tracked: Option<String>,
}

impl Prepared {
    pub(super) fn size(&self) -> usize {
        self.envelope.len() + self.entry.len()
    }
}

pub(super) enum Write {
    Publish(Prepared, oneshot::Sender<Result<(), EngineError>>),
    History(oneshot::Sender<Result<Vec<Vec<u8>>, EngineError>>),
}

/// A channel's queue, and whether a task is draining it.
#[derive(Default)]
pub(super) struct Queue {
    items: VecDeque<Write>,
    draining: bool,
}

/// What the drain task takes from a queue in one step.
enum Step {
    Publish(Vec<(Prepared, oneshot::Sender<Result<(), EngineError>>)>),
    History(oneshot::Sender<Result<Vec<Vec<u8>>, EngineError>>),
}

impl Inner {
    /// Queue a write of `key`'s channel; starts the channel's drain task when idle.
    pub(super) fn queue_write(self: &Arc<Self>, key: &ChannelKey, write: Write) {
        let topic = self.topic(key);
        let mut queues = self.writes.lock();
        let queue = queues.entry(topic.clone()).or_default();
        queue.items.push_back(write);
        if !queue.draining {
            queue.draining = true;
            actix_rt::spawn(drain(self.clone(), key.clone(), topic));
        }
    }

    /// Room in the write queues for `bytes` more (`cluster.resend_buffer_bytes`):
    /// when Redis answers slower than the node publishes, new broadcasts are
    /// refused (`Service unavailable` to their sender) rather than queued unbounded.
    fn take_queue_room(&self, bytes: usize) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + bytes <= self.queue_limit).then_some(queued + bytes)
            })
            .is_ok()
    }

    /// The next step of a channel's queue; None (and the queue forgotten) when empty.
    fn next_step(&self, topic: &str) -> Option<Step> {
        let mut queues = self.writes.lock();
        let queue = queues.get_mut(topic)?;
        match queue.items.pop_front() {
            None => {
                queues.remove(topic);
                None
            }
            Some(Write::History(done)) => Some(Step::History(done)),
            Some(Write::Publish(first, done)) => {
                let mut bytes = first.size();
                let mut batch = vec![(first, done)];
                while batch.len() < BATCH_COUNT {
                    let Some(Write::Publish(next, _)) = queue.items.front() else {
                        break;
                    };
                    let size = next.size();
                    if bytes + size > BATCH_BYTES {
                        break;
                    }
                    bytes += size;
                    if let Some(Write::Publish(next, done)) = queue.items.pop_front() {
                        batch.push((next, done));
                    }
                }
                self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
                Some(Step::Publish(batch))
            }
        }
    }

    /// Publish an envelope (not kept in history) through the channel's queue, after
    /// what this node queued for the channel before; answers when Redis took it.
    pub(super) async fn publish_queued(
        self: &Arc<Self>,
        key: &ChannelKey,
        envelope: Vec<u8>,
    ) -> Result<(), EngineError> {
        let (done, answer) = oneshot::channel();
        let prepared = Prepared {
            envelope,
            history_cap: 0,
            entry: Vec::new(),
            tracked: None,
        };
        // A swept member's leave is not refused for room: it is counted all the same.
        self.queued_bytes
            .fetch_add(prepared.size(), Ordering::AcqRel);
        self.queue_write(key, Write::Publish(prepared, done));
        answer
            .await
            .unwrap_or_else(|_| Err(EngineError::Unavailable("writer stopped".into())))
    }

    /// One script call for a batch of broadcasts of one channel, in order.
    pub(super) async fn publish_batch<'a, C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        key: &ChannelKey,
        batch: impl Iterator<Item = (&'a [u8], usize, &'a [u8])>,
    ) -> redis::RedisResult<i64> {
        let mut invocation = self.publish_script.prepare_invoke();
        invocation
            .key(self.topic(key))
            .key(self.history_key(key))
            .key(self.recovery_stream(key))
            .arg(self.history_ttl_ms);
        for (envelope, cap, entry) in batch {
            invocation.arg(envelope).arg(cap).arg(entry);
        }
        invocation.invoke_async(conn).await
    }
}

/// Send a channel's queued writes, batch after batch, until the queue is empty.
async fn drain(inner: Arc<Inner>, key: ChannelKey, topic: String) {
    while let Some(step) = inner.next_step(&topic) {
        match step {
            Step::History(done) => {
                let mut conn = inner.conn();
                let read: redis::RedisResult<Vec<Vec<u8>>> =
                    conn.lrange(inner.history_key(&key), 0, -1).await;
                let _ = done.send(read.map_err(unavailable));
            }
            Step::Publish(batch) => {
                let started = std::time::Instant::now();
                // Only on the connection of the bridge's current session with Redis,
                // made after the reconnect's republish: receivers tell repeats by each
                // node's sequence, so nothing newer from this node may reach a new
                // Redis before what is republished (a self-healing connection would
                // carry a batch queued before the loss over to the new server).
                let conn = inner.publish_conn.lock().clone();
                let sent = match conn {
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "Redis unreachable",
                    ))),
                    Some(mut conn) => {
                        inner
                            .publish_batch(
                                &mut conn,
                                &key,
                                batch
                                    .iter()
                                    .map(|(p, _)| (&p.envelope[..], p.history_cap, &p.entry[..])),
                            )
                            .await
                    }
                };
                if sent.is_ok() {
                    crate::metrics::redis_roundtrip(started.elapsed());
                }
                for (prepared, done) in batch {
                    let answer = match &sent {
                        Ok(_) => Ok(()),
                        Err(e) => {
                            // Refused (the sender is told): it must not be republished later.
                            if let Some(mid) = &prepared.tracked {
                                inner.pending.lock().remove(mid);
                            }
                            Err(unavailable(e))
                        }
                    };
                    let _ = done.send(answer);
                }
            }
        }
    }
}

impl Broker for Shard {
    /// Queued for the channel's writer at once, so the broadcast's place in the
    /// channel's order is fixed by this call, and a busy channel's broadcasts go in
    /// batches without waiting for each other's answers (`writer`).
    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<()> {
        let inner = &self.inner;
        if !inner.connected.load(Ordering::Acquire) {
            return refused("Redis unreachable");
        }
        let entry = publish::encode_history_entry(&msg);
        let mid = inner.next_mid();
        let envelope = encode_envelope(&mid, &msg);
        // Tracked only where this node will see it come back (a local subscription).
        let tracked = inner.routes.lock().contains_key(&inner.topic(key));
        if tracked {
            let taken = inner.pending.lock().push(Pending {
                mid: mid.clone(),
                key: key.clone(),
                envelope: envelope.clone(),
                history_cap: msg.history_cap,
                entry: entry.clone(),
                at: std::time::Instant::now(),
                confirmed_at: None,
            });
            if !taken {
                crate::metrics::dropped("resend_buffer_full");
                return refused("resend buffer full");
            }
        }
        let (done, answer) = oneshot::channel();
        let prepared = writer::Prepared {
            envelope,
            history_cap: msg.history_cap,
            entry,
            tracked: tracked.then_some(mid),
        };
        if !inner.take_queue_room(prepared.size()) {
            if let Some(mid) = &prepared.tracked {
                inner.pending.lock().remove(mid);
            }
            crate::metrics::dropped("write_queue_full");
            return refused("write queue full");
        }
        inner.queue_write(key, writer::Write::Publish(prepared, done));
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("writer stopped".into())))
        })
    }

    /// Behind the channel's publishes queued before it (`writer`).
    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>> {
        let (done, answer) = oneshot::channel();
        self.inner.queue_write(key, writer::Write::History(done));
        Box::pin(async move {
            let raw = answer
                .await
                .unwrap_or_else(|_| Err(EngineError::Unavailable("writer stopped".into())))?;
            Ok(raw
                .iter()
                .filter_map(|e| publish::decode_history_entry(e))
                .collect())
        })
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
                delivered: HashMap::new(),
            });
            route.recipients.push(sink);
            route.recipients.len() == 1
        };
        if !first {
            return crate::cluster::engine::done(());
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

    /// Only the list: the recovery stream is not history, and expires by itself.
    fn clear_history(&self, key: &ChannelKey) -> EngineResult<()> {
        let inner = self.inner.clone();
        let list = inner.history_key(key);
        Box::pin(async move {
            let mut conn = inner.conn();
            conn.del::<_, ()>(list).await.map_err(unavailable)
        })
    }

    /// The reconnect count (see `Inner::epoch`): broadcasts are not numbered here
    /// (the bridge skips repeats by origin and sequence).
    fn watermark(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
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
}
