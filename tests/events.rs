//! Events published by backends through the HTTP API (docs/protocol.md section 6):
//! status codes, the delivered frame, targeting, pattern channels and history.

mod common;
use common::*;
use serde_json::{json, Value};

const PATH: &str = "/api/apps/test/events";

/// The event frame members must receive.
fn event_frame(channel: &str, event: &str, data: Value, dbo_id: i64, row_id: Value) -> Value {
    json!({
        "action": "event",
        "options": {"channel": channel},
        "payload": {"event": event, "data": data, "dbo_id": dbo_id, "row_id": row_id}
    })
}

async fn publish_ok(server: &TestServer, body: Value) {
    let (status, answer) = server.publish(&body).await;
    assert_eq!(status, 202, "publish {body}: {answer}");
}

/// Publish a marker event to `channel` and require it to be the next frame `c` sees:
/// nothing published earlier reached `c` on this channel.
async fn expect_only_marker(server: &TestServer, c: &mut Client, channel: &str) {
    publish_ok(
        server,
        json!({"channel": channel, "event": "marker", "data": null}),
    )
    .await;
    let f = c.recv().await;
    assert_eq!(
        f,
        event_frame(channel, "marker", Value::Null, 0, json!(0)),
        "expected only the marker on {channel}"
    );
    c.expect_nothing(channel).await;
}

// ---------------------------------------------------------------- delivery

#[tokio::test]
async fn published_event_is_accepted_and_delivered_to_every_member() {
    let server = TestServer::start();
    let mut anon = server.client().await;
    let mut user = server.client_with_token(&user_token(1)).await;
    anon.join("chat/e", false, false).await;
    user.join("chat/e", false, false).await;
    let (status, _) = server
        .publish(&json!({"channel":"chat/e","event":"created","data":{"id":1,"tags":["a"]}}))
        .await;
    assert_eq!(status, 202);
    let expected = event_frame(
        "chat/e",
        "created",
        json!({"id":1,"tags":["a"]}),
        0,
        json!(0),
    );
    assert_eq!(anon.expect("event").await, expected);
    assert_eq!(user.expect("event").await, expected);
}

#[tokio::test]
async fn event_name_is_optional_absent_or_null() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("chat/noname", false, false).await;
    publish_ok(&server, json!({"channel":"chat/noname","data":1})).await;
    publish_ok(
        &server,
        json!({"channel":"chat/noname","event":null,"data":2}),
    )
    .await;
    let absent = c.expect("event").await;
    let null = c.expect("event").await;
    for (f, data) in [(&absent, 1), (&null, 2)] {
        assert_eq!(f["options"], json!({"channel": "chat/noname"}), "{f}");
        // `"event": name?`: no name means the key is absent (or null), never a made-up name.
        let mut payload = f["payload"].as_object().unwrap().clone();
        if payload.get("event") == Some(&Value::Null) {
            payload.remove("event");
        }
        assert_eq!(
            Value::Object(payload),
            json!({"data": data, "dbo_id": 0, "row_id": 0}),
            "{f}"
        );
    }
    // Both spellings of "no name" are delivered the same way.
    assert_eq!(
        absent["payload"].get("event"),
        null["payload"].get("event"),
        "absent: {absent}, null: {null}"
    );
}

#[tokio::test]
async fn event_without_data_delivers_null_data() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("chat/nodata", false, false).await;
    publish_ok(&server, json!({"channel":"chat/nodata","event":"ping"})).await;
    assert_eq!(
        c.expect("event").await,
        event_frame("chat/nodata", "ping", Value::Null, 0, json!(0))
    );
}

#[tokio::test]
async fn array_body_delivers_every_event_in_order() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("chat/arr1", false, false).await;
    a.join("chat/arr2", false, false).await;
    b.join("chat/arr2", false, false).await;
    publish_ok(
        &server,
        json!([
            {"channel":"chat/arr1","event":"e1","data":1},
            {"channel":"chat/arr2","event":"e2","data":2},
            {"channel":"chat/arr1","event":"e3","data":3},
            {"channel":"chat/arr2","event":"e4","data":4}
        ]),
    )
    .await;
    let arr1: Vec<Value> = vec![
        event_frame("chat/arr1", "e1", json!(1), 0, json!(0)),
        event_frame("chat/arr1", "e3", json!(3), 0, json!(0)),
    ];
    let arr2: Vec<Value> = vec![
        event_frame("chat/arr2", "e2", json!(2), 0, json!(0)),
        event_frame("chat/arr2", "e4", json!(4), 0, json!(0)),
    ];
    let mut got_a = Vec::new();
    for _ in 0..4 {
        got_a.push(a.expect("event").await);
    }
    // Order holds per channel (the SDK sees each channel separately).
    let a1: Vec<Value> = got_a
        .iter()
        .filter(|f| f["options"]["channel"] == "chat/arr1")
        .cloned()
        .collect();
    let a2: Vec<Value> = got_a
        .iter()
        .filter(|f| f["options"]["channel"] == "chat/arr2")
        .cloned()
        .collect();
    assert_eq!(a1, arr1);
    assert_eq!(a2, arr2);
    assert_eq!(b.expect("event").await, arr2[0]);
    assert_eq!(b.expect("event").await, arr2[1]);
    b.expect_nothing("chat/arr2").await;
}

