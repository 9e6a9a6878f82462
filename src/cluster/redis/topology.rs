//! Where a shard's Redis is: one server (`cluster.redis_url`, or one of
//! `cluster.redis_shards`), or one partition of a Redis Cluster
//! (`cluster.redis_cluster`, docs/protocol.md section 11).
//!
//! Under Redis Cluster a channel's keys must share a slot for its scripts to run,
//! and pub/sub must be sharded (`SSUBSCRIBE`) to spread over the masters. The
//! engine therefore splits the cluster into `cluster.redis_cluster_partitions`
//! partitions, each a complete shard under one hash tag: every key and topic of a
//! partition is `P{tag}…`, one slot, so every script of the one-Redis engine runs
//! unchanged. The tags are chosen so that their slots are spread evenly over the
//! 16,384 (`partition_tags`): with masters owning equal ranges of slots, as
//! `redis-cli --cluster create` makes them, each master gets an equal share of
//! partitions when their count is a multiple of the masters'.
//!
//! Commands go through the `redis` crate's cluster connection, always to the
//! partition's slot (it follows `MOVED`). Subscriptions and publishes do not: the
//! bridge keeps its own connections to the master that owns the slot now, found
//! with `CLUSTER SLOTS`, and makes them again when the slot moves (the crate's own
//! resubscription lost shard subscriptions in tests here: docs/architecture.md).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// The slot of a key: CRC16 (XMODEM) of its hash tag (what is between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16,384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// One hash tag per partition, the `p`-th with its slot in the `p`-th of `count`
/// equal ranges of slots: the first `p.k` (k = 0, 1, …) that falls there.
/// Deterministic, so every node of every version computes the same tags.
pub fn partition_tags(count: usize) -> Vec<String> {
    let count = count.max(1);
    (0..count)
        .map(|p| {
            let low = (p * SLOTS as usize / count) as u16;
            let high = ((p + 1) * SLOTS as usize / count) as u16;
            (0u32..)
                .map(|k| format!("{p}.{k}"))
                .find(|tag| (low..high).contains(&key_slot(tag.as_bytes())))
                .expect("every range of slots is hit by some tag")
        })
        .collect()
}

/// Where a shard's commands go. Under Redis Cluster every command goes to the
/// partition's slot: every key of a partition is in it, and key-less commands
/// (`SCAN`, `PUBSUB SHARDCHANNELS`, `INFO`) must reach the master that owns it.
#[derive(Clone)]
pub enum Commands {
    /// One Redis server, through a self-healing connection.
    Server(ConnectionManager),
    /// A Redis Cluster, at one slot.
    Cluster { conn: ClusterConnection, slot: u16 },
}

impl Commands {
    fn route(slot: u16) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master))
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Server(conn) => conn.req_packed_command(cmd),
            Commands::Cluster { conn, slot } => {
                let routing = RoutingInfo::SingleNode(Self::route(*slot));
                Box::pin(conn.route_command(cmd.clone(), routing))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Commands::Cluster { conn, slot } => {
                Box::pin(conn.route_pipeline(pipeline.clone(), offset, count, Self::route(*slot)))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Server(conn) => conn.get_db(),
            Commands::Cluster { .. } => 0,
        }
    }
}

/// The master that owns `slot`, from a `CLUSTER SLOTS` answer:
/// `[[first, last, [host, port, id, …], replicas…], …]`.
pub fn owner_of(slots: &Value, slot: u16) -> Option<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(parts) = range else {
            return None;
        };
        let first: u16 = redis::from_redis_value(parts.first()?.clone()).ok()?;
        let last: u16 = redis::from_redis_value(parts.get(1)?.clone()).ok()?;
        if !(first..=last).contains(&slot) {
            return None;
        }
        let Value::Array(master) = parts.get(2)? else {
            return None;
        };
        let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
        let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
        Some((host, port))
    })
}

/// `seed` (a cluster node's URL) pointed at `host:port`: the same scheme,
/// credentials and options, RESP3 when `resp3` (needed to `SSUBSCRIBE` on a
/// connection that also runs commands).
pub fn node_url(seed: &str, host: &str, port: u16, resp3: bool) -> RedisResult<String> {
    let bad =
        |e: String| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "URL", e));
    let mut url = url::Url::parse(seed).map_err(|e| bad(e.to_string()))?;
    // An empty host (a node that does not know its address) is the seed's.
    if !host.is_empty() && host != "?" {
        url.set_host(Some(host)).map_err(|e| bad(e.to_string()))?;
    }
    url.set_port(Some(port))
        .map_err(|()| bad("no port on this URL".into()))?;
    if resp3 {
        let others: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "protocol")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(others)
            .append_pair("protocol", "resp3");
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
    #[test]
    fn slots_match_redis() {
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"bar"),
            "empty tag: whole key"
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    /// Each tag's slot is in its own range, so masters with equal ranges get equal
    /// shares; pinned, because every node must agree on them.
    #[test]
    fn partition_tags_spread_over_the_slots() {
        for count in [1, 2, 3, 12, 16, 64] {
            let tags = partition_tags(count);
            assert_eq!(tags.len(), count);
            for (p, tag) in tags.iter().enumerate() {
                let slot = key_slot(tag.as_bytes()) as usize;
                assert!(
                    slot * count / SLOTS as usize == p,
                    "{count}: {tag} at {slot}"
                );
            }
        }
        assert_eq!(partition_tags(12)[..3], partition_tags(12)[..3].to_vec());
        // With three masters of equal ranges, 12 partitions are 4 each.
        let per_master = partition_tags(12).iter().fold([0; 3], |mut n, tag| {
            n[key_slot(tag.as_bytes()) as usize * 3 / SLOTS as usize] += 1;
            n
        });
        assert_eq!(per_master, [4, 4, 4]);
    }

    #[test]
    fn cluster_slots_name_the_owner() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("10.0.0.2", 7001),
                node("10.0.0.3", 7002),
            ]),
        ]);
        assert_eq!(owner_of(&slots, 0), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(owner_of(&slots, 5461), Some(("10.0.0.2".into(), 7001)));
        assert_eq!(owner_of(&Value::Array(vec![]), 1), None);
    }

    #[test]
    fn node_urls_keep_the_seeds_scheme_and_credentials() {
        assert_eq!(
            node_url("rediss://u:p@seed:6379/?insecure", "10.0.0.2", 7001, true).unwrap(),
            "rediss://u:p@10.0.0.2:7001/?insecure=&protocol=resp3"
        );
        assert_eq!(
            node_url("redis://seed:6379", "h", 1, false).unwrap(),
            "redis://h:1"
        );
    }
}
