//! Publishes leave in batches: a channel does not wait for one publish's answer
//! before the next, and one script call carries the batches of many channels. Each
//! channel (topic) has a queue; the shard's writer sends at most `CALLS_IN_FLIGHT`
//! script calls at a time, and what the channels publish while those are at Redis
//! waits in their queues and goes in the next call: one round trip and one script's
//! fixed cost for all of it. The busier Redis is, the bigger the calls, the less a
//! publish costs it.
//!
//! Order is the queue's: a channel has one writer (its actor), which queues in call
//! order, and a channel has at most one call at Redis at a time. History reads queue
//! behind the publishes before them, so a join reads a history that holds every
//! message its channel published before it (as when each publish was awaited).
//!
//! A call is capped in bytes (`BATCH_BYTES`): what one script sends to each
//! subscribed node then fits in one write of Redis's event loop (64 KiB a client),
//! so a Redis that dies leaves no half-sent batch on one node while another node
//! (the sender's) got all of it. Under Redis Cluster a shard is one partition, whose
//! keys share one slot, so a call never spans slots.

use super::*;
use std::collections::VecDeque;

/// At most this many envelope bytes in one script call.
const BATCH_BYTES: usize = 32 * 1024;
/// At most this many broadcasts in one script call.
const BATCH_COUNT: usize = 256;
/// Script calls of one shard at Redis at a time: two, so one is on the wire while
/// Redis runs the other, and the rest gathers for the next.
const CALLS_IN_FLIGHT: usize = 2;

/// KEYS: per channel its topic and its stream. ARGV: TTL (ms) of a stream holding
/// history, then per channel: how many broadcasts, whether to refresh the stream's
/// TTL (`1`/`0`, see `ttl::TtlRefresh`), and per broadcast its envelope and history
/// cap. Every broadcast is appended to its channel's stream once, with its cap (the
/// stream is the history too, `history`), and published with its stream id (so a
/// node that re-subscribes can fetch what it missed). A stream the script creates
/// gets its TTL at once, so no stream is ever left without one.
pub(super) const PUBLISH_LUA: &str = r#"
local a = 2
for k = 1, #KEYS, 2 do
  local stream = KEYS[k + 1]
  local kept, fresh = false, false
  local refresh = ARGV[a + 1] == '1'
  for _ = 1, tonumber(ARGV[a]) do
    local e, h = ARGV[a + 2], ARGV[a + 3]
    local id = redis.call('XADD', stream, 'NOMKSTREAM', 'MAXLEN', '~', RECOVERY_LEN, '*', 'e', e, 'h', h)
    if not id then
      id = redis.call('XADD', stream, '*', 'e', e, 'h', h)
      fresh = true
    end
    if h ~= '0' then kept = true end
    redis.call('PUBLISH', KEYS[k], id .. '\n' .. e)
    a = a + 2
  end
  a = a + 2
  if fresh or refresh then
    if kept then
      redis.call('PEXPIRE', stream, ARGV[1])
    elseif redis.call('PTTL', stream) < RECOVERY_TTL_MS then
      redis.call('PEXPIRE', stream, RECOVERY_TTL_MS)
    end
  end
end
return a
"#;

/// `PUBLISH_LUA` with its constants filled in, and `SPUBLISH` under Redis Cluster.
pub(super) fn publish_lua(sharded_pubsub: bool) -> String {
    let lua = PUBLISH_LUA
        .replace("RECOVERY_LEN", &history::RECOVERY_LEN.to_string())
        .replace(
            "RECOVERY_TTL_MS",
            &ttl::recovery_stream_ttl_ms().to_string(),
        );
    if sharded_pubsub {
        lua.replace("'PUBLISH'", "'SPUBLISH'")
    } else {
        lua
    }
}

/// One broadcast, ready for the script.
pub(super) struct Prepared {
    pub(super) envelope: Vec<u8>,
    pub(super) history_cap: usize,
    /// Its id when this node keeps it until it comes back (see `Pending`).
    pub(super) tracked: Option<String>,
}

impl Prepared {
    pub(super) fn size(&self) -> usize {
        self.envelope.len()
    }
}

pub(super) enum Write {
    Publish(Prepared, oneshot::Sender<Result<(), EngineError>>),
    History(oneshot::Sender<Result<Vec<Vec<u8>>, EngineError>>),
}

/// A channel's queue.
struct Queue {
    key: ChannelKey,
    items: VecDeque<Write>,
    /// A call or read of this channel is at Redis: the next waits for its answer.
    busy: bool,
}

/// The shard's writes: every channel's queue, the channels whose next write may go,
/// and the calls at Redis.
#[derive(Default)]
pub(super) struct Writes {
    queues: HashMap<String, Queue>,
    ready: VecDeque<String>,
    calls: usize,
}

type Batch = Vec<(Prepared, oneshot::Sender<Result<(), EngineError>>)>;

/// What the writer sends next.
enum Step {
    /// One script call: the batches of several channels, by topic.
    Publish(Vec<(String, ChannelKey, Batch)>),
    History(
        String,
        ChannelKey,
        oneshot::Sender<Result<Vec<Vec<u8>>, EngineError>>,
    ),
}

