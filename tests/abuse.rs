//! What one hostile client must not be able to do to others (docs/protocol.md
//! section 9): make every joiner's reply overflow its queue, or flood a channel
//! with frames that cost the server far more than they cost the client.

mod common;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};

fn config(limits: &str) -> String {
    let rule = r#"
[[apps.channels]]
pattern = "chat/*"
public_messaging = { active = true }
settings = { anonymous_clients = true, presence = true, message_history = 25 }
"#;
    test_app_config(limits, "", "", rule)
}

/// Send `frame` `times` times without reading anything, until the server stops
/// taking them (it closed the socket).
async fn flood(c: &mut Client, frame: &Value, times: usize) {
    let text = frame.to_string();
    for _ in 0..times {
        let sent =
            c.ws.send(tokio_tungstenite::tungstenite::Message::Text(text.clone()))
                .await;
        if sent.is_err() {
            break;
        }
    }
}

/// The socket still chats: a message on `channel` comes back as its echo.
async fn still_chats(c: &mut Client, channel: &str) {
    c.message(channel, json!("still here")).await;
    assert_eq!(c.expect("message").await["payload"], json!("still here"));
}

/// Issue 12, item 1: twenty 62 KiB messages (each under the frame limit) used to make
/// every later join with history overflow the default 1 MiB queue: closed with 1013
/// before the ack, again after each SDK reconnect. The ack now carries the newest
/// entries that fit `limits.max_reply_bytes`, oldest first.
#[tokio::test]
async fn a_history_larger_than_the_send_queue_still_answers_every_join() {
    // Entries as large as a frame may be (the entry limit alone would not store them).
    let server = TestServer::with_config(&config("max_history_entry_bytes = 65536"));
    let mut writer = server.client().await;
    writer.join("chat/x", false, false).await;
    let filler = "x".repeat(62 * 1024);
    for i in 0..20 {
        writer
            .message("chat/x", json!({"n": i, "fill": filler}))
            .await;
        writer.expect("message").await;
    }

    let mut joiner = server.client().await;
    let ack = joiner.join("chat/x", true, false).await;
    let history = ack["payload"]["history"].as_array().expect("history list");
    let numbers: Vec<i64> = history
        .iter()
        .map(|f| f["payload"]["n"].as_i64().unwrap())
        .collect();
    // The newest that fit in 256 KiB, oldest first.
    assert!(!numbers.is_empty(), "some history");
    assert_eq!(*numbers.last().unwrap(), 19, "{numbers:?}");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert!(ack.to_string().len() <= 262_144, "the reply fits the limit");

    // The same for a history request, and the socket stays usable.
    joiner
        .send(json!({"action":"history","options":{"channel":"chat/x"},"payload":null}))
        .await;
    let reply = joiner.expect("history").await;
    assert_eq!(
        reply["payload"]["history"].as_array().unwrap().len(),
        numbers.len()
    );
    still_chats(&mut joiner, "chat/x").await;
}

/// A `presence_full` larger than the reply limit lists the first members that fit;
/// the join still succeeds.
#[tokio::test]
async fn a_presence_list_larger_than_the_reply_limit_is_cut_not_fatal() {
    let server = TestServer::with_config(&config("max_reply_bytes = 2048"));
    let mut members = Vec::new();
    for _ in 0..40 {
        let mut c = server.client().await;
        c.join_presence("chat/crowd").await;
        members.push(c);
    }
    let mut joiner = server.client().await;
    let (ack, full) = joiner.join_presence("chat/crowd").await;
    assert_eq!(ack["action"], "join");
    let listed = full["payload"]["presence"].as_array().unwrap().len();
    assert!(listed > 0 && listed < 41, "listed {listed} of 41");
    assert!(full.to_string().len() <= 2048, "{}", full.to_string().len());
    still_chats(&mut joiner, "chat/crowd").await;
}

/// Issue 12, item 3: join, leave and history frames count against
/// `limits.frames_per_minute`; past it a frame has no effect and gets `Rate limit
/// exceeded`, and a client that keeps going to ten times the rate is closed with 1008.
/// Others in the channel are not affected.
#[tokio::test]
async fn a_frame_flood_is_refused_then_closed_with_1008() {
    let server = TestServer::with_config(&config("frames_per_minute = 5"));
    let mut bystander = server.client().await;
    bystander.join_presence("chat/flood").await;

    let mut flooder = server.client().await;
    flooder.join_presence("chat/flood").await; // frame 1
    let joined = bystander.expect("presence_update").await;
    assert_eq!(joined["payload"]["action"], "join");
    for _ in 0..4 {
        flooder
            .send(json!({"action":"history","options":{"channel":"chat/flood"},"payload":null}))
            .await;
        flooder.expect("history").await;
    }
    // The sixth frame is over the rate: refused, with the channel, no effect.
    flooder
        .send(json!({"action":"leave","options":{"channel":"chat/flood"},"payload":null}))
        .await;
    let refused = flooder.recv().await;
    assert_eq!(
        refused,
        json!({"action":"error","options":{"channel":"chat/flood"},"payload":{"message":"Rate limit exceeded"}})
    );
    // Still a member: the leave had no effect, the bystander saw no presence leave.
    bystander.expect_nothing("chat/flood").await;
    // Keep going: 5 taken + 45 refused = ten times the rate, then 1008.
    let ask = json!({"action":"history","options":{"channel":"chat/flood"},"payload":null});
    flood(&mut flooder, &ask, 60).await;
    assert_eq!(flooder.expect_close().await, 1008);
    // The bystander sees the flooder leave (its socket closed) and keeps chatting.
    let leave: Value = bystander.expect("presence_update").await;
    assert_eq!(leave["payload"]["action"], "leave");
    still_chats(&mut bystander, "chat/flood").await;
}

