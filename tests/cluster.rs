//! The cluster engine (issue 3; docs/protocol.md sections 5, 6 and 9): a real
//! redis-server and two or three real broker processes per test, real WebSocket
//! clients on different nodes. Nothing waits by sleeping: frames are awaited with
//! the harness timeout, readiness is polled in bounded loops, and "exactly once" is
//! proven with a marker message on the same channel (one order per channel on every
//! node, so anything published before the marker arrives before it).

mod cluster_support;
mod common;

use cluster_support::*;
use common::{socket_id, Client, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Join `channel` with presence, in order: each joiner's `presence_full` lists
/// everyone so far, and every earlier joiner gets its `presence_update` join.
async fn presence_group(clients: &mut [&mut Client], channel: &str) -> Vec<String> {
    let mut joined: Vec<String> = Vec::new();
    for i in 0..clients.len() {
        let (ack, full) = clients[i].join_presence(channel).await;
        let id = socket_id(&ack);
        joined.push(id.clone());
        let want: BTreeSet<String> = joined.iter().cloned().collect();
        assert_eq!(
            ids(&full["payload"]["presence"]),
            want,
            "presence_full of joiner {i} on {channel}: {full}"
        );
        for (j, c) in clients[..i].iter_mut().enumerate() {
            let u = c.expect("presence_update").await;
            assert_eq!(u["options"]["channel"], channel, "{u}");
            assert_eq!(u["payload"]["action"], "join", "member {j}: {u}");
            assert_eq!(u["payload"]["presence"], ack["client"], "member {j}: {u}");
        }
    }
    joined
}

async fn send_burst(c: &mut Client, channel: &str, from: &str, n: usize) {
    for i in 0..n {
        c.message(channel, json!({"from": from, "i": i})).await;
    }
}

/// Reads `n` message frames; anything else fails the test.
async fn recv_messages(c: &mut Client, who: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match try_recv(c, WAIT).await {
            Some(f) if f["action"] == "message" => out.push(f),
            Some(f) => panic!("{who}: unexpected frame after {} messages: {f}", out.len()),
            None => panic!(
                "{who}: only {} of {n} messages arrived (none for {WAIT:?}); last: {:?}",
                out.len(),
                out.last()
            ),
        }
    }
    out
}

fn is_event(f: &Value, channel: &str, event: &str) -> bool {
    f["action"] == "event" && f["options"]["channel"] == channel && f["payload"]["event"] == event
}

/// The next frame must be the event `event` on `channel` with `data`.
async fn expect_event(c: &mut Client, who: &str, channel: &str, event: &str, data: &Value) {
    let f = match try_recv(c, WAIT).await {
        Some(f) => f,
        None => panic!("{who}: no event {event:?} on {channel} within {WAIT:?}"),
    };
    assert!(
        is_event(&f, channel, event),
        "{who}: expected event {event:?} on {channel}, got {f}"
    );
    assert_eq!(
        f["payload"],
        json!({"event": event, "data": data, "dbo_id": 0, "row_id": 0}),
        "{who}: {f}"
    );
}

// ---------------------------------------------------------------------------

/// 1,000 messages from two senders on two nodes: every member on both nodes gets
/// all of them exactly once, each sender's in order, and in the same interleaving.
#[tokio::test]
async fn one_order_per_channel_across_nodes() {
    const N: usize = 500;
    const CH: &str = "chat/order";
    let redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    let mut sub_a = a.client().await;
    let mut sub_b = b.client().await;
    let mut send_a = a.client().await;
    let mut send_b = b.client().await;
    for c in [&mut sub_a, &mut sub_b, &mut send_a, &mut send_b] {
        c.join(CH, false, false).await;
    }

    tokio::join!(
        send_burst(&mut send_a, CH, "a", N),
        send_burst(&mut send_b, CH, "b", N)
    );

    let mut sequences: Vec<(&str, Vec<(String, u64)>)> = Vec::new();
    for (who, c) in [
        ("subscriber on A", &mut sub_a),
        ("subscriber on B", &mut sub_b),
        ("sender on A", &mut send_a),
        ("sender on B", &mut send_b),
    ] {
        let frames = recv_messages(c, who, 2 * N).await;
        let seq: Vec<(String, u64)> = frames
            .iter()
            .map(|f| {
                assert_eq!(f["options"]["channel"], CH, "{who}: {f}");
                (
                    f["payload"]["from"].as_str().expect("from").to_string(),
                    f["payload"]["i"].as_u64().expect("i"),
                )
            })
            .collect();
        for from in ["a", "b"] {
            let mine: Vec<u64> = seq
                .iter()
                .filter(|(s, _)| s == from)
                .map(|(_, i)| *i)
                .collect();
            let want: Vec<u64> = (0..N as u64).collect();
            assert_eq!(
                mine, want,
                "{who}: sender {from}'s messages, in order, exactly once"
            );
        }
        sequences.push((who, seq));
    }
    let (first_who, first) = &sequences[0];
    for (who, seq) in &sequences[1..] {
        if let Some(at) = first.iter().zip(seq.iter()).position(|(x, y)| x != y) {
            panic!(
                "{who} and {first_who} saw different orders, first difference at #{at}: \
                 {:?} vs {:?}",
                &seq[at..(at + 5).min(seq.len())],
                &first[at..(at + 5).min(first.len())]
            );
        }
    }
    // Nothing more (no duplicate) on any member.
    expect_quiet(
        &mut [&mut send_a, &mut sub_a, &mut sub_b, &mut send_b],
        0,
        CH,
    )
    .await;
}

