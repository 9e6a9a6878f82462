//! Stored history is bounded in bytes (issue 12, item 5; docs/protocol.md section 9):
//! a frame over `limits.max_history_entry_bytes` is delivered live but not stored;
//! one node keeps at most `limits.history_memory_bytes` of history, the least
//! recently written channels losing theirs first; and a Redis that is full evicts
//! history (the keys with a TTL) rather than refusing the cluster's work.

mod cluster_support;
mod common;

use cluster_support::{Node, Opts, Redis};
use common::*;
use serde_json::json;

fn config(limits: &str) -> String {
    let rule = r#"
[[apps.channels]]
pattern = "chat/*"
public_messaging = { active = true }
settings = { anonymous_clients = true, message_history = 100 }
"#;
    test_app_config(limits, "", "", rule)
}

#[tokio::test]
async fn a_frame_over_the_entry_limit_is_delivered_but_not_stored() {
    let server = TestServer::with_config(&config("max_history_entry_bytes = 1024"));
    let mut c = server.client().await;
    c.join("chat/big", false, false).await;
    c.message("chat/big", json!({"n": 1})).await;
    c.expect("message").await;
    c.message("chat/big", json!({"n": 2, "fill": "x".repeat(2000)}))
        .await;
    let big = c.expect("message").await;
    assert_eq!(big["payload"]["n"], 2, "delivered live");
    c.message("chat/big", json!({"n": 3})).await;
    c.expect("message").await;
    let mut late = server.client().await;
    let ack = late.join("chat/big", true, false).await;
    let stored: Vec<i64> = ack["payload"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["payload"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(stored, vec![1, 3]);
}

#[tokio::test]
async fn one_node_keeps_history_under_its_byte_budget_oldest_channel_first() {
    let server = TestServer::with_config(&config("history_memory_bytes = 40000"));
    let mut c = server.client().await;
    // Ten channels of ~10 KB each, written in order: only the newest fit in 40 KB.
    for ch in 0..10 {
        let name = format!("chat/budget-{ch}");
        c.join(&name, false, false).await;
        for _ in 0..10 {
            c.message(&name, json!({"fill": "y".repeat(900)})).await;
            c.expect("message").await;
        }
    }
    let mut late = server.client().await;
    let history_len = |ack: &serde_json::Value| ack["payload"]["history"].as_array().unwrap().len();
    let oldest = late.join("chat/budget-0", true, false).await;
    assert_eq!(
        history_len(&oldest),
        0,
        "the least recently written channel lost its history"
    );
    let newest = late.join("chat/budget-9", true, false).await;
    assert_eq!(history_len(&newest), 10, "the newest kept all of it");
}

/// A redis-server that may use `maxmemory` and evicts keys with a TTL first, as
/// `k8s/redis.yaml` runs it.
async fn small_redis(maxmemory: &str) -> Redis {
    Redis::start_with(&[
        "--maxmemory",
        maxmemory,
        "--maxmemory-policy",
        "volatile-lru",
    ])
    .await
}

#[tokio::test]
async fn a_full_redis_evicts_history_and_the_cluster_keeps_chatting() {
    let redis = small_redis("3mb").await;
    let node = Node::start("a", &redis, &Opts::default()).await;
    let mut writer = node.client().await;
    // ~6 MB of history (hist/* keeps 25 a channel) into a Redis of 3 MB.
    let filler = "z".repeat(12_000);
    for ch in 0..20 {
        let name = format!("hist/fill-{ch}");
        writer.join(&name, false, false).await;
        for _ in 0..25 {
            writer.message(&name, json!({"fill": filler})).await;
            let echo = writer.recv().await;
            assert_eq!(
                echo["action"], "message",
                "accepted while Redis is full: {echo}"
            );
        }
        writer
            .send(json!({"action":"leave","options":{"channel":name},"payload":null}))
            .await;
        writer.expect("leave").await;
    }
    // Still serving: joins, presence and messages on a new channel.
    let mut a = node.client().await;
    let mut b = node.client().await;
    a.join_presence("chat/after-full").await;
    b.join_presence("chat/after-full").await;
    a.expect("presence_update").await;
    b.message("chat/after-full", json!("still here")).await;
    assert_eq!(a.expect("message").await["payload"], "still here");
    assert_eq!(node.readyz().await, Some(200));
}

/// One node on its own Redis, with `cluster.resend_buffer_bytes` of 2 KiB.
async fn node_with_a_2_kib_buffer() -> (Redis, Node) {
    let redis = Redis::start().await;
    let opts = Opts {
        extra_cluster: "resend_buffer_bytes = 2048".into(),
        ..Opts::default()
    };
    let node = Node::start("a", &redis, &opts).await;
    (redis, node)
}

/// Issue 12, item 6: the buffer of broadcasts Redis accepted but this node has not
/// seen come back (kept to publish again after a reconnect) is bounded in bytes;
/// when a message would not fit, it is refused with `Service unavailable`, never an
/// older accepted one forgotten.
#[tokio::test]
async fn a_message_the_resend_buffer_cannot_hold_is_refused_not_dropped_later() {
    let (_redis, node) = node_with_a_2_kib_buffer().await;
    let mut c = node.client().await;
    c.join("chat/resend", false, false).await;
    c.message("chat/resend", json!({"fill": "r".repeat(4096)}))
        .await;
    c.expect_error("Service unavailable").await;
    // What fits goes through, and nothing was accepted and lost meanwhile.
    c.message("chat/resend", json!("small")).await;
    assert_eq!(c.expect("message").await["payload"], "small");
}

/// The queue of broadcasts waiting for Redis is bounded in bytes too
/// (`cluster.resend_buffer_bytes`), also for a channel this node has no member of (a
/// backend's event, which no echo confirms): what does not fit is refused with 503,
/// never queued without bound.
#[tokio::test]
async fn an_event_the_write_queue_cannot_hold_is_refused() {
    let (_redis, node) = node_with_a_2_kib_buffer().await;
    let big = json!({"channel": "chat/nobody", "event": "big", "data": {"fill": "e".repeat(4096)}});
    let (status, body) = node.publish(&big).await;
    assert_eq!(status, 503, "{body}");
    let small = json!({"channel": "chat/nobody", "event": "small", "data": 1});
    let (status, body) = node.publish(&small).await;
    assert_eq!(status, 202, "{body}");
}
