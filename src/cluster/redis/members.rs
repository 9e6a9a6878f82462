//! Who is in a channel across the cluster, and per-user connection slots: a hash of
//! members per channel (socket id -> node, flags, client JSON), a hash of counts
//! per user (node -> count), each mirrored in the node's own record so that the
//! node that sweeps a dead one can remove exactly what it held.

use super::*;
use crate::cluster::lifecycle;

impl Inner {
    /// Remove a member record (and its entry in `node`'s set); with webhooks on, queue
    /// `member_removed`, and `channel_vacated` when it was the last. Answers the
    /// record when the member was there (the sweep of a dead node sends its leave).
    pub(super) async fn forget_member(
        &self,
        key: &ChannelKey,
        socket_id: &str,
        node: &str,
    ) -> Result<Option<String>, EngineError> {
        let (webhooks, budget) = self.webhooks_on(&key.app);
        let channel_json = match webhooks {
            "1" => serde_json::to_string(&*key.channel).map_err(unavailable)?,
            _ => String::new(),
        };
        let node_entry = format!("{}\n{}\n{}", key.app, key.channel, socket_id);
        let mut conn = self.conn();
        let (record, dropped): (Option<String>, u64) = self
            .member_left_script
            .key(self.members_key(key))
            .key(self.node_key(node))
            .key(self.webhook_stream(&key.app))
            .key(self.webhook_bytes(&key.app))
            .arg(socket_id)
            .arg(&node_entry)
            .arg(webhooks)
            .arg(channel_json)
            .arg(budget)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        lifecycle::dropped_for_room(&key.app, dropped);
        Ok(record)
    }
}

impl Membership for Shard {
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
        let (webhooks, budget) = inner.webhooks_on(&key.app);
        // Encoded only for apps with webhooks on (the script ignores them otherwise).
        let (added, occupied) = if webhooks == "1" {
            (
                lifecycle::member_added(&key.channel, &member.client),
                lifecycle::channel_occupied(&key.channel),
            )
        } else {
            (Bytes::new(), Bytes::new())
        };
        let (stream, bytes) = (
            inner.webhook_stream(&key.app),
            inner.webhook_bytes(&key.app),
        );
        let app = key.app.clone();
        Box::pin(async move {
            let mut conn = inner.conn();
            let dropped: u64 = inner
                .member_joined_script
                .key(&hash)
                .key(inner.node_key(&inner.node_id))
                .key(stream)
                .key(bytes)
                .arg(member.socket_id.as_ref())
                .arg(&record)
                .arg(&entry)
                .arg(webhooks)
                .arg(added.as_ref())
                .arg(occupied.as_ref())
                .arg(budget)
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            lifecycle::dropped_for_room(&app, dropped);
            inner
                .own_members
                .lock()
                .insert((hash, member.socket_id.to_string()), (record, entry));
            Ok(())
        })
    }

    fn member_left(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<()> {
        let inner = self.inner.clone();
        let key = key.clone();
        inner
            .own_members
            .lock()
            .remove(&(inner.members_key(&key), socket_id.to_string()));
        Box::pin(async move {
            let node = inner.node_id.clone();
            inner
                .forget_member(&key, &socket_id, &node)
                .await
                .map(|_| ())
        })
    }

    fn presence(&self, key: &ChannelKey) -> EngineResult<Vec<SharedJson>> {
        let members = self.members(key);
        Box::pin(async move {
            Ok(members
                .await?
                .into_iter()
                .filter(|m| m.presence)
                .map(|m| m.client)
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

    fn live_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<String>> {
        let inner = self.inner.clone();
        let topic_prefix = format!("{}{}:ch:", inner.prefix, app);
        let pattern = format!("{}{}*", glob_escape(&topic_prefix), glob_escape(prefix));
        let min_len = prefix.len();
        Box::pin(async move {
            let mut conn = inner.conn();
            let topics: Vec<String> = redis::cmd("PUBSUB")
                .arg(if inner.sharded_pubsub {
                    "SHARDCHANNELS"
                } else {
                    "CHANNELS"
                })
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            Ok(topics
                .into_iter()
                .filter_map(|t| t.strip_prefix(&topic_prefix).map(str::to_string))
                .filter(|name| name.len() > min_len)
                .collect())
        })
    }

    fn members(&self, key: &ChannelKey) -> EngineResult<Vec<MemberRecord>> {
        let inner = self.inner.clone();
        let hash = inner.members_key(key);
        Box::pin(async move {
            let mut conn = inner.conn();
            let all: HashMap<String, String> = conn.hgetall(hash).await.map_err(unavailable)?;
            Ok(all
                .into_iter()
                .filter_map(|(socket_id, r)| {
                    let r = parse_record(&r)?;
                    Some(MemberRecord {
                        socket_id: Arc::from(socket_id),
                        presence: r.presence,
                        authenticated: r.authenticated,
                        client: r.client,
                    })
                })
                .collect())
        })
    }

    /// Members hashes found with `SCAN` (an operator's question, not a hot path),
    /// counted with one pipelined `HLEN` each.
    fn occupied_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<(String, usize)>> {
        let inner = self.inner.clone();
        let key_prefix = format!("{}{}:m:", inner.prefix, app);
        let pattern = format!("{}{}*", glob_escape(&key_prefix), glob_escape(prefix));
        Box::pin(async move {
            let mut conn = inner.conn();
            let mut keys: Vec<String> = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.hlen(k);
            }
            let counts: Vec<usize> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
            Ok(keys
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .filter_map(|(k, n)| Some((k.strip_prefix(&key_prefix)?.to_string(), n)))
                .collect())
        })
    }
}

impl UserSlots for Shard {
    fn admit_user(&self, app: &str, user: &str, limit: usize) -> EngineResult<bool> {
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
            Ok(admitted == 1)
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