/// Members on A and B see each other; join and leave updates cross nodes, for a
/// `leave` action and for a socket that closes.
#[tokio::test]
async fn presence_across_nodes() {
    const CH: &str = "chat/presence";
    let redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    let mut pa = a.client().await;
    let mut pb = b.client().await;
    let mut pa2 = a.client().await;
    let ids_ = presence_group(&mut [&mut pa, &mut pb, &mut pa2], CH).await;
    let (id_a, id_b, id_a2) = (ids_[0].clone(), ids_[1].clone(), ids_[2].clone());

    // A member without presence on B: not listed, gets no presence frames.
    let mut quiet_b = b.client().await;
    quiet_b.join(CH, false, false).await;

    // A second presence member on B, which then leaves with the `leave` action.
    let mut pb2 = b.client().await;
    let (ack, full) = pb2.join_presence(CH).await;
    let id_b2 = socket_id(&ack);
    assert_eq!(
        ids(&full["payload"]["presence"]),
        set(&[&id_a, &id_b, &id_a2, &id_b2]),
        "the member without presence is not listed: {full}"
    );
    for (who, c) in [("pa", &mut pa), ("pb", &mut pb), ("pa2", &mut pa2)] {
        let u = c.expect("presence_update").await;
        assert_eq!(u["payload"]["action"], "join", "{who}: {u}");
        assert_eq!(
            u["payload"]["presence"]["socketId"],
            id_b2.as_str(),
            "{who}: {u}"
        );
    }
    pb2.send(json!({"action":"leave","options":{"channel":CH},"payload":null}))
        .await;
    let left = pb2.expect("leave").await;
    assert_eq!(left["options"]["channel"], CH);
    for (who, c) in [("pa", &mut pa), ("pb", &mut pb), ("pa2", &mut pa2)] {
        let u = c.expect("presence_update").await;
        assert_eq!(u["options"]["channel"], CH, "{who}: {u}");
        assert_eq!(u["payload"]["action"], "leave", "{who}: {u}");
        assert_eq!(
            u["payload"]["presence"]["socketId"],
            id_b2.as_str(),
            "{who}: {u}"
        );
    }

    // pb's socket closes on B: A's presence members get its leave.
    pb.close().await;
    for (who, c) in [("pa", &mut pa), ("pa2", &mut pa2)] {
        let u = c.expect("presence_update").await;
        assert_eq!(u["payload"]["action"], "leave", "{who}: {u}");
        assert_eq!(
            u["payload"]["presence"]["socketId"],
            id_b.as_str(),
            "{who}: {u}"
        );
    }
    // Exactly once, and nothing presence-related for the member without presence.
    expect_quiet(&mut [&mut pa, &mut pa2, &mut quiet_b], 0, CH).await;

    // A new joiner on B sees what is left.
    let mut late = b.client().await;
    let (ack, full) = late.join_presence(CH).await;
    let id_late = socket_id(&ack);
    assert_eq!(
        ids(&full["payload"]["presence"]),
        set(&[&id_a, &id_a2, &id_late]),
        "{full}"
    );
}

/// SIGKILL a node: the others send `leave` for each of its sockets within the
/// presence TTL (+2 s), exactly once, and no ghost stays in `presence_full`.
#[tokio::test]
async fn node_death_sends_leaves_once_within_ttl() {
    const CH: &str = "chat/death";
    let redis = Redis::start().await;
    let opts = Opts::default(); // presence_ttl_s = 3
    let a = Node::start("A", &redis, &opts).await;
    let mut b = Node::start("B", &redis, &opts).await;
    let c = Node::start("C", &redis, &opts).await;

    let mut pa = a.client().await;
    let mut pc = c.client().await;
    let mut pb1 = b.client().await;
    let mut pb2 = b.client().await;
    let group = presence_group(&mut [&mut pa, &mut pc, &mut pb1, &mut pb2], CH).await;
    let dead: BTreeSet<String> = group[2..].iter().cloned().collect();

    b.sigkill();
    let killed = Instant::now();
    let limit = Duration::from_secs(opts.presence_ttl_s + 2);

    let mut slowest = Duration::ZERO;
    for (who, cl) in [("member on A", &mut pa), ("member on C", &mut pc)] {
        let mut leaves: BTreeMap<String, usize> = BTreeMap::new();
        while leaves.len() < dead.len() {
            let f = match try_recv(cl, Duration::from_secs(15)).await {
                Some(f) => f,
                None => panic!(
                    "{who}: got leaves for {:?} of {dead:?} in the {:?} since SIGKILL",
                    leaves.keys().collect::<Vec<_>>(),
                    killed.elapsed()
                ),
            };
            assert_eq!(f["action"], "presence_update", "{who}: {f}");
            assert_eq!(f["payload"]["action"], "leave", "{who}: {f}");
            let id = f["payload"]["presence"]["socketId"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(dead.contains(&id), "{who}: a leave for a live socket: {f}");
            *leaves.entry(id).or_default() += 1;
            assert!(
                leaves.values().all(|n| *n == 1),
                "{who}: double leave: {leaves:?}"
            );
        }
        slowest = slowest.max(killed.elapsed());
    }
    eprintln!("presence converged {slowest:?} after SIGKILL (presence_ttl_s = 3)");
    assert!(
        slowest < limit,
        "the leaves for the dead node's sockets took {slowest:?}, limit {limit:?}"
    );

    // No second leave from another node noticing the death too.
    expect_quiet(&mut [&mut pa, &mut pc], 0, CH).await;

    // No ghost: a new joiner (on A) sees only the living.
    let mut late = a.client().await;
    let (ack, full) = late.join_presence(CH).await;
    let id_late = socket_id(&ack);
    assert_eq!(
        ids(&full["payload"]["presence"]),
        set(&[&group[0], &group[1], &id_late]),
        "presence_full after the node's death: {full}"
    );
    for (who, cl) in [("member on A", &mut pa), ("member on C", &mut pc)] {
        let u = cl.expect("presence_update").await;
        assert_eq!(u["payload"]["action"], "join", "{who}: {u}");
        assert_eq!(
            u["payload"]["presence"]["socketId"],
            id_late.as_str(),
            "{who}: {u}"
        );
    }
    expect_quiet(&mut [&mut pa, &mut pc, &mut late], 0, CH).await;
}

/// SIGTERM a node: its sockets get 1012, the other node's presence members get
/// one `leave` each right away (not after the TTL), and the process exits 0.
#[tokio::test]
async fn graceful_node_stop_sends_leaves_once() {
    const CH: &str = "chat/drain";
    let redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let mut b = Node::start("B", &redis, &opts).await;

    let mut pa = a.client().await;
    let mut pb = b.client().await;
    let group = presence_group(&mut [&mut pa, &mut pb], CH).await;

    b.sigterm();
    let signalled = Instant::now();
    assert_eq!(pb.expect_close().await, 1012, "B's socket on SIGTERM");
    let u = pa.expect("presence_update").await;
    let took = signalled.elapsed();
    assert_eq!(u["payload"]["action"], "leave", "{u}");
    assert_eq!(
        u["payload"]["presence"]["socketId"],
        group[1].as_str(),
        "{u}"
    );
    assert!(
        took < Duration::from_secs(opts.presence_ttl_s),
        "the leave of a drained socket took {took:?}: it should not wait for the TTL sweep"
    );
    let status = b.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "node B exited with {status}");
    expect_quiet(&mut [&mut pa], 0, CH).await;
}