#[tokio::test]
async fn many_events_on_one_channel_arrive_in_publish_order() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("chat/order", false, false).await;
    let body: Vec<Value> = (0..20)
        .map(|i| json!({"channel":"chat/order","event":"n","data":i}))
        .collect();
    publish_ok(&server, Value::Array(body)).await;
    for i in 0..20 {
        publish_ok(
            &server,
            json!({"channel":"chat/order","event":"m","data":i}),
        )
        .await;
    }
    for i in 0..20 {
        assert_eq!(c.expect("event").await["payload"]["data"], i);
    }
    for i in 0..20 {
        let f = c.expect("event").await;
        assert_eq!(f["payload"]["event"], "m");
        assert_eq!(f["payload"]["data"], i);
    }
}

// ---------------------------------------------------------------- status codes

#[tokio::test]
async fn wrong_or_missing_api_key_is_401() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("chat/key", false, false).await;
    let body = json!({"channel":"chat/key","event":"x","data":1}).to_string();
    let (status, _) = http_post(server.addr, PATH, Some("wrong-key"), &body).await;
    assert_eq!(status, 401);
    let (status, _) = http_post(server.addr, PATH, None, &body).await;
    assert_eq!(status, 401);
    let (status, _) = http_post(server.addr, PATH, Some(""), &body).await;
    assert_eq!(status, 401);
    // Nothing was delivered.
    expect_only_marker(&server, &mut c, "chat/key").await;
}

/// Issue 12, item 9: an unknown app gets the same 401 as a wrong key (it used to be
/// 404, telling a caller which app hashes exist).
#[tokio::test]
async fn unknown_app_is_401_like_a_wrong_key() {
    let server = TestServer::start();
    let body = json!({"channel":"chat/x","event":"x","data":1}).to_string();
    let (status, answer) =
        http_post(server.addr, "/api/apps/nope/events", Some(API_KEY), &body).await;
    assert_eq!(status, 401, "{answer}");
    let (status, wrong_key) = http_post(server.addr, PATH, Some("wrong-key"), &body).await;
    assert_eq!((status, answer), (401, wrong_key));
}

#[tokio::test]
async fn channel_without_a_rule_is_404() {
    let server = TestServer::start();
    for channel in ["nosuchrule", "other/x", "forumx"] {
        let (status, answer) = server
            .publish(&json!({"channel":channel,"event":"x","data":1}))
            .await;
        assert_eq!(status, 404, "{channel}: {answer}");
    }
}

#[tokio::test]
async fn bad_json_is_400() {
    let server = TestServer::start();
    for body in ["{not json", "", "[{\"channel\":\"chat/x\""] {
        let (status, _) = http_post(server.addr, PATH, Some(API_KEY), body).await;
        assert_eq!(status, 400, "body {body:?}");
    }
}

#[tokio::test]
async fn bad_channel_is_400() {
    let server = TestServer::start();
    let long = format!("chat/{}", "a".repeat(251));
    for channel in [
        json!(""),
        json!("chat/a b"),
        json!("a*b"),
        json!("*"),
        json!(long),
        json!(5),
    ] {
        let (status, answer) = server
            .publish(&json!({"channel":channel,"event":"x","data":1}))
            .await;
        assert_eq!(status, 400, "{channel}: {answer}");
    }
    let (status, _) = server.publish(&json!({"event":"x","data":1})).await;
    assert_eq!(status, 400, "missing channel");
}

