//! The server API for backends (docs/protocol.md section 10) on one node: every
//! endpoint against real sockets, and every refusal. The cluster-wide answers
//! (two nodes, one Redis) are in tests/server_api_cluster.rs.

mod common;

use common::{http_request, socket_id, user_token, TestServer, API_KEY, BASE_CONFIG};
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-token-for-tests";

fn server() -> TestServer {
    let config = BASE_CONFIG.replacen(
        "drain_s = 1",
        &format!("drain_s = 1\nadmin_token = \"{ADMIN_TOKEN}\""),
        1,
    );
    TestServer::with_config(&config)
}

async fn get(s: &TestServer, path: &str) -> (u16, Value) {
    http_request(s.addr, "GET", path, Some(API_KEY), "").await
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    http_request(s.addr, "POST", path, Some(API_KEY), &body.to_string()).await
}

/// The socket ids of a list of `client` objects.
fn ids(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|c| c["socketId"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn channels_lists_occupied_channels_with_their_sockets_sorted() {
    let s = server();
    let (mut a, mut b, mut c) = (s.client().await, s.client().await, s.client().await);
    a.join("chat/b", false, false).await;
    b.join("chat/b", false, false).await;
    c.join("chat/a", false, false).await;
    c.join("forum", false, false).await;

    let (status, body) = get(&s, "/api/apps/test/channels").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"channels": [
            {"channel": "chat/a", "sockets": 1},
            {"channel": "chat/b", "sockets": 2},
            {"channel": "forum", "sockets": 1},
        ]})
    );
    let (_, body) = get(&s, "/api/apps/test/channels?prefix=chat%2F").await;
    assert_eq!(
        body["channels"].as_array().unwrap().len(),
        2,
        "prefix filters: {body}"
    );

    // A member that left is not counted (awaited through the presence `leave` that
    // the channel sends once it has forgotten the member).
    let (mut d, mut e) = (s.client().await, s.client().await);
    d.join_presence("chat/c").await;
    e.join_presence("chat/c").await;
    d.expect("presence_update").await;
    e.send(json!({"action":"leave","options":{"channel":"chat/c"},"payload":null}))
        .await;
    let update = d.expect("presence_update").await;
    assert_eq!(update["payload"]["action"], "leave");
    let (_, body) = get(&s, "/api/apps/test/channels?prefix=chat/c").await;
    assert_eq!(
        body,
        json!({"channels": [{"channel": "chat/c", "sockets": 1}]})
    );
}

#[tokio::test]
async fn presence_lists_the_members_that_asked_for_it() {
    let s = server();
    let (mut a, mut b, mut c) = (s.client().await, s.client().await, s.client().await);
    let (ack_a, _) = a.join_presence("chat/p").await;
    let (ack_b, _) = b.join_presence("chat/p").await;
    c.join("chat/p", false, false).await;
    let (status, body) = get(&s, "/api/apps/test/presence?channel=chat/p").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], "chat/p");
    let mut want = vec![socket_id(&ack_a), socket_id(&ack_b)];
    want.sort();
    assert_eq!(ids(&body["presence"]), want);

    // A rule with presence off answers [] even with members.
    let mut d = s.client().await;
    d.send(json!({"action":"join","options":{"channel":"readonly"},"payload":{"presence":true}}))
        .await;
    d.expect("join").await;
    let (status, body) = get(&s, "/api/apps/test/presence?channel=readonly").await;
    assert_eq!(
        (status, body),
        (200, json!({"channel":"readonly","presence":[]}))
    );
}

#[tokio::test]
async fn presence_stats_counts_sockets_and_distinct_users() {
    let s = server();
    let mut clients = vec![
        s.client_with_token(&user_token(1)).await,
        s.client_with_token(&user_token(1)).await,
        s.client_with_token(&user_token(2)).await,
        s.client().await,
    ];
    for c in &mut clients {
        c.join("mixed/room", false, false).await;
    }
    let (status, body) = get(&s, "/api/apps/test/presence_stats?channel=mixed/room").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"channel":"mixed/room","sockets":4,"users":2}));
}

/// The `data` of each event frame.
fn data_of(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| f["payload"]["data"].clone())
        .collect()
}

#[tokio::test]
async fn history_is_unfiltered_newest_last_and_limited() {
    let s = server();
    let mut a = s.client().await;
    a.join("readonly", false, false).await;
    // An event for user 9 alone: a history reply to `a` would not show it, the API does.
    for (i, target) in [(1, None), (2, Some(9)), (3, None)] {
        let mut event = json!({"channel":"readonly","event":"e","data":i});
        if let Some(user) = target {
            event["auth_id"] = json!(user);
        }
        assert_eq!(s.publish(&event).await.0, 202);
    }
    let live = data_of(&a.drain_until_barrier("readonly").await);
    assert_eq!(
        live,
        vec![json!(1), json!(3)],
        "user 9's event is not for `a`"
    );
    let (status, body) = get(&s, "/api/apps/test/history?channel=readonly").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        data_of(body["history"].as_array().unwrap()),
        vec![json!(1), json!(2), json!(3)]
    );
    let (_, body) = get(&s, "/api/apps/test/history?channel=readonly&limit=2").await;
    assert_eq!(
        data_of(body["history"].as_array().unwrap()),
        vec![json!(2), json!(3)],
        "the newest two, oldest first"
    );
}