/// History written through A is read through B (join with history and the
/// `history` action), capped at the rule's size, oldest first.
#[tokio::test]
async fn history_written_on_a_is_read_on_b_capped() {
    let redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    // hist/* keeps 25; chat/* keeps 100.
    for (channel, cap, sent) in [("hist/h", 25usize, 30usize), ("chat/hist", 100, 105)] {
        let mut sender = a.client().await;
        let ack = sender.join(channel, false, false).await;
        let sender_id = socket_id(&ack);
        for i in 0..sent {
            sender.message(channel, json!({"i": i})).await;
        }
        // All published: the sender got its own copies back.
        recv_messages(&mut sender, "sender", sent).await;

        let want: Vec<u64> = ((sent - cap) as u64..sent as u64).collect();
        let check = |what: &str, history: &Value| {
            let list = history
                .as_array()
                .unwrap_or_else(|| panic!("{what}: {history}"));
            let got: Vec<u64> = list
                .iter()
                .map(|f| {
                    assert_eq!(f["action"], "message", "{what}: {f}");
                    assert_eq!(f["options"]["channel"], channel, "{what}: {f}");
                    assert_eq!(f["client"]["socketId"], sender_id.as_str(), "{what}: {f}");
                    f["payload"]["i"].as_u64().unwrap()
                })
                .collect();
            assert_eq!(
                got, want,
                "{what} on {channel}: the last {cap}, oldest first"
            );
        };

        let mut reader = b.client().await;
        let ack = reader.join(channel, true, false).await;
        check("join history through B", &ack["payload"]["history"]);
        reader
            .send(json!({"action":"history","options":{"channel":channel},"payload":null}))
            .await;
        let reply = reader.expect("history").await;
        assert_eq!(reply["options"]["channel"], channel);
        check("history action through B", &reply["payload"]["history"]);
    }
}

/// A direct message from A reaches its target on B only; a socket id that is not
/// a member of the channel is refused.
#[tokio::test]
async fn direct_message_across_nodes() {
    const CH: &str = "chat/dm";
    let redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    let mut tb = b.client().await;
    let mut bystander = b.client().await;
    let mut ta = a.client().await;
    tb.join_presence(CH).await;
    bystander.join(CH, false, false).await;
    let (ack_a, full) = ta.join_presence(CH).await;
    let id_a = socket_id(&ack_a);
    tb.expect("presence_update").await;
    let others: Vec<String> = ids(&full["payload"]["presence"])
        .into_iter()
        .filter(|id| *id != id_a)
        .collect();
    assert_eq!(others.len(), 1, "{full}");
    let id_b = others[0].clone();

    ta.send(
        json!({"action":"message","options":{"channel":CH,"socketId":id_b},"payload":{"secret":1}}),
    )
    .await;
    let dm = tb.expect("message").await;
    assert_eq!(dm["options"]["channel"], CH, "{dm}");
    assert_eq!(dm["options"]["socketId"], id_b.as_str(), "{dm}");
    assert_eq!(dm["client"]["socketId"], id_a.as_str(), "{dm}");
    assert_eq!(dm["payload"], json!({"secret":1}), "{dm}");

    // And back, from B to A.
    tb.send(
        json!({"action":"message","options":{"channel":CH,"socketId":id_a},"payload":{"reply":2}}),
    )
    .await;
    let dm = ta.expect("message").await;
    assert_eq!(dm["options"]["socketId"], id_a.as_str(), "{dm}");
    assert_eq!(dm["client"]["socketId"], id_b.as_str(), "{dm}");
    assert_eq!(dm["payload"], json!({"reply":2}), "{dm}");
    // No echo to the senders, nothing for the bystander.
    expect_quiet(&mut [&mut ta, &mut tb, &mut bystander], 0, CH).await;

    // A socket on B that is in another channel only, and an id nobody has.
    let mut elsewhere = b.client().await;
    let ack = elsewhere.join("chat/other", false, false).await;
    let id_elsewhere = socket_id(&ack);
    for target in [id_elsewhere.as_str(), "no-such-socket-id"] {
        ta.send(json!({"action":"message","options":{"channel":CH,"socketId":target},"payload":{"x":3}}))
            .await;
        let err = ta.expect_error("Recipient not found in this channel").await;
        assert_eq!(err["options"]["channel"], CH, "{err}");
    }
    expect_quiet(&mut [&mut elsewhere], 0, "chat/other").await;
    expect_quiet(&mut [&mut ta, &mut tb, &mut bystander], 0, CH).await;
}