#[tokio::test]
async fn body_over_max_publish_bytes_is_413() {
    let config = BASE_CONFIG.replace(
        "messages_per_minute = 0",
        "messages_per_minute = 0\nmax_publish_bytes = 200",
    );
    let server = TestServer::with_config(&config);
    let mut c = server.client().await;
    c.join("chat/big", false, false).await;
    let (status, _) = server
        .publish(&json!({"channel":"chat/big","event":"x","data":"y".repeat(500)}))
        .await;
    assert_eq!(status, 413);
    // Under the limit it is accepted, and the big one was never delivered.
    publish_ok(
        &server,
        json!({"channel":"chat/big","event":"small","data":1}),
    )
    .await;
    assert_eq!(
        c.expect("event").await,
        event_frame("chat/big", "small", json!(1), 0, json!(0))
    );
    c.expect_nothing("chat/big").await;
}

// ---------------------------------------------------------------- targeting

#[tokio::test]
async fn auth_id_event_reaches_only_that_users_sockets() {
    let server = TestServer::start();
    let mut u42 = server.client_with_token(&user_token(42)).await;
    let mut u42_tab = server.client_with_token(&user_token(42)).await;
    let mut u43 = server.client_with_token(&user_token(43)).await;
    let mut anon = server.client().await;
    for c in [&mut u42, &mut u42_tab, &mut u43, &mut anon] {
        c.join("chat/t", false, false).await;
    }
    publish_ok(
        &server,
        json!({"channel":"chat/t","event":"dm","data":{"x":1},"auth_id":42}),
    )
    .await;
    let expected = event_frame("chat/t", "dm", json!({"x":1}), 0, json!(42));
    assert_eq!(u42.expect("event").await, expected);
    assert_eq!(u42_tab.expect("event").await, expected);
    u43.expect_nothing("chat/t").await;
    anon.expect_nothing("chat/t").await;
}

#[tokio::test]
async fn auth_table_restricts_by_dbo_id() {
    let server = TestServer::start();
    let mut table7 = server.client_with_token(&user_token(42)).await;
    let other_table = token(json!({"sub": 42, "dbo_id": 8, "exp": now() + 3600}));
    let mut table8 = server.client_with_token(&other_table).await;
    let mut anon = server.client().await;
    let ack7 = table7.join("chat/tt", false, false).await;
    assert_eq!(
        ack7["client"]["permissions"],
        json!({"dbo_id": 7, "row_id": 42})
    );
    let ack8 = table8.join("chat/tt", false, false).await;
    assert_eq!(
        ack8["client"]["permissions"],
        json!({"dbo_id": 8, "row_id": 42})
    );
    anon.join("chat/tt", false, false).await;

    publish_ok(
        &server,
        json!({"channel":"chat/tt","event":"only7","data":"d","auth_table":7,"auth_id":42}),
    )
    .await;
    assert_eq!(
        table7.expect("event").await,
        event_frame("chat/tt", "only7", json!("d"), 7, json!(42))
    );
    table8.expect_nothing("chat/tt").await;
    anon.expect_nothing("chat/tt").await;
}

#[tokio::test]
async fn auth_id_event_for_nobody_present_reaches_no_one() {
    let server = TestServer::start();
    let mut u1 = server.client_with_token(&user_token(1)).await;
    let mut anon = server.client().await;
    u1.join("chat/none", false, false).await;
    anon.join("chat/none", false, false).await;
    publish_ok(
        &server,
        json!({"channel":"chat/none","event":"x","data":1,"auth_id":999}),
    )
    .await;
    expect_only_marker(&server, &mut u1, "chat/none").await;
    anon.expect("event").await; // the marker
    anon.expect_nothing("chat/none").await;
}

#[tokio::test]
async fn pattern_event_reaches_every_live_channel_with_the_prefix() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut both = server.client().await;
    let mut outside = server.client().await;
    a.join("chat/p1", false, false).await;
    b.join("chat/p2", false, false).await;
    both.join("chat/p1", false, false).await;
    both.join("chat/p2", false, false).await;
    outside.join("mixed/p", false, false).await;
    outside.join("forum", false, false).await;
    outside.join("readonly", false, false).await;

    publish_ok(&server, json!({"channel":"chat/*","event":"all","data":7})).await;
    let e1 = event_frame("chat/p1", "all", json!(7), 0, json!(0));
    let e2 = event_frame("chat/p2", "all", json!(7), 0, json!(0));
    assert_eq!(a.expect("event").await, e1);
    assert_eq!(b.expect("event").await, e2);
    // Each channel gets its own frame, named concretely (never the pattern).
    let mut got = vec![both.expect("event").await, both.expect("event").await];
    got.sort_by_key(|f| f["options"]["channel"].as_str().unwrap().to_string());
    assert_eq!(got, vec![e1, e2]);
    a.expect_nothing("chat/p1").await;
    both.expect_nothing("chat/p1").await;
    for channel in ["mixed/p", "forum", "readonly"] {
        expect_only_marker(&server, &mut outside, channel).await;
    }
}

