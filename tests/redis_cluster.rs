//! Redis Cluster faults (docs/protocol.md sections 9 and 11): a real 3-master
//! Redis Cluster, two broker processes, real WebSocket clients. A master is
//! SIGKILLed and restarted, or a channel's slot is migrated to another master,
//! while a sender on node A publishes on several channels and a member on node B
//! reads them. Every message the sender got no error frame for (accepted) reaches
//! B's member exactly once, in the channel's order, and every channel keeps
//! receiving afterwards. The rest of the cluster suite runs on a Redis Cluster too
//! (`SWITCHBOARD_TEST_REDIS=cluster`, scripts/test-all.sh).

mod cluster_support;
mod common;

use cluster_support::*;
use common::Client;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Channels spread over the 12 partitions (and so over the 3 masters).
const CHANNELS: [&str; 8] = [
    "chat/c0", "chat/c1", "chat/c2", "chat/c3", "chat/c4", "chat/c5", "chat/c6", "chat/c7",
];

async fn connection(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to a cluster node")
}

/// The members hash of `channel` and the master (port) that holds it.
async fn members_key(redis: &Redis, channel: &str) -> (String, u16) {
    for port in redis.shard_ports() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{PREFIX}*demo:m:{channel}"))
            .query_async(&mut connection(port).await)
            .await
            .expect("KEYS");
        if let Some(k) = keys.into_iter().next() {
            return (k, port);
        }
    }
    panic!("no members hash of {channel} on any master");
}

/// `n` numbered messages on each channel, round-robin, from `first`.
async fn send_round(sender: &mut Client, first: usize, n: usize) {
    for i in first..first + n {
        for ch in CHANNELS {
            sender.message(ch, json!({ "i": i })).await;
        }
    }
}

/// Everything both clients got, up to a barrier on every channel (twice: a late,
/// out-of-order delivery still counts), then per channel: what the sender got
/// back (echoes and refusals) and what the member got. Fails on anything lost,
/// repeated or reordered among the accepted.
async fn check_every_channel(sender: &mut Client, member: &mut Client, sent: usize) {
    let mut frames = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        for ch in CHANNELS {
            let seen = channel_barrier(&mut [&mut *sender, &mut *member], 0, ch).await;
            for (all, more) in frames.iter_mut().zip(seen) {
                all.extend(
                    more.into_iter()
                        .filter(|f| f["payload"]["barrier"].is_null()),
                );
            }
        }
    }
    for ch in CHANNELS {
        let on = |f: &&Value| f["options"]["channel"] == ch;
        let mut refused = BTreeSet::new();
        let mut refusals = 0;
        let mut echoed = BTreeMap::<u64, usize>::new();
        for f in frames[0].iter().filter(on) {
            match f["action"].as_str() {
                Some("error") => {
                    assert_eq!(f["payload"]["message"], "Service unavailable", "{f}");
                    refusals += 1;
                }
                Some("message") => {
                    *echoed
                        .entry(f["payload"]["i"].as_u64().unwrap())
                        .or_default() += 1
                }
                _ => panic!("sender on {ch}: unexpected {f}"),
            }
        }
        let delivered: Vec<u64> = frames[1]
            .iter()
            .filter(on)
            .map(|f| {
                assert_eq!(f["action"], "message", "member on {ch}: {f}");
                f["payload"]["i"].as_u64().unwrap()
            })
            .collect();
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "{ch}: the member got messages twice or out of order: {delivered:?}"
        );
        assert!(
            echoed.values().all(|&n| n == 1),
            "{ch}: echoed twice: {echoed:?}"
        );
        // The refused are those never echoed (a refusal names no message).
        for i in 0..sent as u64 {
            if !echoed.contains_key(&i) {
                refused.insert(i);
            }
        }
        assert_eq!(
            refused.len(),
            refusals,
            "{ch}: {refusals} refusals, but {} messages came back to nobody: {refused:?}",
            refused.len()
        );
        let missing: Vec<u64> = echoed
            .keys()
            .filter(|i| !delivered.contains(i))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "{ch}: accepted but not delivered to the member: {missing:?}"
        );
        assert_eq!(
            delivered.last().copied(),
            Some(sent as u64 - 1),
            "{ch}: the channel did not keep receiving"
        );
        eprintln!(
            "{ch}: {sent} sent, {refusals} refused, {} delivered",
            delivered.len()
        );
    }
}