/// Backend events with three nodes up: HTTP publish on A, a `chat/*` pattern, a
/// Redis pub/sub envelope and a stream entry, each delivered exactly once per member.
#[tokio::test]
async fn backend_events_reach_every_node_once() {
    let redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;
    let c = Node::start("C", &redis, &opts).await;

    let mut xa = a.client().await;
    let mut xb = b.client().await;
    let mut xc = c.client().await;
    let mut yb = b.client().await; // chat/y is live on B only
    let mut ann = a.client().await; // not under chat/
    for cl in [&mut xa, &mut xb, &mut xc] {
        cl.join("chat/x", false, false).await;
    }
    yb.join("chat/y", false, false).await;
    ann.join("announcements", false, false).await;

    // 1. HTTP publish on A reaches B and C.
    let data = json!({"n": 1});
    let (status, body) = a
        .publish(&json!({"channel":"chat/x","event":"http","data":data}))
        .await;
    assert_eq!(status, 202, "{body}");
    for (who, cl) in [("A", &mut xa), ("B", &mut xb), ("C", &mut xc)] {
        expect_event(cl, who, "chat/x", "http", &data).await;
    }
    expect_quiet(&mut [&mut xa, &mut xb, &mut xc], 0, "chat/x").await;

    // 2. A pattern on A reaches chat/x (A, B, C) and chat/y (B only), once each.
    let data = json!({"n": 2});
    let (status, body) = a
        .publish(&json!({"channel":"chat/*","event":"pattern","data":data}))
        .await;
    assert_eq!(status, 202, "{body}");
    for (who, cl) in [("A", &mut xa), ("B", &mut xb), ("C", &mut xc)] {
        expect_event(cl, who, "chat/x", "pattern", &data).await;
    }
    expect_event(&mut yb, "B (chat/y)", "chat/y", "pattern", &data).await;
    expect_quiet(&mut [&mut xa, &mut xb, &mut xc], 0, "chat/x").await;
    expect_quiet(&mut [&mut yb], 0, "chat/y").await;

    // 3. A Redis pub/sub envelope: every node hears it, each member gets it once.
    let data = json!({"n": 3});
    let receivers = redis
        .publish_envelope(&json!({"app":"demo","channel":"chat/x","event":"redis","data":data}))
        .await;
    assert_eq!(receivers, 3, "every node listens on {PREFIX}publish");
    for (who, cl) in [("A", &mut xa), ("B", &mut xb), ("C", &mut xc)] {
        expect_event(cl, who, "chat/x", "redis", &data).await;
    }
    expect_quiet(&mut [&mut xa, &mut xb, &mut xc], 0, "chat/x").await;
    // A second one: the next event each member gets is this one (no late duplicate
    // of the first), then nothing.
    let data = json!({"n": 33});
    redis
        .publish_envelope(&json!({"app":"demo","channel":"chat/x","event":"redis2","data":data}))
        .await;
    for (who, cl) in [("A", &mut xa), ("B", &mut xb), ("C", &mut xc)] {
        expect_event(cl, who, "chat/x", "redis2", &data).await;
    }
    expect_quiet(&mut [&mut xa, &mut xb, &mut xc], 1, "chat/x").await;

    // 4. The durable path: one stream entry, delivered once per member.
    let data = json!({"n": 4});
    redis
        .xadd_event(&json!({"app":"demo","channel":"chat/x","event":"stream","data":data}))
        .await;
    for (who, cl) in [("A", &mut xa), ("B", &mut xb), ("C", &mut xc)] {
        expect_event(cl, who, "chat/x", "stream", &data).await;
    }
    expect_quiet(&mut [&mut xa, &mut xb, &mut xc], 2, "chat/x").await;
    // And a pattern through the stream reaches chat/y on B too.
    let data = json!({"n": 5});
    redis
        .xadd_event(&json!({"app":"demo","channel":"chat/*","event":"stream-pattern","data":data}))
        .await;
    for (who, cl) in [("A", &mut xa), ("B", &mut xb), ("C", &mut xc)] {
        expect_event(cl, who, "chat/x", "stream-pattern", &data).await;
    }
    expect_event(&mut yb, "B (chat/y)", "chat/y", "stream-pattern", &data).await;
    expect_quiet(&mut [&mut xa, &mut xb, &mut xc], 0, "chat/x").await;
    expect_quiet(&mut [&mut yb], 0, "chat/y").await;

    // The member outside chat/ got none of the chat/* events.
    let seen = ann.drain_until_socket_barrier().await;
    assert!(seen.is_empty(), "announcements member got: {seen:#?}");
}

