//! The basic chat path over real sockets: join, message with echo, presence, leave.

mod common;
use common::*;
use serde_json::json;

#[tokio::test]
async fn two_clients_chat_with_echo_and_presence() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    let (ack_a, full_a) = a.join_presence("chat/lobby").await;
    assert_eq!(ack_a["payload"], json!({"history": []}));
    let a_id = socket_id(&ack_a);
    assert_eq!(full_a["payload"]["presence"].as_array().unwrap().len(), 1);

    let (ack_b, full_b) = b.join_presence("chat/lobby").await;
    let b_id = socket_id(&ack_b);
    assert_ne!(a_id, b_id);
    let listed: Vec<_> = full_b["payload"]["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["socketId"].as_str().unwrap().to_string())
        .collect();
    assert!(
        listed.contains(&a_id) && listed.contains(&b_id),
        "{listed:?}"
    );

    let update = a.expect("presence_update").await;
    assert_eq!(update["payload"]["action"], "join");
    assert_eq!(update["payload"]["presence"]["socketId"], b_id.as_str());

    a.message("chat/lobby", json!({"text": "hello"})).await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], json!({"text": "hello"}));
        assert_eq!(m["client"]["socketId"], a_id.as_str());
        assert_eq!(m["options"]["channel"], "chat/lobby");
        assert_eq!(m["options"]["socketId"], serde_json::Value::Null);
    }

    b.send(json!({"action":"leave","options":{"channel":"chat/lobby"},"payload":null}))
        .await;
    let left = b.expect("leave").await;
    assert_eq!(left["options"]["channel"], "chat/lobby");
    let update = a.expect("presence_update").await;
    assert_eq!(update["payload"]["action"], "leave");
    assert_eq!(update["payload"]["presence"]["socketId"], b_id.as_str());
}
