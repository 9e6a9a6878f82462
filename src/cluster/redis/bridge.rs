//! The node's pub/sub connection (the bridge): (re)connects, (re)subscribes every
//! live channel's topic, routes what arrives to the channel actors, and after a
//! reconnect recovers from each channel's stream what it missed, so delivery has
//! no gap and no repeat.

use super::subscriber::{self, Incoming};
use super::*;

/// A stream entry id `ms-seq`, ordered.
pub(super) type StreamId = (u64, u64);

fn parse_stream_id(s: &str) -> Option<StreamId> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// One live topic on this node: its channel actors and what was delivered to them.
pub(super) struct Route {
    pub(super) recipients: Vec<Recipient<Deliver>>,
    /// The stream id of the last broadcast delivered here: where recovery reads on.
    pub(super) last_id: Option<StreamId>,
    /// When this node subscribed (ms): recovery never reaches further back.
    pub(super) since_ms: u64,
    /// While catching up after a reconnect, live broadcasts wait here.
    pub(super) recovering: Option<Vec<(StreamId, Vec<u8>)>>,
    /// Per origin node, the sequence of the last of its broadcasts delivered here.
    /// A node publishes a channel's broadcasts with growing sequences and Redis
    /// passes them on in that order, so anything at or below it is a repeat: a
    /// broadcast republished after Redis was lost, or read again by recovery.
    pub(super) delivered: HashMap<String, u64>,
}

impl Route {
    /// Deliver unless already delivered. A republished broadcast carries `epoch`
    /// (this shard's last reconnect) as its number, so members that joined since
    /// do not get it (see `Broker::watermark`).
    fn deliver(&mut self, id: StreamId, envelope: &[u8], epoch: u64) {
        let Some(arrived) = decode_envelope(envelope) else {
            tracing::warn!("undecodable broadcast dropped");
            return;
        };
        if !self.first_time(id, &arrived.mid) {
            return;
        }
        let mut broadcast = arrived.broadcast;
        if arrived.republished {
            broadcast.seq = Some(epoch);
        }
        for r in &self.recipients {
            r.do_send(Deliver(broadcast.clone()));
        }
    }

    /// Whether the broadcast `mid` (at stream id `id`) is new here. Repeats are
    /// told by their origin's sequence, not by stream ids going backwards: a
    /// recovery stream that Redis evicted (it has a TTL, and a full Redis drops it
    /// first) starts again with ids that may be smaller within the same millisecond.
    fn first_time(&mut self, id: StreamId, mid: &str) -> bool {
        let Some((origin, seq)) = mid
            .rsplit_once(':')
            .and_then(|(origin, seq)| Some((origin, seq.parse::<u64>().ok()?)))
        else {
            tracing::warn!(mid, "broadcast with a malformed id dropped");
            return false;
        };
        match self.delivered.get_mut(origin) {
            Some(last) if *last >= seq => return false,
            Some(last) => *last = seq,
            None => {
                self.delivered.insert(origin.to_string(), seq);
            }
        }
        self.last_id = Some(id);
        true
    }
}

/// Asks for the bridge, from the engine: topics to (un)subscribe.
pub(super) enum SubCommand {
    Subscribe(String, oneshot::Sender<Result<(), EngineError>>),
    Unsubscribe(String),
}

impl Inner {
    /// Route one pub/sub message to the channel actors of its topic.
    fn route(self: &Arc<Self>, topic: &str, payload: &[u8]) {
        // The node's own topics, named once at start (this runs per message).
        let own = &self.own_topics;
        if topic == own.control {
            return self.on_command(payload);
        }
        if topic == own.answers {
            return self.on_answer(payload);
        }
        if Some(topic) == own.events.as_deref() {
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
            None => route.deliver(id, envelope, self.reconnected_at.load(Ordering::Acquire)),
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
            let found = entries
                .as_ref()
                .map(history::recovery_entries)
                .unwrap_or_default();
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
            let epoch = self.reconnected_at.load(Ordering::Acquire);
            for (id, envelope) in found {
                if let Some(id) = parse_stream_id(&id) {
                    route.deliver(id, &envelope, epoch);
                }
            }
            for (id, envelope) in waiting {
                route.deliver(id, &envelope, epoch);
            }
        }
    }

    /// Whether the Redis server is another than at the last connect (a restart or
    /// a failover: what it had not sent yet may be lost). Remembers the new one.
    async fn redis_restarted(&self) -> redis::RedisResult<bool> {
        let mut conn = self.conn();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_string());
        let mut known = self.run_id.lock();
        let restarted = known.is_some() && *known != run_id;
        *known = run_id;
        Ok(restarted)
    }

    fn stream_of_topic(&self, topic: &str) -> Option<String> {
        let rest = topic.strip_prefix(&self.prefix)?;
        let (app, channel) = rest.split_once(":ch:")?;
        Some(self.recovery_stream(&ChannelKey::new(app, channel)))
    }
}