/// The durable path: an event XADDed while no node ran is published when one starts
/// (`announcements` keeps events in its history, so a later joiner can see it).
#[tokio::test]
async fn stream_event_added_while_no_node_ran_is_delivered() {
    let redis = Redis::start().await;
    let data = json!({"while": "down"});
    redis
        .xadd_event(&json!({"app":"demo","channel":"announcements","event":"boot","data":data}))
        .await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    let mut reader = b.client().await;
    let ack = reader.join("announcements", true, false).await;
    let count = |list: &Value| {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|f| is_event(f, "announcements", "boot"))
            .count()
    };
    let mut live = 0;
    let mut stored = count(&ack["payload"]["history"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored + live == 0 {
        assert!(
            Instant::now() < deadline,
            "the stream entry added while no node ran was not published within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        reader
            .send(json!({"action":"history","options":{"channel":"announcements"},"payload":null}))
            .await;
        let (before, reply) =
            recv_until(&mut reader, "history reply", |f| f["action"] == "history").await;
        live += before
            .iter()
            .filter(|f| is_event(f, "announcements", "boot"))
            .count();
        stored = count(&reply["payload"]["history"]);
    }
    assert_eq!(stored, 1, "the event is stored once in history");
    assert!(live <= 1, "delivered live {live} times");
    // Still once a moment later (nodes A and B share one consumer group).
    let mut again = a.client().await;
    let ack = again.join("announcements", true, false).await;
    assert_eq!(count(&ack["payload"]["history"]), 1, "{ack}");
    let history = &ack["payload"]["history"].as_array().unwrap()[0];
    assert_eq!(history["payload"]["data"], data, "{history}");
}

/// Redis dies while the nodes run: sockets stay, `/readyz` fails, messages and
/// publishes are refused; Redis comes back on the same port: ready again, channels
/// resubscribed, presence re-announced, messages flow between A and B.
#[tokio::test]
async fn redis_outage_refuses_then_recovers() {
    const CH: &str = "chat/down";
    let mut redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    let mut ma = a.client().await;
    let mut mb = b.client().await;
    let group = presence_group(&mut [&mut ma, &mut mb], CH).await;
    ma.message(CH, json!({"n": "before"})).await;
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let f = cl.expect("message").await;
        assert_eq!(f["payload"], json!({"n": "before"}), "{who}: {f}");
    }

    redis.kill();
    let down_a = a.wait_readyz(503, Duration::from_secs(10)).await;
    let down_b = b.wait_readyz(503, Duration::from_secs(10)).await;
    eprintln!("/readyz 503 after Redis died: A {down_a:?}, B then {down_b:?}");

    // Sockets stay connected and answer.
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let seen = cl.drain_until_socket_barrier().await;
        assert!(seen.is_empty(), "{who}: {seen:#?}");
    }
    // Client messages are refused with their channel.
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        cl.message(CH, json!({"n": format!("refused-{who}")})).await;
        let err = cl.expect_error("Service unavailable").await;
        assert_eq!(err["options"]["channel"], CH, "{who}: {err}");
    }
    // HTTP publishes answer 503.
    for (who, node) in [("A", &a), ("B", &b)] {
        let (status, body) = node.publish(&json!({"channel": CH, "data": "x"})).await;
        assert_eq!(status, 503, "{who}: publish while Redis is down: {body}");
    }

    redis.restart().await;
    let back = Instant::now();
    let ready_a = a.wait_readyz(200, Duration::from_secs(10)).await;
    let ready_b = b.wait_readyz(200, Duration::from_secs(10)).await;
    let ready = back.elapsed();

    // Messages flow both ways between A and B again, and nothing refused shows up.
    mb.message(CH, json!({"n": "after-b"})).await;
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let (before, f) = recv_until(cl, "the message sent after recovery", |f| {
            f["action"] == "message"
        })
        .await;
        assert!(
            before.is_empty(),
            "{who}: before the first message: {before:#?}"
        );
        assert_eq!(
            f["payload"],
            json!({"n": "after-b"}),
            "{who}: refused message delivered? {f}"
        );
    }
    let flowing = back.elapsed();
    ma.message(CH, json!({"n": "after-a"})).await;
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let f = cl.expect("message").await;
        assert_eq!(f["payload"], json!({"n": "after-a"}), "{who}: {f}");
    }
    eprintln!(
        "Redis back: /readyz 200 on A after {ready_a:?}, on B {ready:?} after \
         (B polled after A: +{ready_b:?}); first cross-node delivery {flowing:?} after"
    );
    assert!(
        flowing < Duration::from_secs(2),
        "delivery resumed {flowing:?} after Redis was back (issue 3: within 2 s)"
    );

    // Presence was re-announced into the empty Redis.
    let mut late = b.client().await;
    let (ack, full) = late.join_presence(CH).await;
    assert_eq!(
        ids(&full["payload"]["presence"]),
        set(&[&group[0], &group[1], &socket_id(&ack)]),
        "presence_full after the Redis restart: {full}"
    );
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let u = cl.expect("presence_update").await;
        assert_eq!(u["payload"]["action"], "join", "{who}: {u}");
    }
    // The publish API works again.
    let (status, body) = a
        .publish(&json!({"channel": CH, "event": "back", "data": 1}))
        .await;
    assert_eq!(status, 202, "{body}");
    for (who, cl) in [("A", &mut ma), ("B", &mut mb), ("B, late", &mut late)] {
        expect_event(cl, who, CH, "back", &json!(1)).await;
    }
    expect_quiet(&mut [&mut ma, &mut mb, &mut late], 0, CH).await;
}