async fn two_nodes_on_every_channel(redis: &Redis) -> (Node, Node, Client, Client) {
    let a = Node::start("A", redis, &Opts::default()).await;
    let b = Node::start("B", redis, &Opts::default()).await;
    let mut sender = a.client().await;
    let mut member = b.client().await;
    for ch in CHANNELS {
        sender.join(ch, false, false).await;
        member.join(ch, false, false).await;
    }
    (a, b, sender, member)
}

/// A master is SIGKILLed in the middle of the traffic and restarted empty (on the
/// same port, with its `nodes.conf`): its channels' publishes are refused while it
/// is down, what it had accepted but not sent is published again, and every
/// channel receives again once it is back.
#[tokio::test]
async fn a_master_killed_and_restarted_loses_no_accepted_message() {
    let mut redis = Redis::start_cluster().await;
    let (a, b, mut sender, mut member) = two_nodes_on_every_channel(&redis).await;
    let victim = redis.shard_ports()[1];
    let mut on_victim = 0;
    for ch in CHANNELS {
        on_victim += usize::from(members_key(&redis, ch).await.1 == victim);
    }
    assert!(
        (1..CHANNELS.len()).contains(&on_victim),
        "{on_victim} of the channels live on the master to kill: pick other names"
    );

    send_round(&mut sender, 0, 100).await;
    redis.kill_server(1);
    a.wait_readyz(503, Duration::from_secs(10)).await;
    redis.restart_server(1).await;
    a.wait_readyz(200, Duration::from_secs(10)).await;
    b.wait_readyz(200, Duration::from_secs(10)).await;
    send_round(&mut sender, 100, 50).await;
    check_every_channel(&mut sender, &mut member, 150).await;
}

/// A channel's slot moves to another master during the traffic
/// (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE` of every key, `SETSLOT …
/// NODE`): the old master drops the nodes' shard subscriptions, the nodes follow
/// the slot, read what they missed from the moved recovery stream, and lose
/// nothing accepted.
#[tokio::test]
async fn a_slot_migrated_during_traffic_loses_no_accepted_message() {
    let redis = Redis::start_cluster().await;
    let (a, b, mut sender, mut member) = two_nodes_on_every_channel(&redis).await;
    let (key, source) = members_key(&redis, CHANNELS[0]).await;
    let target = *redis.shard_ports().iter().find(|&&p| p != source).unwrap();
    let mut src = connection(source).await;
    let mut dst = connection(target).await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&key)
        .query_async(&mut src)
        .await
        .unwrap();
    let src_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut src)
        .await
        .unwrap();
    let dst_id: String = redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut dst)
        .await
        .unwrap();

    send_round(&mut sender, 0, 50).await;
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&src_id)
        .query_async(&mut dst)
        .await
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&dst_id)
        .query_async(&mut src)
        .await
        .unwrap();
    send_round(&mut sender, 50, 50).await;
    let mut moved = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut src)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        moved += keys.len();
        let _: () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(target)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut src)
            .await
            .expect("MIGRATE");
    }
    assert!(moved > 0, "the slot held none of the channel's keys");
    send_round(&mut sender, 100, 50).await;
    // The new owner first, then the old one, then the rest (as redis-cli does).
    let mut order = vec![target, source];
    order.extend(
        redis
            .shard_ports()
            .into_iter()
            .filter(|p| *p != target && *p != source),
    );
    for port in order {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&dst_id)
            .query_async(&mut connection(port).await)
            .await
            .unwrap();
    }
    send_round(&mut sender, 150, 50).await;
    a.wait_readyz(200, Duration::from_secs(10)).await;
    b.wait_readyz(200, Duration::from_secs(10)).await;
    send_round(&mut sender, 200, 50).await;
    check_every_channel(&mut sender, &mut member, 250).await;
    let (_, now_on) = members_key(&redis, CHANNELS[0]).await;
    assert_eq!(now_on, target, "the channel's keys moved");
}
