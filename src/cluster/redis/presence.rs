//! Presence and liveness across nodes: each node heartbeats into a sorted set and
//! keeps a list of what it registered; a node whose heartbeat stops is claimed by
//! exactly one survivor (one ZREM), which removes its records and sends the leaves.

use super::*;

impl Inner {
    /// Write this node's records again (after Redis came back or swept us).
    pub(super) async fn reannounce(&self) -> redis::RedisResult<()> {
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
    async fn heartbeat_and_sweep(self: &Arc<Self>) -> redis::RedisResult<()> {
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
                // As if it left: its webhooks (member_removed, channel_vacated) too.
                let record = match self.forget_member(&key, socket, &node).await {
                    Ok(Some(record)) => record,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(node, socket, error = %e, "a dead node's member not removed");
                        continue;
                    }
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
                        seq: None,
                    };
                    // Through the channel's queue: this node's broadcasts of a channel
                    // must leave in the order of their sequence numbers.
                    let envelope = encode_envelope(&self.next_mid(), &leave);
                    if let Err(e) = self.publish_queued(&key, envelope).await {
                        tracing::warn!(channel, error = %e, "a swept member's leave not announced");
                    }
                    leaves += 1;
                }
            }
            let _: () = conn.del(&node_key).await?;
            self.release_webhook_leases_of(&node).await?;
            tracing::info!(node, entries = entries.len(), leaves, "swept a dead node");
        }
        Ok(())
    }
}

/// A members-hash record, read back.
pub(super) struct ParsedRecord {
    pub(super) presence: bool,
    pub(super) authenticated: bool,
    pub(super) client: SharedJson,
}

/// `node\n<presence><authenticated>\n<client JSON>`
pub(super) fn parse_record(record: &str) -> Option<ParsedRecord> {
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

/// While connected, every third of `presence_ttl_s` (200 ms to 1 s): heartbeat, sweep
/// dead nodes, and forget broadcasts Redis never sent back.
pub(super) async fn heartbeats(inner: Arc<Inner>) {
    let period = (inner.presence_ttl / 3).clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !inner.connected.load(Ordering::Acquire) {
            continue;
        }
        inner.prune_pending();
        inner.ttl_refresh.lock().prune();
        if let Err(e) = inner.heartbeat_and_sweep().await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let r = parse_record("node1\n11\n{\"socketId\":\"x\"}").unwrap();
        assert!(r.presence && r.authenticated);
        assert_eq!(r.client.get(), "{\"socketId\":\"x\"}");
        let r = parse_record("node1\n00\n{}").unwrap();
        assert!(!r.presence && !r.authenticated);
        assert!(parse_record("garbage").is_none());
    }
}