/// Nodes A and B, and a member of `channel` on each.
async fn a_member_on_each_of_two_nodes(
    redis: &Redis,
    opts: &Opts,
    channel: &str,
) -> (Node, Node, Client, Client) {
    let a = Node::start("A", redis, opts).await;
    let b = Node::start("B", redis, opts).await;
    let mut ma = a.client().await;
    let mut mb = b.client().await;
    ma.join(channel, false, false).await;
    mb.join(channel, false, false).await;
    (a, b, ma, mb)
}

/// Redis is killed in the middle of a burst: every message that got no error frame
/// (accepted) is delivered on the other node, exactly once, after Redis is back.
#[tokio::test]
async fn redis_kill_mid_burst_loses_no_accepted_message() {
    const CH: &str = "chat/burst";
    const N: usize = 2000;
    let mut redis = Redis::start().await;
    let (a, b, mut ma, mut mb) = a_member_on_each_of_two_nodes(&redis, &Opts::default(), CH).await;

    send_burst(&mut ma, CH, "a", N).await;
    // Kill Redis in the middle: once the first echo is back, the rest is in flight.
    let mut early = Vec::new();
    while early
        .iter()
        .filter(|f: &&Value| f["action"] == "message")
        .count()
        < 1
    {
        match try_recv(&mut ma, WAIT).await {
            Some(f) => early.push(f),
            None => panic!("no echo of the burst within {WAIT:?}"),
        }
    }
    redis.kill();
    a.wait_readyz(503, Duration::from_secs(10)).await;
    redis.restart().await;
    a.wait_readyz(200, Duration::from_secs(10)).await;
    b.wait_readyz(200, Duration::from_secs(10)).await;

    let mut seen = channel_barrier(&mut [&mut ma, &mut mb], 0, CH).await;
    // A second barrier: a late (out of order) delivery still counts as delivered.
    let late = channel_barrier(&mut [&mut ma, &mut mb], 1, CH).await;
    for (all, more) in seen.iter_mut().zip(late) {
        all.extend(
            more.into_iter()
                .filter(|f| f["payload"]["barrier"].is_null()),
        );
    }
    let mut refused = 0;
    let mut echoed = BTreeMap::<u64, usize>::new();
    for f in early.iter().chain(&seen[0]) {
        match f["action"].as_str() {
            Some("error") => {
                assert_eq!(f["payload"]["message"], "Service unavailable", "{f}");
                assert_eq!(f["options"]["channel"], CH, "{f}");
                refused += 1;
            }
            Some("message") => {
                *echoed
                    .entry(f["payload"]["i"].as_u64().unwrap())
                    .or_default() += 1
            }
            _ => panic!("sender: unexpected {f}"),
        }
    }
    let mut delivered = BTreeMap::<u64, usize>::new();
    for f in &seen[1] {
        assert_eq!(f["action"], "message", "other node: {f}");
        *delivered
            .entry(f["payload"]["i"].as_u64().unwrap())
            .or_default() += 1;
    }
    let accepted = N - refused;
    // The highest index seen anywhere: missing ones below it are the interesting ones.
    let hi = echoed
        .keys()
        .chain(delivered.keys())
        .max()
        .copied()
        .unwrap_or(0);
    eprintln!(
        "burst of {N} with Redis killed: {refused} refused, {} echoed to the sender, {} delivered on B",
        echoed.len(),
        delivered.len()
    );
    let dups: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once on B: {dups:?}");
    let dups: Vec<_> = echoed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "echoed more than once: {dups:?}");
    assert!(
        delivered.len() >= accepted,
        "{accepted} messages were accepted (no error frame) but only {} reached B \
         (missing from B, up to #{hi}: {:?}; the sender got {} back)",
        delivered.len(),
        (0..=hi)
            .filter(|i| !delivered.contains_key(i))
            .take(20)
            .collect::<Vec<_>>(),
        echoed.len()
    );
    assert!(
        echoed.len() >= accepted,
        "{accepted} messages were accepted (no error frame) but only {} came back to the \
         sender (missing from the sender, up to #{hi}: {:?}; B got {} of them)",
        echoed.len(),
        (0..=hi)
            .filter(|i| !echoed.contains_key(i))
            .take(20)
            .collect::<Vec<_>>(),
        delivered.len()
    );
}