/// The pub/sub connection: (re)connect, (re)subscribe every live topic, route messages.
pub(super) async fn run(inner: Arc<Inner>, mut commands: mpsc::UnboundedReceiver<SubCommand>) {
    let mut logged_down = false;
    let mut disconnected_at = now_ms();
    // Whether Redis lost its data since the last republish. Kept until a republish
    // succeeds: a reconnect may see the new Redis, then fail a later step (a Redis
    // Cluster answers INFO before every master is back), and the next attempt would
    // see the same run_id and think nothing was lost.
    let mut restarted_since_republish = false;
    loop {
        let connected = match inner.owner_client().await {
            Ok(client) => subscriber::connect(&inner, &client)
                .await
                .map(|(sink, stream)| (client, sink, stream)),
            Err(e) => Err(e),
        };
        let (client, mut sink, mut stream) = match connected {
            Ok(c) => c,
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
        match inner.redis_restarted().await {
            Ok(restarted) => restarted_since_republish |= restarted,
            Err(e) => {
                tracing::warn!(error = %e, "INFO server failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let epoch = inner.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        inner.reconnected_at.store(epoch, Ordering::Release);
        let mut topics: Vec<String> = {
            let mut routes = inner.routes.lock();
            for route in routes.values_mut() {
                route.recovering = Some(Vec::new());
            }
            routes.keys().cloned().collect()
        };
        let own = &inner.own_topics;
        topics.extend(own.events.clone());
        topics.extend([own.control.clone(), own.answers.clone()]);
        if let Err(e) = sink.subscribe_all(&topics).await {
            tracing::warn!(error = %e, "resubscribe failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if let Err(e) = inner.reannounce().await {
            tracing::warn!(error = %e, "re-announcing presence failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if let Err(e) = inner.republish_pending(restarted_since_republish).await {
            tracing::warn!(error = %e, "republishing failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        restarted_since_republish = false;
        // A new Redis may have lost the streams, or their TTLs: set them again.
        inner.ttl_refresh.lock().forget();
        inner.recover(disconnected_at).await;
        match client
            .get_multiplexed_async_connection_with_config(&publish_conn_config())
            .await
        {
            Ok(conn) => *inner.publish_conn.lock() = Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "no connection for publishes");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        inner.connected.store(true, Ordering::Release);
        if logged_down {
            tracing::info!(topics = topics.len(), "Redis reachable again: resubscribed");
        }
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Incoming::Classic(msg) => {
                        inner.route(msg.get_channel_name(), msg.get_payload_bytes())
                    }
                    Incoming::Push(data) => {
                        if let [redis::Value::BulkString(topic), redis::Value::BulkString(payload), ..] =
                            &data[..]
                        {
                            if let Ok(topic) = std::str::from_utf8(topic) {
                                inner.route(topic, payload);
                            }
                        }
                    }
                    Incoming::Unsubscribed(topic) => {
                        if !sink.asked_to_unsubscribe(&topic) {
                            // The slot moved to another master: follow it.
                            tracing::info!(topic, "Redis Cluster moved the slot; reconnecting");
                            break;
                        }
                    }
                    Incoming::Lost => break,
                },
                cmd = commands.recv() => match cmd {
                    Some(SubCommand::Subscribe(topic, ack)) => {
                        let _ = ack.send(sink.subscribe(&topic).await.map_err(unavailable));
                    }
                    Some(SubCommand::Unsubscribe(topic)) => sink.unsubscribe(&topic).await,
                    None => return,
                },
            }
        }
        inner.connected.store(false, Ordering::Release);
        *inner.publish_conn.lock() = None;
        disconnected_at = now_ms();
        tracing::warn!("Redis pub/sub connection lost; reconnecting");
        crate::metrics::redis_reconnect();
        logged_down = true;
    }
}

/// Publishes answer within 2 s or are refused, as commands are.
fn publish_conn_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            recipients: Vec::new(),
            last_id: None,
            since_ms: 0,
            recovering: None,
            delivered: HashMap::new(),
        }
    }

    /// Found by tests/history_limits.rs: after Redis evicted a channel's recovery
    /// stream, the next broadcast got a smaller stream id in the same millisecond and
    /// was dropped as a repeat, though it had been accepted.
    #[test]
    fn a_smaller_stream_id_of_a_new_broadcast_is_not_a_repeat() {
        let mut r = route();
        assert!(r.first_time((1000, 5), "n:1"));
        assert!(r.first_time((1000, 0), "n:2"), "stream recreated");
        assert_eq!(r.last_id, Some((1000, 0)));
        assert!(!r.first_time((1000, 7), "n:1"), "republished: a repeat");
    }

    /// Repeats are told per origin, however many broadcasts came in between; a
    /// node's id may contain no colon but the sequence's.
    #[test]
    fn repeats_are_told_per_origin_by_sequence() {
        let mut r = route();
        for seq in 1..=5000 {
            assert!(r.first_time((1, seq), &format!("a:{seq}")));
        }
        assert!(r.first_time((2, 0), "b:3"), "another origin's");
        assert!(!r.first_time((3, 0), "a:17"), "long ago, still a repeat");
        assert!(!r.first_time((3, 1), "a:5000"));
        assert!(r.first_time((3, 2), "a:5001"));
        assert!(!r.first_time((3, 3), "malformed"));
    }
}