#[tokio::test]
async fn deleting_history_leaves_nothing_for_later_joins() {
    let s = server();
    let mut a = s.client().await;
    a.join("chat/h", false, false).await;
    for i in 0..3 {
        a.message("chat/h", json!({ "n": i })).await;
        a.expect("message").await;
    }
    let (status, _) = http_request(
        s.addr,
        "DELETE",
        "/api/apps/test/history?channel=chat/h",
        Some(API_KEY),
        "",
    )
    .await;
    assert_eq!(status, 204);
    let mut b = s.client().await;
    let ack = b.join("chat/h", true, false).await;
    assert_eq!(ack["payload"]["history"], json!([]), "{ack}");
    let (_, body) = get(&s, "/api/apps/test/history?channel=chat/h").await;
    assert_eq!(body["history"], json!([]));
    // New messages are stored again.
    a.message("chat/h", json!({"n": "after"})).await;
    a.expect("message").await;
    let (_, body) = get(&s, "/api/apps/test/history?channel=chat/h").await;
    assert_eq!(body["history"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn disconnect_closes_a_socket_or_every_socket_of_a_user() {
    let s = server();
    let mut one = s.client().await;
    let mut bystander = s.client().await;
    let ack = one.join("chat/d", false, false).await;
    bystander.join("chat/d", false, false).await;
    let (status, body) = post(
        &s,
        "/api/apps/test/disconnect",
        json!({"socket_id": socket_id(&ack)}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    assert_eq!(one.expect_close().await, 4401);

    let mut tabs = vec![
        s.client_with_token(&user_token(5)).await,
        s.client_with_token(&user_token(5)).await,
    ];
    let mut other_user = s.client_with_token(&user_token(6)).await;
    let (status, body) = post(
        &s,
        "/api/apps/test/disconnect",
        json!({"auth_id": 5, "auth_table": 7, "reconnect": true}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"disconnected": 2})));
    for tab in &mut tabs {
        assert_eq!(tab.expect_close().await, 4000, "reconnect: true");
    }
    // A different auth table is a different user: nobody.
    let (_, body) = post(
        &s,
        "/api/apps/test/disconnect",
        json!({"auth_id": 6, "auth_table": 8}),
    )
    .await;
    assert_eq!(body, json!({"disconnected": 0}));
    // The others are untouched.
    bystander.message("chat/d", json!("still here")).await;
    bystander.expect("message").await;
    other_user.join("chat/d", false, false).await;
}

#[tokio::test]
async fn unsubscribe_revokes_then_leaves_and_others_see_the_leave() {
    let s = server();
    let mut target = s.client_with_token(&user_token(3)).await;
    let mut watcher = s.client().await;
    let (ack, _) = target.join_presence("chat/u").await;
    watcher.join_presence("chat/u").await;
    target.expect("presence_update").await;
    let (status, body) = post(
        &s,
        "/api/apps/test/unsubscribe",
        json!({"channel": "chat/u", "auth_id": 3}),
    )
    .await;
    assert_eq!((status, body), (200, json!({"unsubscribed": 1})));
    let revoked = target.expect_error("Channel access revoked").await;
    assert_eq!(revoked["options"]["channel"], "chat/u");
    let leave = target.expect("leave").await;
    assert_eq!(leave["options"]["channel"], "chat/u");
    let update = watcher.expect("presence_update").await;
    assert_eq!(update["payload"]["action"], "leave");
    assert_eq!(update["payload"]["presence"]["socketId"], socket_id(&ack));
    // It is out: the channel's messages no longer reach it, and the socket stays open.
    watcher.message("chat/u", json!("not for you")).await;
    watcher.expect("message").await;
    assert_eq!(
        target.drain_until_socket_barrier().await,
        Vec::<Value>::new()
    );
    let (_, body) = get(&s, "/api/apps/test/presence_stats?channel=chat/u").await;
    assert_eq!(body["sockets"], 1);
}

type Refusal = (
    &'static str,
    &'static str,
    Option<&'static str>,
    String,
    u16,
    &'static str,
);

#[tokio::test]
async fn refusals_name_their_reason_and_are_never_500() {
    let s = server();
    // (method, path, bearer, body, status, the error text's start)
    let cases: Vec<Refusal> = vec![
        (
            "GET",
            "/api/apps/nope/channels",
            Some(API_KEY),
            String::new(),
            401,
            "invalid API key",
        ),
        (
            "GET",
            "/api/apps/test/channels",
            Some("wrong"),
            String::new(),
            401,
            "invalid API key",
        ),
        (
            "GET",
            "/api/apps/test/channels",
            None,
            String::new(),
            401,
            "invalid API key",
        ),
        (
            "GET",
            "/api/apps/nope/channels",
            Some(ADMIN_TOKEN),
            String::new(),
            401,
            "invalid API key",
        ),
        (
            "GET",
            "/api/apps/test/presence",
            Some(API_KEY),
            String::new(),
            400,
            "missing parameter: channel",
        ),
        (
            "GET",
            "/api/apps/test/presence?channel=a%20b",
            Some(API_KEY),
            String::new(),
            400,
            "bad parameter: channel",
        ),
        (
            "GET",
            "/api/apps/test/presence?channel=chat/*",
            Some(API_KEY),
            String::new(),
            400,
            "bad parameter: channel",
        ),
        (
            "GET",
            "/api/apps/test/presence?channel=",
            Some(API_KEY),
            String::new(),
            400,
            "bad parameter: channel",
        ),
        (
            "GET",
            "/api/apps/test/presence?channel=nothing",
            Some(API_KEY),
            String::new(),
            404,
            "no rule matches",
        ),
        (
            "GET",
            "/api/apps/test/presence_stats?channel=nothing",
            Some(API_KEY),
            String::new(),
            404,
            "no rule matches",
        ),
        (
            "GET",
            "/api/apps/test/history?channel=nothing",
            Some(API_KEY),
            String::new(),
            404,
            "no rule matches",
        ),
        (
            "DELETE",
            "/api/apps/test/history?channel=nothing",
            Some(API_KEY),
            String::new(),
            404,
            "no rule matches",
        ),
        (
            "GET",
            "/api/apps/test/history?channel=chat/x&limit=0",
            Some(API_KEY),
            String::new(),
            400,
            "bad parameter: limit",
        ),
        (
            "GET",
            "/api/apps/test/history?channel=chat/x&limit=ten",
            Some(API_KEY),
            String::new(),
            400,
            "bad parameter: limit",
        ),
        (
            "POST",
            "/api/apps/test/disconnect",
            Some(API_KEY),
            "not json".into(),
            400,
            "body is not a JSON object",
        ),
        (
            "POST",
            "/api/apps/test/disconnect",
            Some(API_KEY),
            "[1]".into(),
            400,
            "body is not a JSON object",
        ),
        (
            "POST",
            "/api/apps/test/disconnect",
            Some(API_KEY),
            "{}".into(),
            400,
            "missing parameter: auth_id or socket_id",
        ),
        (
            "POST",
            "/api/apps/test/disconnect",
            Some(API_KEY),
            r#"{"socket_id":"a","reconnect":"yes"}"#.into(),
            400,
            "bad parameter: reconnect",
        ),
        (
            "POST",
            "/api/apps/test/disconnect",
            Some(API_KEY),
            "x".repeat(70_000),
            413,
            "body too large",
        ),
        (
            "POST",
            "/api/apps/test/unsubscribe",
            Some(API_KEY),
            r#"{"socket_id":"a"}"#.into(),
            400,
            "missing parameter: channel",
        ),
        (
            "POST",
            "/api/apps/test/unsubscribe",
            Some(API_KEY),
            r#"{"channel":"nothing","socket_id":"a"}"#.into(),
            404,
            "no rule matches",
        ),
        (
            "POST",
            "/api/apps/test/unsubscribe",
            Some(API_KEY),
            r#"{"channel":"chat/a"}"#.into(),
            400,
            "missing parameter: auth_id or socket_id",
        ),
        (
            "POST",
            "/api/apps/nope/unsubscribe",
            Some(API_KEY),
            "x".repeat(70_000),
            401,
            "invalid API key",
        ),
    ];
    for (method, path, key, body, status, error) in cases {
        let (got, answer) = http_request(s.addr, method, path, key, &body).await;
        assert_eq!(got, status, "{method} {path} {body:.40}: {answer}");
        let text = answer["error"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(error),
            "{method} {path}: {text:?} should start with {error:?}"
        );
    }
}

#[tokio::test]
async fn the_admin_token_may_use_the_api_too() {
    let s = server();
    let mut a = s.client().await;
    let ack = a.join("chat/admin", false, true).await;
    a.expect("presence_full").await;
    let (status, body) = http_request(
        s.addr,
        "GET",
        "/api/apps/test/presence?channel=chat/admin",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["presence"]), vec![socket_id(&ack)]);
    let (status, _) = http_request(
        s.addr,
        "POST",
        "/api/apps/test/disconnect",
        Some(ADMIN_TOKEN),
        &json!({"socket_id": socket_id(&ack)}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(a.expect_close().await, 4401);
}