/// The durable stream keeps working after Redis restarts (the consumer group is in
/// the lost data; the nodes' stream connection must come back too).
#[tokio::test]
async fn stream_events_flow_after_redis_restart() {
    const CH: &str = "chat/stream";
    let mut redis = Redis::start().await;
    let opts = Opts::default();
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;
    let mut ma = a.client().await;
    let mut mb = b.client().await;
    ma.join(CH, false, false).await;
    mb.join(CH, false, false).await;

    let data = json!({"n": 1});
    redis
        .xadd_event(&json!({"app":"demo","channel":CH,"event":"before","data":data}))
        .await;
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        expect_event(cl, who, CH, "before", &data).await;
    }

    redis.kill();
    a.wait_readyz(503, Duration::from_secs(10)).await;
    b.wait_readyz(503, Duration::from_secs(10)).await;
    redis.restart().await;
    a.wait_readyz(200, Duration::from_secs(10)).await;
    b.wait_readyz(200, Duration::from_secs(10)).await;

    let data = json!({"n": 2});
    redis
        .xadd_event(&json!({"app":"demo","channel":CH,"event":"after","data":data}))
        .await;
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let f = try_recv(cl, Duration::from_secs(10)).await;
        let Some(f) = f else {
            let mut c = redis.conn().await;
            let info: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(format!("{PREFIX}publish-stream"))
                .query_async(&mut c)
                .await
                .unwrap_or(redis::Value::Nil);
            panic!(
                "{who}: the stream entry added after the Redis restart was not delivered \
                 within 10 s; XINFO GROUPS: {info:?}"
            );
        };
        assert!(is_event(&f, CH, "after"), "{who}: {f}");
    }
    expect_quiet(&mut [&mut ma, &mut mb], 0, CH).await;
}