/// Issue 12, item 4: a client that asks for large replies and never reads overflows
/// its queue through the channel's own pushes (history replies, not broadcasts). It is
/// taken out of the channel at once (others with presence see it leave) and its socket
/// is closed, even though it keeps writing.
#[tokio::test]
async fn a_reader_that_never_reads_its_replies_is_dropped_everywhere() {
    let server = TestServer::with_config(&config("max_history_entry_bytes = 65536"));
    let mut writer = server.client().await;
    writer.join_presence("chat/big").await;
    let filler = "x".repeat(60 * 1024);
    for i in 0..5 {
        writer
            .message("chat/big", json!({"n": i, "fill": filler}))
            .await;
        writer.expect("message").await;
    }
    let mut hog = server.client().await;
    hog.join("chat/big", false, true).await;
    hog.expect("presence_full").await;
    assert_eq!(
        writer.expect("presence_update").await["payload"]["action"],
        "join"
    );
    // Each reply is ~300 KiB; the hog never reads them.
    let ask = json!({"action":"history","options":{"channel":"chat/big"},"payload":null});
    flood(&mut hog, &ask, 200).await;
    let left = writer.expect("presence_update").await;
    assert_eq!(left["payload"]["action"], "leave", "{left}");
    still_chats(&mut writer, "chat/big").await;
}

/// Issue 12, item 10: `owner_table` makes an owner-only feed belong to one auth table's
/// user; the same `row_id` in another table is refused.
#[tokio::test]
async fn an_owner_feed_with_owner_table_refuses_the_same_id_of_another_table() {
    let rule = r#"
[[apps.channels]]
pattern = "user:*"
owner_segment = true
owner_table = 7
"#;
    let server = TestServer::with_config(&test_app_config("", "", "", rule));
    let mut owner = server
        .client_with_token(&token(json!({"sub": 42, "dbo_id": 7, "exp": now() + 600})))
        .await;
    owner.join("user:42", false, false).await;
    let mut namesake = server
        .client_with_token(&token(json!({"sub": 42, "dbo_id": 8, "exp": now() + 600})))
        .await;
    namesake
        .send(json!({"action":"join","options":{"channel":"user:42"},"payload":null}))
        .await;
    namesake
        .expect_error("Not allowed to join this channel")
        .await;
}

/// A socket whose request says `X-Forwarded-For: <forwarded_for>`.
async fn connect_from(server: &TestServer, forwarded_for: &str) -> Client {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.url("test").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    Client::from_stream(ws)
}

async fn admitted(c: &mut Client) {
    c.join("chat/ip", false, false).await;
}

/// Issue 12, item 8: `limits.max_connections_per_ip` counts by the client's address,
/// which a trusted proxy forwards (IPv6 per /64); more sockets get 1013 at once.
#[tokio::test]
async fn per_address_limits_count_the_forwarded_client_behind_a_trusted_proxy() {
    let config = test_app_config(
        "max_connections_per_ip = 2",
        "",
        "",
        r#"
[[apps.channels]]
pattern = "chat/*"
settings = { anonymous_clients = true }
"#,
    )
    .replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n",
    );
    let server = TestServer::with_config(&config);
    let mut kept = Vec::new();
    for from in [
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.2",
        "2001:db8::1",
        "2001:db8::2",
        "2001:db8:0:1::1",
    ] {
        let mut c = connect_from(&server, from).await;
        admitted(&mut c).await;
        kept.push(c);
    }
    for over in ["198.51.100.1", "2001:db8::ffff"] {
        let mut c = connect_from(&server, over).await;
        assert_eq!(c.expect_close().await, 1013, "a third socket from {over}");
    }
}

/// The other side: a peer that is not a trusted proxy cannot pick its address with a
/// forged header.
#[tokio::test]
async fn a_forged_forwarded_header_from_an_untrusted_peer_is_ignored() {
    let config = test_app_config(
        "max_connections_per_ip = 2",
        "",
        "",
        r#"
[[apps.channels]]
pattern = "chat/*"
settings = { anonymous_clients = true }
"#,
    )
    .replace("[server]\n", "[server]\ntrusted_proxies = [\"10.9.9.9\"]\n");
    let server = TestServer::with_config(&config);
    let mut a = connect_from(&server, "198.51.100.1").await;
    admitted(&mut a).await;
    let mut b = connect_from(&server, "198.51.100.2").await;
    admitted(&mut b).await;
    let mut c = connect_from(&server, "198.51.100.3").await;
    assert_eq!(
        c.expect_close().await,
        1013,
        "all three came from 127.0.0.1"
    );
}