#[tokio::test]
async fn pattern_for_a_deeper_prefix_skips_shallower_channels() {
    let server = TestServer::start();
    let mut deep = server.client().await;
    let mut shallow = server.client().await;
    deep.join("chat/team/1", false, false).await;
    shallow.join("chat/other", false, false).await;
    publish_ok(
        &server,
        json!({"channel":"chat/team/*","event":"t","data":1}),
    )
    .await;
    assert_eq!(
        deep.expect("event").await,
        event_frame("chat/team/1", "t", json!(1), 0, json!(0))
    );
    expect_only_marker(&server, &mut shallow, "chat/other").await;
}

// ---------------------------------------------------------------- history

#[tokio::test]
async fn events_are_not_stored_in_history_by_default() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("chat/evh", false, false).await;
    publish_ok(&server, json!({"channel":"chat/evh","event":"e","data":1})).await;
    c.expect("event").await;
    c.send(json!({"action":"history","options":{"channel":"chat/evh"},"payload":null}))
        .await;
    let reply = c.expect("history").await;
    assert_eq!(reply["payload"], json!({"history": []}));
    let mut later = server.client().await;
    let ack = later.join("chat/evh", true, false).await;
    assert_eq!(ack["payload"], json!({"history": []}));
}

#[tokio::test]
async fn history_events_stores_events_published_while_nobody_is_joined() {
    let server = TestServer::start();
    publish_ok(
        &server,
        json!({"channel":"readonly","event":"news","data":{"v":1}}),
    )
    .await;
    let expected = event_frame("readonly", "news", json!({"v":1}), 0, json!(0));
    let mut c = server.client().await;
    let ack = c.join("readonly", true, false).await;
    assert_eq!(ack["payload"], json!({"history": [expected]}));
}

#[tokio::test]
async fn history_events_keeps_live_events_in_the_history_reply() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("readonly", false, false).await;
    publish_ok(&server, json!({"channel":"readonly","event":"a","data":1})).await;
    publish_ok(&server, json!({"channel":"readonly","event":"b","data":2})).await;
    let a = c.expect("event").await;
    let b = c.expect("event").await;
    c.send(json!({"action":"history","options":{"channel":"readonly"},"payload":null}))
        .await;
    let reply = c.expect("history").await;
    assert_eq!(
        reply,
        json!({"action":"history","options":{"channel":"readonly"},"payload":{"history":[a, b]}})
    );
}

/// docs/protocol.md section 6: a stored event keeps its audience. An event for user
/// 42 is shown in history to user 42 alone, exactly as live delivery would.
#[tokio::test]
async fn a_stored_event_for_one_user_is_shown_to_that_user_alone() {
    let server = TestServer::start();
    publish_ok(
        &server,
        json!({"channel":"readonly","event":"private-for-42","data":{"secret":"s"},"auth_id":42}),
    )
    .await;
    publish_ok(
        &server,
        json!({"channel":"readonly","event":"public","data":1}),
    )
    .await;
    let private = event_frame(
        "readonly",
        "private-for-42",
        json!({"secret":"s"}),
        0,
        json!(42),
    );
    let public = event_frame("readonly", "public", json!(1), 0, json!(0));

    let mut other = server.client_with_token(&user_token(7)).await;
    let ack = other.join("readonly", true, false).await;
    assert_eq!(
        ack["payload"],
        json!({"history": [public.clone()]}),
        "user 7's join ack"
    );
    other
        .send(json!({"action":"history","options":{"channel":"readonly"},"payload":null}))
        .await;
    let reply = other.expect("history").await;
    assert_eq!(
        reply["payload"],
        json!({"history": [public.clone()]}),
        "user 7's history"
    );

    let mut anonymous = server.client().await;
    let ack = anonymous.join("readonly", true, false).await;
    assert_eq!(
        ack["payload"],
        json!({"history": [public.clone()]}),
        "anonymous join ack"
    );

    let mut owner = server.client_with_token(&user_token(42)).await;
    let ack = owner.join("readonly", true, false).await;
    assert_eq!(
        ack["payload"],
        json!({"history": [private, public]}),
        "user 42's join ack"
    );
}

/// Issue 12, item 9: the key is checked from the headers before the body is read. A
/// caller with a wrong key announcing a 1 MiB body is answered 401 without sending it.
#[tokio::test]
async fn a_wrong_key_is_refused_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start();
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-key\r\n\
         Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut answer))
        .await
        .expect("an answer before the body was sent")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
}