/// Connect with `token`: Ok when the socket works (a join is acked), Err(close
/// code) when the server closed it first.
async fn try_user(node: &Node, token: &str) -> Result<Client, u16> {
    let mut c = node.client_with_token(token).await;
    c.send(json!({"action":"join","options":{"channel":"chat/u"},"payload":{"history":false,"presence":false}}))
        .await;
    loop {
        match tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["action"] == "join" {
                    return Ok(c);
                }
            }
            Some(Ok(Message::Close(Some(f)))) => return Err(u16::from(f.code)),
            Some(Ok(Message::Close(None))) => return Err(1005),
            Some(Ok(_)) => continue,
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// `max_connections_per_user` holds across the cluster: a user on A is refused
/// (4429) on B, and admitted on B once the socket on A is gone.
#[tokio::test]
async fn per_user_limit_holds_across_nodes() {
    let redis = Redis::start().await;
    let opts = Opts {
        max_connections_per_user: 1,
        ..Opts::default()
    };
    let a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;

    let mut first = try_user(&a, &demo_token(42)).await.expect("user 42 on A");
    assert_eq!(
        try_user(&b, &demo_token(42)).await.err(),
        Some(4429),
        "user 42 again, on B"
    );
    assert_eq!(
        try_user(&a, &demo_token(42)).await.err(),
        Some(4429),
        "user 42 again, on A"
    );
    // Other users and anonymous sockets are not affected.
    let _other = try_user(&b, &demo_token(43)).await.expect("user 43 on B");
    let _anon = b.client().await;

    // The socket on A closes: B admits the user (after a bounded number of tries).
    first.ws.close(None).await.expect("close frame sent");
    loop {
        match tokio::time::timeout(WAIT, first.ws.next())
            .await
            .expect("close answered")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match try_user(&b, &demo_token(42)).await {
            Ok(_) => break,
            Err(code) => {
                assert_eq!(code, 4429);
                assert!(
                    Instant::now() < deadline,
                    "user 42 still refused on B after its socket on A closed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A user's connection counted on a node that dies is released by the sweep: the
/// user is admitted elsewhere within the presence TTL (+2 s).
#[tokio::test]
async fn per_user_count_of_a_dead_node_is_released() {
    let redis = Redis::start().await;
    let opts = Opts {
        max_connections_per_user: 1,
        ..Opts::default()
    };
    let a = Node::start("A", &redis, &opts).await;
    let mut b = Node::start("B", &redis, &opts).await;

    let _on_b = try_user(&b, &demo_token(42)).await.expect("user 42 on B");
    assert_eq!(
        try_user(&a, &demo_token(42)).await.err(),
        Some(4429),
        "user 42 again, on A"
    );

    b.sigkill();
    let killed = Instant::now();
    let limit = Duration::from_secs(opts.presence_ttl_s + 2);
    let mut refusals = 0;
    loop {
        match try_user(&a, &demo_token(42)).await {
            Ok(_) => break,
            Err(code) => {
                assert_eq!(code, 4429);
                refusals += 1;
                assert!(
                    killed.elapsed() < Duration::from_secs(15),
                    "user 42 still refused on A {:?} after its node died ({refusals} tries)",
                    killed.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let took = killed.elapsed();
    eprintln!("the dead node's user count was released after {took:?}");
    assert!(took < limit, "released after {took:?}, limit {limit:?}");
}

/// Redis unreachable at start: the node starts, answers `/healthz`, and `/readyz`
/// fails until Redis is there; then it is ready and works with another node.
#[tokio::test]
async fn node_started_before_redis_becomes_ready_when_it_comes() {
    const CH: &str = "chat/late";
    let mut redis = Redis::unstarted();
    let opts = Opts::default();
    let a = Node::spawn("A", &redis, &opts).await;
    a.wait_readyz(503, START_WITHIN).await;
    assert_eq!(
        common::http_get(a.addr, "/healthz").await.0,
        200,
        "/healthz without Redis"
    );
    // Still not ready a moment later (polled a few times).
    for _ in 0..5 {
        assert_eq!(a.readyz().await, Some(503), "/readyz without Redis");
    }

    redis.restart().await;
    let took = a.wait_readyz(200, Duration::from_secs(10)).await;
    eprintln!("ready {took:?} after Redis came up");
    let b = Node::start("B", &redis, &opts).await;

    let mut ma = a.client().await;
    let mut mb = b.client().await;
    presence_group(&mut [&mut ma, &mut mb], CH).await;
    mb.message(CH, json!({"n": 1})).await;
    for (who, cl) in [("A", &mut ma), ("B", &mut mb)] {
        let f = cl.expect("message").await;
        assert_eq!(f["payload"], json!({"n": 1}), "{who}: {f}");
    }
}

/// The harness itself: a Redis whose port another test's Redis took first exits
/// ("Address already in use") while the other answers PING. Taking that answer as
/// its own pointed a test's nodes at a stranger's Redis, which its owner then
/// killed (a fresh-clone CI run failed so). Starting must fail instead.
#[tokio::test]
async fn the_harness_never_takes_another_redis_for_its_own() {
    let theirs = Redis::start().await;
    let mut ours = Redis::unstarted();
    ours.port = theirs.port;
    let started = ours.try_restart().await;
    assert!(
        started.is_err(),
        "started on a port that another redis-server holds"
    );
    assert!(ping(theirs.port).await, "the other Redis still answers");
}

/// The keys of the channels' members hashes on the Redis at `port`.
async fn member_keys(port: u16) -> BTreeSet<String> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        // `*`: under Redis Cluster a partition's hash tag follows the prefix.
        .arg(format!("{PREFIX}*demo:m:chat/spread-*"))
        .query_async(&mut c)
        .await
        .expect("KEYS");
    keys.into_iter().collect()
}

/// docs/protocol.md section 11: with shards, each channel lives on exactly one of
/// them and the channels spread over all of them, while members on two nodes still
/// see each other and each other's messages (the suite's other tests prove the rest
/// on whichever topology `SWITCHBOARD_TEST_REDIS` names).
#[tokio::test]
async fn each_channel_lives_on_one_shard_and_channels_spread() {
    let redis = Redis::start().await;
    let a = Node::start("A", &redis, &Opts::default()).await;
    let b = Node::start("B", &redis, &Opts::default()).await;
    const CHANNELS: usize = 16;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    for i in 0..CHANNELS {
        let ch = format!("chat/spread-{i}");
        on_a.join(&ch, false, false).await;
        on_b.join(&ch, false, false).await;
        on_a.message(&ch, json!({ "i": i })).await;
        assert_eq!(on_a.expect("message").await["payload"]["i"], i);
        assert_eq!(on_b.expect("message").await["payload"]["i"], i);
    }
    let mut per_shard = Vec::new();
    let mut seen = BTreeSet::new();
    for port in redis.shard_ports() {
        let keys = member_keys(port).await;
        for k in &keys {
            assert!(seen.insert(k.clone()), "{k} is on two shards");
        }
        per_shard.push(keys.len());
    }
    assert_eq!(seen.len(), CHANNELS, "every channel's members are stored");
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "a shard holds no channel: {per_shard:?}"
    );
}

/// docs/protocol.md section 9: a message is accepted once its sender has the echo,
/// but Redis may still hold it unsent for a node that reads slower. Node B is
/// frozen while A's burst is accepted (Redis keeps B's share in its output buffer),
/// then Redis is killed and restarted empty: A publishes again what came back
/// lately, and B delivers every message once, in order, to the member that was in
/// the channel all along. A member that joins after the restart gets none of it.
#[tokio::test]
async fn accepted_messages_a_slow_node_had_not_read_survive_a_redis_restart() {
    const CH: &str = "chat/slow-node";
    const N: usize = 600;
    let mut redis = Redis::start().await;
    let opts = Opts {
        send_queue_bytes: 16 << 20,
        ..Opts::default()
    };
    let (a, b, mut ma, mut mb) = a_member_on_each_of_two_nodes(&redis, &opts, CH).await;

    // 600 × 8 KiB: more than the kernel buffers between Redis and a frozen node
    // hold (and less than B may queue for its member here).
    b.pause();
    let filler = "x".repeat(8192);
    // In steps of 100, reading the echoes: A's own queue to its member is bounded too.
    for step in (0..N).step_by(100) {
        for i in step..step + 100 {
            ma.message(CH, json!({ "i": i, "fill": filler })).await;
        }
        let echoes = recv_messages(&mut ma, "A (sender)", 100).await;
        assert!(echoes
            .iter()
            .zip(step..)
            .all(|(f, i)| f["payload"]["i"] == i));
    }
    redis.kill();
    redis.restart().await;
    // B's member reads while B catches up (else its own queue at B overflows).
    let reader = tokio::spawn(async move {
        let got = recv_messages(&mut mb, "B (member all along)", N).await;
        (mb, got)
    });
    b.resume();
    a.wait_readyz(200, Duration::from_secs(10)).await;
    b.wait_readyz(200, Duration::from_secs(10)).await;
    let (mut mb, got) = reader.await.expect("B's reader");
    let order: Vec<u64> = got
        .iter()
        .map(|f| f["payload"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..N as u64).collect::<Vec<_>>(),
        "B: each once, in order"
    );
    let mut late = b.client().await;
    late.join(CH, false, false).await;
    let seen = channel_barrier(&mut [&mut ma, &mut mb, &mut late], 0, CH).await;
    for (who, frames) in ["A", "B", "late joiner"].iter().zip(&seen) {
        assert!(frames.is_empty(), "{who} got more: {frames:?}");
    }
}