impl Writes {
    fn push(&mut self, topic: String, key: &ChannelKey, write: Write) {
        let queue = self.queues.entry(topic.clone()).or_insert_with(|| Queue {
            key: key.clone(),
            items: VecDeque::new(),
            busy: false,
        });
        queue.items.push_back(write);
        // Listed once: when its first write arrives while it is not at Redis.
        if !queue.busy && queue.items.len() == 1 {
            self.ready.push_back(topic);
        }
    }

    /// The next step, from the channels that are ready; None when none is, or when
    /// the script calls in flight are at their bound (a history read first in line
    /// waits then too: it is not overtaken, and it is rare next to publishes).
    fn next_step(&mut self, queued_bytes: &std::sync::atomic::AtomicUsize) -> Option<Step> {
        if self.calls >= CALLS_IN_FLIGHT {
            return None;
        }
        let mut channels = Vec::new();
        let (mut bytes, mut count) = (0, 0);
        while count < BATCH_COUNT && bytes < BATCH_BYTES {
            let Some(topic) = self.ready.front().cloned() else {
                break;
            };
            let Some(queue) = self.queues.get_mut(&topic) else {
                self.ready.pop_front();
                continue;
            };
            match queue.items.front() {
                None => {
                    self.ready.pop_front();
                    self.queues.remove(&topic);
                }
                Some(Write::History(_)) => {
                    if !channels.is_empty() {
                        break;
                    }
                    self.ready.pop_front();
                    queue.busy = true;
                    let Some(Write::History(done)) = queue.items.pop_front() else {
                        unreachable!("the front is a history read");
                    };
                    // Not a script call: reads do not wait for each other.
                    return Some(Step::History(topic, queue.key.clone(), done));
                }
                Some(Write::Publish(first, _)) => {
                    if !channels.is_empty() && bytes + first.size() > BATCH_BYTES {
                        break;
                    }
                    self.ready.pop_front();
                    queue.busy = true;
                    let mut batch = Vec::new();
                    while count < BATCH_COUNT {
                        let Some(Write::Publish(next, _)) = queue.items.front() else {
                            break;
                        };
                        if !batch.is_empty() && bytes + next.size() > BATCH_BYTES {
                            break;
                        }
                        bytes += next.size();
                        count += 1;
                        if let Some(Write::Publish(next, done)) = queue.items.pop_front() {
                            batch.push((next, done));
                        }
                    }
                    channels.push((topic, queue.key.clone(), batch));
                }
            }
        }
        if channels.is_empty() {
            return None;
        }
        queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.calls += 1;
        Some(Step::Publish(channels))
    }

    /// A step of `topics` is answered (a script call when `call`): their next writes
    /// may go.
    fn finished<'a>(&mut self, call: bool, topics: impl Iterator<Item = &'a String>) {
        if call {
            self.calls -= 1;
        }
        for topic in topics {
            if let Some(queue) = self.queues.get_mut(topic) {
                queue.busy = false;
                if queue.items.is_empty() {
                    self.queues.remove(topic);
                } else {
                    self.ready.push_back(topic.clone());
                }
            }
        }
    }
}

impl Inner {
    /// Queue a write of `key`'s channel, and send what may go.
    pub(super) fn queue_write(self: &Arc<Self>, key: &ChannelKey, write: Write) {
        self.writes.lock().push(self.topic(key), key, write);
        self.send_ready();
    }

    /// Start the steps that may go now.
    fn send_ready(self: &Arc<Self>) {
        loop {
            let step = self.writes.lock().next_step(&self.queued_bytes);
            let Some(step) = step else {
                return;
            };
            actix_rt::spawn(send(self.clone(), step));
        }
    }

    /// Room in the write queues for `bytes` more (`cluster.resend_buffer_bytes`):
    /// when Redis answers slower than the node publishes, new broadcasts are
    /// refused (`Service unavailable` to their sender) rather than queued unbounded.
    pub(super) fn take_queue_room(&self, bytes: usize) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + bytes <= self.queue_limit).then_some(queued + bytes)
            })
            .is_ok()
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

    /// One script call for batches of broadcasts of several channels, each in order.
    pub(super) async fn publish_batches<'a, C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        channels: impl Iterator<Item = (&'a ChannelKey, Vec<(&'a [u8], usize)>)>,
    ) -> redis::RedisResult<i64> {
        let mut invocation = self.publish_script.prepare_invoke();
        invocation.arg(self.history_stream_ttl_ms());
        for (key, batch) in channels {
            let topic = self.topic(key);
            let kept = batch.iter().any(|&(_, cap)| cap > 0);
            let refresh = self.ttl_refresh.lock().due(&topic, kept);
            invocation
                .key(topic)
                .key(self.recovery_stream(key))
                .arg(batch.len())
                .arg(u8::from(refresh));
            for (envelope, cap) in batch {
                invocation.arg(envelope).arg(cap);
            }
        }
        invocation.invoke_async(conn).await
    }
}

