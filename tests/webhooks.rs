//! Lifecycle webhooks on one node (docs/protocol.md section 7.1), against a real
//! local HTTP receiver: the events of a scripted session in order, their signature,
//! retries after 500s with the same ids, a receiver that takes 10 s delaying no
//! client, the bounded queue, and a graceful stop that still sends the last events.
//! The cluster cases (one sender, occupied/vacated alternation, a killed node) are
//! in tests/webhooks_cluster.rs.

mod common;
mod webhook_support;

use common::{http_get, socket_id, test_app_config, user_token, TestServer, API_KEY};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use webhook_support::{names, Answer, Receiver};

const RULES: &str = r#"
[[apps.channels]]
pattern = "chat/*"
public_messaging = { active = true }
settings = { anonymous_clients = true, presence = true, message_history = 5 }
"#;

fn server(receiver: &Receiver, limits: &str, app: &str) -> TestServer {
    let app = format!("webhook_url = \"{}\"\n{app}", receiver.url());
    TestServer::with_config(&test_app_config(limits, &app, "", RULES))
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_scripted_session_sends_its_events_in_order() {
    let mut receiver = Receiver::start(Answer::Ok);
    let s = server(&receiver, "", "");
    let mut alice = s.client_with_token(&user_token(7)).await;
    let a = socket_id(&alice.join("chat/w", false, true).await);
    alice.expect("presence_full").await;
    let mut bob = s.client().await;
    let b = socket_id(&bob.join("chat/w", false, false).await);
    alice
        .send(json!({"action":"leave","options":{"channel":"chat/w"},"payload":null}))
        .await;
    alice.expect("leave").await;
    bob.close().await;
    let first = receiver
        .events_until(WAIT, |e| names(e).contains(&"disconnect".to_string()))
        .await;
    alice.close().await;
    let rest = receiver
        .events_until(WAIT, |e| names(e).contains(&"disconnect".to_string()))
        .await;
    let events: Vec<Value> = first.into_iter().chain(rest).collect();
    assert_eq!(
        names(&events),
        vec![
            "connect",
            "channel_occupied:chat/w",
            "member_added:chat/w",
            "connect",
            "member_added:chat/w",
            "member_removed:chat/w",
            "member_removed:chat/w",
            "channel_vacated:chat/w",
            "disconnect",
            "disconnect",
        ],
        "{events:#?}"
    );
    let socket = |i: usize| events[i]["socket_id"].as_str().map(str::to_string);
    let member = |i: usize| {
        events[i]["client"]["socketId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(socket(0).as_deref(), Some(a.as_str()));
    assert_eq!(
        events[0]["client"]["permissions"]["row_id"], 7,
        "{}",
        events[0]
    );
    assert_eq!(events[0]["client"]["extras"]["name"], "user7");
    assert_eq!(member(2), a);
    assert_eq!(socket(3).as_deref(), Some(b.as_str()));
    assert_eq!(member(4), b);
    assert_eq!((member(5), member(6)), (a.clone(), b.clone()));
    assert_eq!(socket(8).as_deref(), Some(b.as_str()));
    assert_eq!(events[8]["code"], 1000);
    assert_eq!(socket(9).as_deref(), Some(a.as_str()));
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "ids are unique");
    assert!(events
        .iter()
        .all(|e| e["time_ms"].as_u64().unwrap() > 1_700_000_000_000));
}

#[tokio::test]
async fn batches_are_signed_with_the_api_key() {
    use hmac::{Hmac, Mac};
    let mut receiver = Receiver::start(Answer::Ok);
    let s = server(&receiver, "", "");
    let _c = s.client().await;
    let batch = receiver.next(WAIT).await.expect("a batch");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(API_KEY.as_bytes()).unwrap();
    mac.update(&batch.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(batch.signature.as_deref(), Some(expected.as_str()));
    assert!(batch.json["time_ms"].as_u64().is_some(), "{}", batch.json);
    assert_eq!(batch.json["events"][0]["name"], "connect");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_events_again_with_backoff() {
    let mut receiver = Receiver::start(Answer::FailFirst(2));
    let s = server(&receiver, "", "");
    let _c = s.client().await;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let batch = receiver.next(WAIT).await.expect("an attempt");
        attempts.push((Instant::now(), batch));
    }
    let ids = |b: &webhook_support::Batch| -> Vec<String> {
        b.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!attempts[0].1.acked && !attempts[1].1.acked && attempts[2].1.acked);
    assert_eq!(
        ids(&attempts[0].1),
        ids(&attempts[1].1),
        "same events, same ids"
    );
    assert_eq!(ids(&attempts[1].1), ids(&attempts[2].1));
    let first_gap = attempts[1].0 - attempts[0].0;
    let second_gap = attempts[2].0 - attempts[1].0;
    assert!(first_gap >= Duration::from_millis(900), "{first_gap:?}");
    assert!(
        second_gap >= Duration::from_millis(1900),
        "backoff doubles: {second_gap:?}"
    );
    // Once acknowledged, never sent again.
    assert!(receiver.next(Duration::from_millis(600)).await.is_none());
    let (_, metrics) = http_get(s.addr, "/metrics").await;
    let retried = metric(&metrics, "switchboard_webhook_events_retried_total");
    assert!(retried >= 2.0, "retried: {retried}");
}

#[tokio::test]
async fn a_receiver_that_takes_10_s_delays_no_client() {
    let receiver = Receiver::start(Answer::Slowly(Duration::from_secs(10)));
    let s = server(&receiver, "", "webhook_timeout_ms = 15000");
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(s.client().await);
    }
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            let started = Instant::now();
            let channel = format!("chat/slow-{round}-{i}");
            c.join(&channel, false, true).await;
            c.expect("presence_full").await;
            c.message(&channel, json!({ "round": round })).await;
            c.expect("message").await;
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(500),
                "join + message took {took:?}"
            );
        }
    }
    drop(receiver);
}

#[tokio::test]
async fn a_full_queue_drops_new_events_and_counts_them() {
    let receiver = Receiver::start(Answer::Slowly(Duration::from_secs(30)));
    let s = server(
        &receiver,
        "webhook_queue_bytes = 2000",
        "webhook_timeout_ms = 60000",
    );
    let mut c = s.client().await;
    for i in 0..30 {
        c.join(&format!("chat/full-{i}"), false, false).await;
    }
    c.message("chat/full-0", json!("still served")).await;
    c.expect("message").await;
    let (_, metrics) = http_get(s.addr, "/metrics").await;
    let dropped = metric_labelled(
        &metrics,
        "switchboard_webhook_events_dropped_total",
        "reason=\"queue_full\"",
    );
    assert!(dropped > 0.0, "dropped: {dropped}\n{metrics}");
    drop(receiver);
}

#[tokio::test]
async fn a_graceful_stop_sends_the_closed_sockets_events_before_exit() {
    let mut receiver = Receiver::start(Answer::Ok);
    let s = server(&receiver, "", "");
    let mut a = s.client().await;
    let id = socket_id(&a.join("chat/bye", false, false).await);
    s.shutdown().await;
    assert_eq!(a.expect_close().await, 1012);
    let events = receiver
        .events_until(WAIT, |e| names(e).contains(&"disconnect".to_string()))
        .await;
    let last = events.last().unwrap();
    assert_eq!(
        (last["socket_id"].as_str(), last["code"].as_u64()),
        (Some(id.as_str()), Some(1012))
    );
    assert!(names(&events).contains(&"channel_vacated:chat/bye".to_string()));
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metric_labelled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
