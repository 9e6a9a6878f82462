//! The Redis engine as the channels' `Broker`: publishes queue for the shard's writer
//! (`writer`), history reads queue behind them, subscriptions go to the bridge.

use super::*;

impl Broker for Shard {
    /// Queued for the channel's writer at once, so the broadcast's place in the
    /// channel's order is fixed by this call, and a busy channel's broadcasts go in
    /// batches without waiting for each other's answers (`writer`).
    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<()> {
        let inner = &self.inner;
        if !inner.connected.load(Ordering::Acquire) {
            return refused("Redis unreachable");
        }
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
                .filter_map(|e| history::history_entry(e))
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

    /// A marker in the stream (`history`): what nodes may still recover stays.
    fn clear_history(&self, key: &ChannelKey) -> EngineResult<()> {
        let inner = self.inner.clone();
        let key = key.clone();
        Box::pin(async move { inner.clear_history(&key).await.map_err(unavailable) })
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