/// Send one step, answer its writers, and start what may go next.
async fn send(inner: Arc<Inner>, step: Step) {
    match step {
        Step::History(topic, key, done) => {
            let read = inner.read_history(&key).await;
            let _ = done.send(read.map_err(unavailable));
            inner.writes.lock().finished(false, std::iter::once(&topic));
        }
        Step::Publish(channels) => {
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
                        .publish_batches(
                            &mut conn,
                            channels.iter().map(|(_, key, batch)| {
                                (
                                    key,
                                    batch
                                        .iter()
                                        .map(|(p, _)| (&p.envelope[..], p.history_cap))
                                        .collect(),
                                )
                            }),
                        )
                        .await
                }
            };
            if sent.is_ok() {
                crate::metrics::redis_roundtrip(started.elapsed());
            }
            let mut topics = Vec::with_capacity(channels.len());
            for (topic, _, batch) in channels {
                topics.push(topic);
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
            inner.writes.lock().finished(true, topics.iter());
        }
    }
    inner.send_ready();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn publish(writes: &mut Writes, channel: &str, text: &str) {
        let (done, _) = oneshot::channel();
        let prepared = Prepared {
            envelope: text.as_bytes().to_vec(),
            history_cap: 0,
            tracked: None,
        };
        let key = ChannelKey::new("a", channel);
        writes.push(channel.to_string(), &key, Write::Publish(prepared, done));
    }

    fn read(writes: &mut Writes, channel: &str) {
        let (done, _) = oneshot::channel();
        let key = ChannelKey::new("a", channel);
        writes.push(channel.to_string(), &key, Write::History(done));
    }

    /// A call's channels and their envelopes, in the call's order.
    fn call(step: Option<Step>) -> Vec<(String, Vec<String>)> {
        match step {
            Some(Step::Publish(channels)) => channels
                .into_iter()
                .map(|(topic, _, batch)| {
                    let texts = batch
                        .iter()
                        .map(|(p, _)| String::from_utf8(p.envelope.clone()).unwrap())
                        .collect();
                    (topic, texts)
                })
                .collect(),
            Some(Step::History(topic, ..)) => vec![(topic, vec!["history".into()])],
            None => Vec::new(),
        }
    }

    fn owned(call: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        call.iter()
            .map(|(t, texts)| (t.to_string(), texts.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    /// Channels ready together go in one call, each in its order; a channel at Redis
    /// waits for its answer; at most `CALLS_IN_FLIGHT` calls at a time.
    #[test]
    fn one_call_carries_every_ready_channel_and_a_channel_has_one_call_at_redis() {
        let queued = AtomicUsize::new(1 << 20);
        let mut w = Writes::default();
        publish(&mut w, "x", "x1");
        publish(&mut w, "y", "y1");
        publish(&mut w, "x", "x2");
        assert_eq!(
            call(w.next_step(&queued)),
            owned(&[("x", &["x1", "x2"]), ("y", &["y1"])])
        );
        publish(&mut w, "x", "x3");
        publish(&mut w, "z", "z1");
        assert_eq!(
            call(w.next_step(&queued)),
            owned(&[("z", &["z1"])]),
            "x is at Redis: its x3 waits"
        );
        publish(&mut w, "w", "w1");
        assert!(w.next_step(&queued).is_none(), "two calls in flight");
        w.finished(true, ["x".to_string(), "y".to_string()].iter());
        assert_eq!(
            call(w.next_step(&queued)),
            owned(&[("w", &["w1"]), ("x", &["x3"])])
        );
    }

    /// A history read goes after the publishes queued before it, alone.
    #[test]
    fn a_history_read_waits_for_the_publishes_before_it() {
        let queued = AtomicUsize::new(1 << 20);
        let mut w = Writes::default();
        publish(&mut w, "x", "x1");
        read(&mut w, "x");
        publish(&mut w, "x", "x2");
        assert_eq!(call(w.next_step(&queued)), owned(&[("x", &["x1"])]));
        assert!(w.next_step(&queued).is_none(), "the read waits for x1");
        w.finished(true, ["x".to_string()].iter());
        assert_eq!(call(w.next_step(&queued)), owned(&[("x", &["history"])]));
        assert!(w.next_step(&queued).is_none(), "x2 waits for the read");
        w.finished(false, ["x".to_string()].iter());
        assert_eq!(call(w.next_step(&queued)), owned(&[("x", &["x2"])]));
    }

    /// A call stops at `BATCH_BYTES`; the rest goes in the next.
    #[test]
    fn a_call_is_capped_in_bytes() {
        let queued = AtomicUsize::new(1 << 20);
        let mut w = Writes::default();
        let big = "b".repeat(BATCH_BYTES / 2 + 1);
        publish(&mut w, "x", &big);
        publish(&mut w, "y", &big);
        assert_eq!(call(w.next_step(&queued)).len(), 1);
        assert_eq!(call(w.next_step(&queued)).len(), 1);
    }
}
