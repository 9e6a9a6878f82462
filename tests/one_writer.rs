//! One writer per channel: client messages and backend events interleaved at full
//! speed are stored in history in the order they were delivered live, on one node
//! and across two nodes on one Redis (docs/architecture.md, "A backend event").

mod cluster_support;
mod common;

use cluster_support::{Node, Opts, Redis};
use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::future::Future;

/// Messages per sender and events per publishing loop; four of each run at once.
const EACH: usize = 100;
const STREAMS: usize = 4;
/// Extra members on the one-node test.
const AUDIENCE: usize = 200;

const MIX_RULE: &str = r#"
[[apps.channels]]
pattern = "mix/*"
public_messaging = { active = true }
settings = { anonymous_clients = true, message_history = 1000 }
history_events = true
"#;

/// The id of a delivered or stored frame: a message's `payload.id` or an event's name.
fn frame_id(f: &Value) -> String {
    match f["action"].as_str() {
        Some("message") => f["payload"]["id"].as_str().unwrap_or_default().to_string(),
        Some("event") => f["payload"]["event"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        other => panic!("unexpected frame {other:?}: {f}"),
    }
}

/// The sender's messages and the backend's events race; the reader's live order
/// must be the history's order.
async fn live_order_is_history_order<P, F>(
    reader: &mut Client,
    senders: &mut [Client],
    late: &mut Client,
    channel: &str,
    publish: P,
) where
    P: Fn(usize, Value) -> F,
    F: Future<Output = (u16, Value)>,
{
    let send_messages = join_all(
        senders
            .iter_mut()
            .enumerate()
            .map(|(s, sender)| async move {
                for i in 0..EACH {
                    sender
                        .message(channel, json!({ "id": format!("m{s}-{i}") }))
                        .await;
                }
            }),
    );
    let publish = &publish;
    let publish_events = join_all((0..STREAMS).map(|s| async move {
        for i in 0..EACH {
            let body = json!({"channel": channel, "event": format!("e{s}-{i}"), "data": i});
            let (status, answer) = publish(s * EACH + i, body).await;
            assert_eq!(status, 202, "{answer}");
        }
    }));
    tokio::join!(send_messages, publish_events);
    let total = 2 * STREAMS * EACH;
    let mut live = Vec::new();
    while live.len() < total {
        let f = reader.recv().await;
        if f["action"] == "message" || f["action"] == "event" {
            live.push(frame_id(&f));
        }
    }
    let ack = late.join(channel, true, false).await;
    let stored: Vec<String> = ack["payload"]["history"]
        .as_array()
        .expect("history list")
        .iter()
        .map(frame_id)
        .collect();
    assert_eq!(stored.len(), total, "everything stored");
    let interleaved = live
        .windows(2)
        .filter(|w| w[0].starts_with('m') != w[1].starts_with('m'))
        .count();
    assert_eq!(
        stored, live,
        "history order = live order ({interleaved} switches)"
    );
}

#[tokio::test]
async fn one_node_stores_what_it_delivers_in_the_same_order() {
    let config = test_app_config("", "", "", MIX_RULE);
    let server = TestServer::with_config(&config);
    let mut reader = server.client().await;
    let mut late = server.client().await;
    reader.join("mix/one", false, false).await;
    // Members that make each delivery cost something, so messages queue up at the
    // channel while events arrive: the moment two writers would disagree.
    let mut audience = Vec::new();
    for _ in 0..AUDIENCE {
        let mut member = server.client().await;
        member.join("mix/one", false, false).await;
        audience.push(member);
    }
    let mut senders = Vec::new();
    for _ in 0..STREAMS {
        let mut sender = server.client().await;
        sender.join("mix/one", false, false).await;
        senders.push(sender);
    }
    live_order_is_history_order(
        &mut reader,
        &mut senders,
        &mut late,
        "mix/one",
        |_, body| {
            let server = &server;
            async move { server.publish(&body).await }
        },
    )
    .await;
}

#[tokio::test]
async fn two_nodes_store_what_they_deliver_in_the_same_order() {
    let redis = Redis::start().await;
    let opts = Opts {
        extra_rules: MIX_RULE.to_string(),
        ..Opts::default()
    };
    let a = Node::start("a", &redis, &opts).await;
    let b = Node::start("b", &redis, &opts).await;
    let mut reader = a.client().await;
    let mut late = a.client().await;
    reader.join("mix/two", false, false).await;
    let mut senders = Vec::new();
    for s in 0..STREAMS {
        let mut sender = if s % 2 == 0 {
            b.client().await
        } else {
            a.client().await
        };
        sender.join("mix/two", false, false).await;
        senders.push(sender);
    }
    live_order_is_history_order(
        &mut reader,
        &mut senders,
        &mut late,
        "mix/two",
        |i, body| {
            let node = if i % 2 == 0 { &a } else { &b };
            async move { node.publish(&body).await }
        },
    )
    .await;
}
