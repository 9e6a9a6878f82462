//! The client-facing wire protocol (docs/protocol.md sections 2-5) over real sockets:
//! join checks and acks, leave, public and direct messages, history, presence,
//! invalid and legacy frames, channel rule matching, and the handshake.

mod common;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- helpers

/// BASE_CONFIG with extra `[[apps.channels]]` rules appended to app `test`.
fn config_with_rules(extra: &str) -> String {
    format!("{BASE_CONFIG}\n{extra}\n")
}

/// BASE_CONFIG with extra keys in `[limits]`.
fn config_with_limits(extra: &str) -> String {
    BASE_CONFIG.replace(
        "messages_per_minute = 0",
        &format!("messages_per_minute = 0\n{extra}"),
    )
}

/// A join that must fail with this text, carrying the channel.
async fn join_refused(c: &mut Client, channel: &str, message: &str) {
    c.send(json!({"action":"join","options":{"channel":channel},"payload":{"history":false,"presence":false}}))
        .await;
    let f = c.expect_error(message).await;
    assert_eq!(f["options"]["channel"], channel, "{f}");
}

async fn leave(c: &mut Client, channel: &str) {
    c.send(json!({"action":"leave","options":{"channel":channel},"payload":null}))
        .await;
}

async fn direct(c: &mut Client, channel: &str, target: &str, payload: Value) {
    c.send(json!({"action":"message","options":{"channel":channel,"socketId":target},"payload":payload}))
        .await;
}

async fn message_auth_only(c: &mut Client, channel: &str, payload: Value) {
    c.send(json!({"action":"message","options":{"channel":channel,"authenticated":true},"payload":payload}))
        .await;
}

/// The history action's reply on `channel` (which must be joined).
async fn history(c: &mut Client, channel: &str) -> Value {
    c.send(json!({"action":"history","options":{"channel":channel},"payload":null}))
        .await;
    c.expect("history").await
}

fn presence_ids(full: &Value) -> Vec<String> {
    full["payload"]["presence"]
        .as_array()
        .unwrap_or_else(|| panic!("presence list in {full}"))
        .iter()
        .map(|c| c["socketId"].as_str().unwrap().to_string())
        .collect()
}

fn payloads(entries: &Value) -> Vec<Value> {
    entries
        .as_array()
        .unwrap_or_else(|| panic!("a list: {entries}"))
        .iter()
        .map(|e| e["payload"].clone())
        .collect()
}

/// Receive and check the error of a bad frame, then prove the socket still works.
async fn invalid_then_usable(c: &mut Client, channel: Option<&str>) {
    let f = c.expect("error").await;
    let text = f["payload"]["message"].as_str().unwrap_or_default();
    assert!(text.starts_with("Invalid frame: "), "{f}");
    if let Some(ch) = channel {
        assert_eq!(f["options"]["channel"], ch, "{f}");
    }
    c.join("chat/after", false, false).await;
}

// ---------------------------------------------------------------- join errors

#[tokio::test]
async fn join_refuses_invalid_channel_names() {
    let server = TestServer::start();
    let mut c = server.client().await;
    let too_long = format!("chat/{}", "a".repeat(251));
    assert_eq!(too_long.len(), 256);
    for name in [
        "",
        "chat/a b",
        "chat/a\tb",
        "chat/*",
        "*",
        too_long.as_str(),
    ] {
        join_refused(&mut c, name, "Invalid channel name").await;
    }
}

#[tokio::test]
async fn join_accepts_a_255_byte_name() {
    let server = TestServer::start();
    let mut c = server.client().await;
    let name = format!("chat/{}", "a".repeat(250));
    assert_eq!(name.len(), 255);
    c.join(&name, false, false).await;
}

#[tokio::test]
async fn join_without_a_rule_is_channel_not_found() {
    let server = TestServer::start();
    let mut c = server.client_with_token(&user_token(1)).await;
    join_refused(&mut c, "nosuchrule", "Channel not found").await;
    join_refused(&mut c, "other/x", "Channel not found").await;
}

#[tokio::test]
async fn join_of_an_inactive_rule_is_channel_not_found() {
    let server = TestServer::start();
    let mut anon = server.client().await;
    join_refused(&mut anon, "closed", "Channel not found").await;
    let mut user = server.client_with_token(&user_token(1)).await;
    join_refused(&mut user, "closed", "Channel not found").await;
}

#[tokio::test]
async fn anonymous_join_of_an_authenticated_channel_is_refused_with_xano_text() {
    let server = TestServer::start();
    let mut c = server.client().await;
    join_refused(
        &mut c,
        "members/x",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    // The anonymous check comes before the ACLs.
    join_refused(
        &mut c,
        "admin/x",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    join_refused(
        &mut c,
        "user:0",
        "Anonymous clients cannot join this channel.",
    )
    .await;
}

#[tokio::test]
async fn join_roles_refuse_a_user_without_the_role() {
    let server = TestServer::start();
    let mut plain = server.client_with_token(&user_token(1)).await;
    join_refused(&mut plain, "admin/x", "Not allowed to join this channel").await;
    let mut other_role = server
        .client_with_token(&user_token_with_roles(2, &["editor"]))
        .await;
    join_refused(
        &mut other_role,
        "admin/x",
        "Not allowed to join this channel",
    )
    .await;
    let mut admin = server
        .client_with_token(&user_token_with_roles(3, &["admin"]))
        .await;
    admin.join("admin/x", false, false).await;
}

#[tokio::test]
async fn owner_segment_refuses_another_users_feed() {
    let server = TestServer::start();
    let mut u43 = server.client_with_token(&user_token(43)).await;
    join_refused(&mut u43, "user:42", "Not allowed to join this channel").await;
    let mut u42 = server.client_with_token(&user_token(42)).await;
    u42.join("user:42", false, false).await;
}

#[tokio::test]
async fn join_beyond_max_channels_per_socket_is_too_many_channels() {
    let server = TestServer::with_config(&config_with_limits("max_channels_per_socket = 2"));
    let mut c = server.client().await;
    c.join("chat/a", false, false).await;
    c.join("chat/b", false, false).await;
    join_refused(&mut c, "chat/c", "Too many channels").await;
    // Leaving frees a slot.
    leave(&mut c, "chat/a").await;
    c.expect("leave").await;
    c.join("chat/c", false, false).await;
}

#[tokio::test]
async fn join_checks_run_in_contract_order_before_the_channel_limit() {
    let server = TestServer::with_config(&config_with_limits("max_channels_per_socket = 1"));
    let mut anon = server.client().await;
    anon.join("chat/a", false, false).await;
    // Each of these would also exceed the limit: the earlier check's text wins.
    join_refused(&mut anon, "bad name", "Invalid channel name").await;
    join_refused(&mut anon, "nosuchrule", "Channel not found").await;
    join_refused(&mut anon, "closed", "Channel not found").await;
    join_refused(
        &mut anon,
        "members/x",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    let mut user = server.client_with_token(&user_token(1)).await;
    user.join("chat/a", false, false).await;
    join_refused(&mut user, "admin/x", "Not allowed to join this channel").await;
    join_refused(&mut user, "chat/b", "Too many channels").await;
}

// ---------------------------------------------------------------- join ack

#[tokio::test]
async fn join_ack_of_an_anonymous_socket_has_the_exact_shape() {
    let server = TestServer::start();
    let mut c = server.client().await;
    let ack = c.join("chat/shape", false, false).await;
    let id = socket_id(&ack);
    assert!(!id.is_empty());
    assert!(
        id.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
        "socketId is url-safe: {id}"
    );
    assert_eq!(
        ack,
        json!({
            "action": "join",
            "options": {"channel": "chat/shape"},
            "client": {"socketId": id, "extras": {}, "permissions": {"dbo_id": 0, "row_id": 0}},
            "payload": {"history": []}
        })
    );
}

#[tokio::test]
async fn join_ack_of_an_authenticated_socket_carries_the_token_identity() {
    let server = TestServer::start();
    let mut c = server.client_with_token(&user_token(42)).await;
    let ack = c.join("members/shape", false, false).await;
    let id = socket_id(&ack);
    assert_eq!(
        ack,
        json!({
            "action": "join",
            "options": {"channel": "members/shape"},
            "client": {"socketId": id, "extras": {"name": "user42"}, "permissions": {"dbo_id": 7, "row_id": 42}},
            "payload": {"history": []}
        })
    );
}

#[tokio::test]
async fn join_ack_client_is_the_same_object_others_see() {
    let server = TestServer::start();
    let mut c = server.client_with_token(&user_token(5)).await;
    let (ack, full) = c.join_presence("chat/same").await;
    assert_eq!(full["payload"]["presence"], json!([ack["client"].clone()]));
    c.message("chat/same", json!("hi")).await;
    let m = c.expect("message").await;
    assert_eq!(m["client"], ack["client"]);
    // One socket, one id across channels.
    let other = c.join("chat/other", false, false).await;
    assert_eq!(other["client"], ack["client"]);
}

#[tokio::test]
async fn socket_ids_differ_between_sockets() {
    let server = TestServer::start();
    let mut a = server.client_with_token(&user_token(1)).await;
    let mut b = server.client_with_token(&user_token(1)).await;
    let ida = socket_id(&a.join("chat/ids", false, false).await);
    let idb = socket_id(&b.join("chat/ids", false, false).await);
    assert_ne!(ida, idb);
}

#[tokio::test]
async fn join_with_null_payload_is_accepted() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"action":"join","options":{"channel":"chat/null"},"payload":null}))
        .await;
    let ack = c.expect("join").await;
    assert_eq!(ack["options"]["channel"], "chat/null");
    assert_eq!(ack["payload"], json!({"history": []}));
    // Presence was not asked for: nothing else comes.
    c.expect_nothing("chat/null").await;
}

// ---------------------------------------------------------------- idempotent join

#[tokio::test]
async fn second_join_resends_ack_and_presence_full_without_a_broadcast() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join_presence("chat/twice").await;
    let (ack1, _) = b.join_presence("chat/twice").await;
    let b_id = socket_id(&ack1);
    let up = a.expect("presence_update").await;
    assert_eq!(up["payload"]["presence"]["socketId"], b_id.as_str());

    let (ack2, full2) = b.join_presence("chat/twice").await;
    assert_eq!(ack2, ack1);
    let ids = presence_ids(&full2);
    assert_eq!(ids.len(), 2, "{full2}");
    assert_eq!(ids.iter().filter(|i| **i == b_id).count(), 1, "{full2}");

    a.expect_nothing("chat/twice").await;
    b.expect_nothing("chat/twice").await;

    let mut c = server.client().await;
    let (_, full_c) = c.join_presence("chat/twice").await;
    let ids = presence_ids(&full_c);
    assert_eq!(ids.len(), 3, "{full_c}");
    assert_eq!(ids.iter().filter(|i| **i == b_id).count(), 1, "{full_c}");
}

// ---------------------------------------------------------------- leave

#[tokio::test]
async fn leave_is_acknowledged_with_the_exact_shape() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("chat/bye", false, false).await;
    leave(&mut c, "chat/bye").await;
    let f = c.expect("leave").await;
    assert_eq!(
        f,
        json!({"action":"leave","options":{"channel":"chat/bye"},"payload":null})
    );
    // No longer a member.
    c.message("chat/bye", json!("x")).await;
    let e = c.expect_error("Not joined to this channel").await;
    assert_eq!(e["options"]["channel"], "chat/bye");
}

#[tokio::test]
async fn leave_of_a_channel_not_joined_is_ignored() {
    let server = TestServer::start();
    let mut c = server.client().await;
    leave(&mut c, "chat/never").await;
    leave(&mut c, "nosuchrule").await;
    let seen = c.drain_until_socket_barrier().await;
    assert!(seen.is_empty(), "unexpected frames: {seen:?}");
}

#[tokio::test]
async fn leave_tells_other_presence_members() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client_with_token(&user_token(9)).await;
    a.join_presence("chat/out").await;
    let (ack_b, _) = b.join_presence("chat/out").await;
    a.expect("presence_update").await;
    leave(&mut b, "chat/out").await;
    b.expect("leave").await;
    let up = a.expect("presence_update").await;
    assert_eq!(
        up,
        json!({"action":"presence_update","options":{"channel":"chat/out"},
               "payload":{"action":"leave","presence":ack_b["client"].clone()}})
    );
}

#[tokio::test]
async fn closing_the_socket_sends_presence_leave_to_others() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join_presence("chat/close").await;
    let (ack_b, _) = b.join_presence("chat/close").await;
    a.expect("presence_update").await;
    b.close().await;
    let up = a.expect("presence_update").await;
    assert_eq!(up["options"]["channel"], "chat/close");
    assert_eq!(up["payload"]["action"], "leave");
    assert_eq!(up["payload"]["presence"], ack_b["client"]);
}

// ---------------------------------------------------------------- public messages

#[tokio::test]
async fn message_to_a_channel_not_joined_is_refused() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.message("chat/x", json!("hi")).await;
    let e = c.expect_error("Not joined to this channel").await;
    assert_eq!(e["options"]["channel"], "chat/x");
}

#[tokio::test]
async fn message_on_a_channel_without_public_messaging_is_refused() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("readonly", false, false).await;
    c.message("readonly", json!("hi")).await;
    let e = c
        .expect_error("Public messaging is not allowed on this channel")
        .await;
    assert_eq!(e["options"]["channel"], "readonly");
    // Not stored either.
    assert_eq!(
        history(&mut c, "readonly").await["payload"]["history"],
        json!([])
    );
}

const GUARDED: &str = r#"
[[apps.channels]]
pattern = "guarded/*"
public_messaging = { active = true, auth = true }
private_messaging = { active = true, auth = true }
settings = { anonymous_clients = true, presence = true, message_history = 5 }
"#;

#[tokio::test]
async fn anonymous_public_message_on_an_auth_only_channel_is_refused() {
    let server = TestServer::with_config(&config_with_rules(GUARDED));
    let mut anon = server.client().await;
    let mut user = server.client_with_token(&user_token(1)).await;
    anon.join("guarded/a", false, false).await;
    user.join("guarded/a", false, false).await;
    anon.message("guarded/a", json!("from anon")).await;
    let e = anon
        .expect_error("Authentication required to send messages on this channel")
        .await;
    assert_eq!(e["options"]["channel"], "guarded/a");
    user.expect_nothing("guarded/a").await;
    // An authenticated member may send, and anonymous members receive it.
    user.message("guarded/a", json!("from user")).await;
    assert_eq!(user.expect("message").await["payload"], "from user");
    assert_eq!(anon.expect("message").await["payload"], "from user");
}

#[tokio::test]
async fn delivered_message_has_the_exact_shape() {
    let server = TestServer::start();
    let mut a = server.client_with_token(&user_token(3)).await;
    let mut b = server.client().await;
    let ack_a = a.join("chat/frame", false, false).await;
    b.join("chat/frame", false, false).await;
    a.message("chat/frame", json!({"text": "hello", "n": [1, 2]}))
        .await;
    let expected = json!({
        "action": "message",
        "options": {"channel": "chat/frame", "authenticated": false, "socketId": null},
        "client": ack_a["client"].clone(),
        "payload": {"text": "hello", "n": [1, 2]}
    });
    assert_eq!(a.expect("message").await, expected);
    assert_eq!(b.expect("message").await, expected);
}

#[tokio::test]
async fn authenticated_audience_message_skips_anonymous_members() {
    let server = TestServer::start();
    let mut anon = server.client().await;
    let mut sender = server.client_with_token(&user_token(1)).await;
    let mut other = server.client_with_token(&user_token(2)).await;
    anon.join("chat/aud", false, false).await;
    let ack = sender.join("chat/aud", false, false).await;
    other.join("chat/aud", false, false).await;

    message_auth_only(&mut sender, "chat/aud", json!("secret")).await;
    let expected = json!({
        "action": "message",
        "options": {"channel": "chat/aud", "authenticated": true, "socketId": null},
        "client": ack["client"].clone(),
        "payload": "secret"
    });
    assert_eq!(sender.expect("message").await, expected);
    assert_eq!(other.expect("message").await, expected);
    anon.expect_nothing("chat/aud").await;
}

#[tokio::test]
async fn authenticated_audience_message_from_an_anonymous_sender_is_not_echoed() {
    let server = TestServer::start();
    let mut anon = server.client().await;
    let mut user = server.client_with_token(&user_token(1)).await;
    anon.join("chat/aud2", false, false).await;
    user.join("chat/aud2", false, false).await;
    message_auth_only(&mut anon, "chat/aud2", json!("to users")).await;
    let m = user.expect("message").await;
    assert_eq!(m["payload"], "to users");
    assert_eq!(m["options"]["authenticated"], true);
    anon.expect_nothing("chat/aud2").await;
}

#[tokio::test]
async fn auth_channel_message_from_an_authenticated_sender_reaches_only_authenticated_members() {
    let server = TestServer::start();
    let mut anon = server.client().await;
    let mut sender = server.client_with_token(&user_token(1)).await;
    let mut other = server.client_with_token(&user_token(2)).await;
    anon.join("mixed/a", false, false).await;
    sender.join("mixed/a", false, false).await;
    other.join("mixed/a", false, false).await;
    sender.message("mixed/a", json!("members only")).await;
    for c in [&mut sender, &mut other] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], "members only");
        assert!(m["options"]["authenticated"].is_boolean(), "{m}");
    }
    anon.expect_nothing("mixed/a").await;
}

#[tokio::test]
async fn auth_channel_message_from_an_anonymous_sender_reaches_everyone() {
    let server = TestServer::start();
    let mut anon = server.client().await;
    let mut user = server.client_with_token(&user_token(1)).await;
    let mut anon2 = server.client().await;
    anon.join("mixed/b", false, false).await;
    user.join("mixed/b", false, false).await;
    anon2.join("mixed/b", false, false).await;
    anon.message("mixed/b", json!("for all")).await;
    for c in [&mut anon, &mut user, &mut anon2] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], "for all");
        assert_eq!(m["options"]["authenticated"], false, "{m}");
    }
}

// ---------------------------------------------------------------- direct messages

#[tokio::test]
async fn direct_message_reaches_only_the_target() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut c = server.client().await;
    let (ack_a, _) = a.join_presence("chat/dm").await;
    b.join_presence("chat/dm").await;
    c.join_presence("chat/dm").await;
    // The target is taken from presence, as the SDK does.
    let full = a.drain_until_barrier("chat/dm").await;
    assert_eq!(full.len(), 2, "two presence joins: {full:?}");
    let b_id = full[0]["payload"]["presence"]["socketId"]
        .as_str()
        .unwrap()
        .to_string();
    b.drain_until_barrier("chat/dm").await;

    direct(&mut a, "chat/dm", &b_id, json!({"psst": 1})).await;
    let m = b.expect("message").await;
    assert_eq!(
        m,
        json!({
            "action": "message",
            "options": {"channel": "chat/dm", "authenticated": false, "socketId": b_id},
            "client": ack_a["client"].clone(),
            "payload": {"psst": 1}
        })
    );
    a.expect_nothing("chat/dm").await;
    c.expect_nothing("chat/dm").await;
}

#[tokio::test]
async fn direct_message_to_a_socket_not_in_the_channel_is_refused() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut elsewhere = server.client().await;
    a.join("chat/dm1", false, false).await;
    let other_id = socket_id(&elsewhere.join("chat/dm2", false, false).await);
    for target in ["no-such-socket", other_id.as_str()] {
        direct(&mut a, "chat/dm1", target, json!("x")).await;
        let e = a.expect_error("Recipient not found in this channel").await;
        assert_eq!(e["options"]["channel"], "chat/dm1");
    }
    elsewhere.expect_nothing("chat/dm2").await;
}

#[tokio::test]
async fn direct_message_on_a_channel_without_private_messaging_is_refused() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("forum", false, false).await;
    let b_id = socket_id(&b.join("forum", false, false).await);
    direct(&mut a, "forum", &b_id, json!("x")).await;
    let e = a
        .expect_error("Private messaging is not allowed on this channel")
        .await;
    assert_eq!(e["options"]["channel"], "forum");
    b.expect_nothing("forum").await;
}

#[tokio::test]
async fn direct_message_on_an_auth_only_channel_needs_both_ends_authenticated() {
    let server = TestServer::with_config(&config_with_rules(GUARDED));
    let mut anon = server.client().await;
    let mut u1 = server.client_with_token(&user_token(1)).await;
    let mut u2 = server.client_with_token(&user_token(2)).await;
    let anon_id = socket_id(&anon.join("guarded/dm", false, false).await);
    let u1_id = socket_id(&u1.join("guarded/dm", false, false).await);
    let u2_id = socket_id(&u2.join("guarded/dm", false, false).await);

    // Authenticated sender, anonymous target.
    direct(&mut u1, "guarded/dm", &anon_id, json!("to anon")).await;
    let e = u1
        .expect_error("Authentication required to send messages on this channel")
        .await;
    assert_eq!(e["options"]["channel"], "guarded/dm");
    // Anonymous sender, authenticated target.
    direct(&mut anon, "guarded/dm", &u1_id, json!("from anon")).await;
    anon.expect_error("Authentication required to send messages on this channel")
        .await;
    anon.expect_nothing("guarded/dm").await;
    u1.expect_nothing("guarded/dm").await;
    // Between two authenticated sockets it works.
    direct(&mut u1, "guarded/dm", &u2_id, json!("hi")).await;
    let m = u2.expect("message").await;
    assert_eq!(m["payload"], "hi");
    assert_eq!(m["options"]["socketId"], u2_id.as_str());
}

// ---------------------------------------------------------------- history

#[tokio::test]
async fn join_with_history_returns_the_last_messages_oldest_first() {
    let server = TestServer::start();
    let mut a = server.client().await;
    a.join("chat/h", false, false).await;
    let mut live = Vec::new();
    for i in 0..7 {
        a.message("chat/h", json!({"n": i})).await;
        live.push(a.expect("message").await);
    }
    let mut b = server.client().await;
    let ack = b.join("chat/h", true, false).await;
    assert_eq!(
        payloads(&ack["payload"]["history"]),
        (2..7).map(|i| json!({"n": i})).collect::<Vec<_>>()
    );
    // Entries are the message frames as delivered.
    assert_eq!(ack["payload"]["history"], json!(live[2..].to_vec()));
}

#[tokio::test]
async fn join_without_history_gets_an_empty_list() {
    let server = TestServer::start();
    let mut a = server.client().await;
    a.join("chat/nohist", false, false).await;
    a.message("chat/nohist", json!("stored")).await;
    a.expect("message").await;
    let mut b = server.client().await;
    let ack = b.join("chat/nohist", false, false).await;
    assert_eq!(ack["payload"], json!({"history": []}));
}

#[tokio::test]
async fn history_action_reply_has_the_exact_shape() {
    let server = TestServer::start();
    let mut a = server.client().await;
    a.join("chat/hs", false, false).await;
    a.message("chat/hs", json!("one")).await;
    let one = a.expect("message").await;
    a.message("chat/hs", json!("two")).await;
    let two = a.expect("message").await;
    let reply = history(&mut a, "chat/hs").await;
    assert_eq!(
        reply,
        json!({"action":"history","options":{"channel":"chat/hs"},"payload":{"history":[one, two]}})
    );
}

#[tokio::test]
async fn history_ignores_options_socket_id() {
    let server = TestServer::start();
    let mut a = server.client().await;
    a.join("chat/hsid", false, false).await;
    a.message("chat/hsid", json!("one")).await;
    a.expect("message").await;
    a.send(json!({"action":"history","options":{"channel":"chat/hsid","socketId":"whoever"},"payload":null}))
        .await;
    let reply = a.expect("history").await;
    assert_eq!(payloads(&reply["payload"]["history"]), vec![json!("one")]);
}

#[tokio::test]
async fn history_without_a_history_rule_is_empty() {
    let server = TestServer::start();
    let mut a = server.client().await;
    a.join("forum", false, false).await;
    a.message("forum", json!("not kept")).await;
    a.expect("message").await;
    let reply = history(&mut a, "forum").await;
    assert_eq!(
        reply,
        json!({"action":"history","options":{"channel":"forum"},"payload":{"history":[]}})
    );
    let mut b = server.client().await;
    let ack = b.join("forum", true, false).await;
    assert_eq!(ack["payload"], json!({"history": []}));
}

#[tokio::test]
async fn direct_messages_are_never_stored() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("chat/hdm", false, false).await;
    let b_id = socket_id(&b.join("chat/hdm", false, false).await);
    direct(&mut a, "chat/hdm", &b_id, json!("private")).await;
    b.expect("message").await;
    a.message("chat/hdm", json!("public")).await;
    a.expect("message").await;
    b.expect("message").await;
    assert_eq!(
        payloads(&history(&mut a, "chat/hdm").await["payload"]["history"]),
        vec![json!("public")]
    );
    let mut c = server.client().await;
    let ack = c.join("chat/hdm", true, false).await;
    assert_eq!(payloads(&ack["payload"]["history"]), vec![json!("public")]);
}

#[tokio::test]
async fn authenticated_audience_messages_are_hidden_from_anonymous_history() {
    let server = TestServer::start();
    let mut user = server.client_with_token(&user_token(1)).await;
    user.join("chat/hauth", false, false).await;
    message_auth_only(&mut user, "chat/hauth", json!("secret")).await;
    user.expect("message").await;
    user.message("chat/hauth", json!("open")).await;
    user.expect("message").await;

    let mut anon = server.client().await;
    let ack = anon.join("chat/hauth", true, false).await;
    assert_eq!(payloads(&ack["payload"]["history"]), vec![json!("open")]);
    let reply = history(&mut anon, "chat/hauth").await;
    assert_eq!(payloads(&reply["payload"]["history"]), vec![json!("open")]);

    let mut other = server.client_with_token(&user_token(2)).await;
    let ack = other.join("chat/hauth", true, false).await;
    assert_eq!(
        payloads(&ack["payload"]["history"]),
        vec![json!("secret"), json!("open")]
    );
    let reply = history(&mut other, "chat/hauth").await;
    assert_eq!(
        payloads(&reply["payload"]["history"]),
        vec![json!("secret"), json!("open")]
    );
}

#[tokio::test]
async fn auth_channel_messages_are_hidden_from_anonymous_history() {
    let server = TestServer::start();
    let mut user = server.client_with_token(&user_token(1)).await;
    let mut anon = server.client().await;
    user.join("mixed/h", false, false).await;
    anon.join("mixed/h", false, false).await;
    user.message("mixed/h", json!("members only")).await;
    user.expect("message").await;
    anon.message("mixed/h", json!("from anon")).await;
    user.expect("message").await;
    anon.expect("message").await;

    let reply = history(&mut anon, "mixed/h").await;
    assert_eq!(
        payloads(&reply["payload"]["history"]),
        vec![json!("from anon")]
    );
    let reply = history(&mut user, "mixed/h").await;
    assert_eq!(
        payloads(&reply["payload"]["history"]),
        vec![json!("members only"), json!("from anon")]
    );
}

#[tokio::test]
async fn history_of_a_channel_not_joined_is_refused() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"action":"history","options":{"channel":"chat/nj"},"payload":null}))
        .await;
    let e = c.expect_error("Not joined to this channel").await;
    assert_eq!(e["options"]["channel"], "chat/nj");
}

// ---------------------------------------------------------------- presence

#[tokio::test]
async fn presence_full_includes_the_receiver() {
    let server = TestServer::start();
    let mut a = server.client_with_token(&user_token(4)).await;
    let (ack, full) = a.join_presence("chat/p").await;
    assert_eq!(
        full,
        json!({"action":"presence_full","options":{"channel":"chat/p"},
               "payload":{"presence":[ack["client"].clone()]}})
    );
    let mut b = server.client().await;
    let (ack_b, full_b) = b.join_presence("chat/p").await;
    let mut listed = full_b["payload"]["presence"].as_array().unwrap().clone();
    listed.sort_by_key(|c| c["socketId"].as_str().unwrap().to_string());
    let mut expected = vec![ack["client"].clone(), ack_b["client"].clone()];
    expected.sort_by_key(|c| c["socketId"].as_str().unwrap().to_string());
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn presence_update_join_has_the_exact_shape_and_skips_the_joiner() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client_with_token(&user_token(8)).await;
    a.join_presence("chat/pu").await;
    let (ack_b, _) = b.join_presence("chat/pu").await;
    let up = a.expect("presence_update").await;
    assert_eq!(
        up,
        json!({"action":"presence_update","options":{"channel":"chat/pu"},
               "payload":{"action":"join","presence":ack_b["client"].clone()}})
    );
    b.expect_nothing("chat/pu").await;
}

#[tokio::test]
async fn a_socket_that_did_not_ask_for_presence_gets_no_presence_frames() {
    let server = TestServer::start();
    let mut quiet = server.client().await;
    let ack = quiet.join("chat/quiet", false, false).await;
    assert_eq!(ack["payload"], json!({"history": []}));
    let mut b = server.client().await;
    b.join_presence("chat/quiet").await;
    let mut c = server.client().await;
    c.join_presence("chat/quiet").await;
    assert_eq!(
        b.expect("presence_update").await["payload"]["action"],
        "join"
    );
    c.close().await;
    assert_eq!(
        b.expect("presence_update").await["payload"]["action"],
        "leave"
    );
    leave(&mut b, "chat/quiet").await;
    b.expect("leave").await;
    // Every presence change above has been sent by now: `quiet` got none of them.
    quiet.expect_nothing("chat/quiet").await;
}

#[tokio::test]
async fn presence_is_not_sent_when_the_rule_has_it_off() {
    let server = TestServer::start();
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("forum", false, true).await;
    b.join("forum", false, true).await;
    a.expect_nothing("forum").await;
    b.expect_nothing("forum").await;
}

// ---------------------------------------------------------------- invalid and legacy frames

#[tokio::test]
async fn non_json_text_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send_raw("this is not json {").await;
    invalid_then_usable(&mut c, None).await;
}

#[tokio::test]
async fn binary_frame_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    let bytes = json!({"action":"join","options":{"channel":"chat/bin"}})
        .to_string()
        .into_bytes();
    c.ws.send(Message::Binary(bytes)).await.unwrap();
    invalid_then_usable(&mut c, None).await;
}

#[tokio::test]
async fn missing_action_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"options":{"channel":"chat/x"},"payload":null}))
        .await;
    invalid_then_usable(&mut c, Some("chat/x")).await;
}

#[tokio::test]
async fn unknown_action_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"action":"dance","options":{"channel":"chat/x"},"payload":null}))
        .await;
    invalid_then_usable(&mut c, Some("chat/x")).await;
}

#[tokio::test]
async fn missing_channel_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"action":"join","options":{},"payload":null}))
        .await;
    invalid_then_usable(&mut c, None).await;
    c.send(json!({"action":"message","payload":"x"})).await;
    invalid_then_usable(&mut c, None).await;
}

#[tokio::test]
async fn non_string_channel_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"action":"join","options":{"channel":5},"payload":null}))
        .await;
    invalid_then_usable(&mut c, None).await;
}

#[tokio::test]
async fn non_boolean_join_flag_is_an_invalid_frame() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.send(json!({"action":"join","options":{"channel":"chat/flag"},"payload":{"history":"yes"}}))
        .await;
    invalid_then_usable(&mut c, Some("chat/flag")).await;
    // The bad join did not take effect.
    c.message("chat/flag", json!("x")).await;
    c.expect_error("Not joined to this channel").await;
}

#[tokio::test]
async fn legacy_command_frames_join_and_message() {
    let server = TestServer::start();
    let mut old = server.client().await;
    let mut new = server.client().await;
    new.join("chat/legacy", false, false).await;
    old.send(json!({"command":"join","commandOptions":{"channel":"chat/legacy"},"payload":{"history":false,"presence":false}}))
        .await;
    let ack = old.expect("join").await;
    assert_eq!(ack["options"]["channel"], "chat/legacy");
    old.send(
        json!({"command":"message","commandOptions":{"channel":"chat/legacy"},"payload":{"v":1}}),
    )
    .await;
    for c in [&mut old, &mut new] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], json!({"v": 1}));
        assert_eq!(m["client"], ack["client"]);
    }
}

// ---------------------------------------------------------------- rule matching

#[tokio::test]
async fn nested_channels_match_the_base_and_its_subpaths_only() {
    let server = TestServer::start();
    let mut c = server.client().await;
    c.join("forum", false, false).await;
    c.join("forum/a", false, false).await;
    c.join("forum/a/b", false, false).await;
    join_refused(&mut c, "forumx", "Channel not found").await;
}

#[tokio::test]
async fn wildcard_needs_at_least_one_more_character() {
    let server = TestServer::start();
    let mut c = server.client().await;
    join_refused(&mut c, "chat/", "Channel not found").await;
    c.join("chat/x", false, false).await;
}

const OVERLAPPING: &str = r#"
[[apps.channels]]
pattern = "chat/vip/*"
public_messaging = { active = true }

[[apps.channels]]
pattern = "chat/exact"
active = false
"#;

#[tokio::test]
async fn longest_wildcard_and_exact_rules_win() {
    let server = TestServer::with_config(&config_with_rules(OVERLAPPING));
    let mut anon = server.client().await;
    // chat/* allows anonymous; chat/vip/* does not.
    anon.join("chat/vipx", false, false).await;
    join_refused(
        &mut anon,
        "chat/vip/room",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    let mut user = server.client_with_token(&user_token(1)).await;
    user.join("chat/vip/room", false, false).await;
    // The exact, inactive rule beats chat/*.
    join_refused(&mut anon, "chat/exact", "Channel not found").await;
    anon.join("chat/exactly", false, false).await;
}

// ---------------------------------------------------------------- connection

#[tokio::test]
async fn unknown_hash_gets_an_error_then_close_4401() {
    let server = TestServer::start();
    let mut c = Client::connect(&server.url("nope"), None).await;
    let f = c.recv().await;
    assert_eq!(
        f,
        json!({"action":"error","options":{},"payload":{"message":"Unknown connection hash"}})
    );
    assert_eq!(c.expect_close().await, 4401);
}

#[tokio::test]
async fn the_offered_protocol_token_is_selected() {
    let server = TestServer::start();
    let t = user_token(11);
    let mut c = server.client_with_token(&t).await;
    assert_eq!(c.selected_protocol.as_deref(), Some(t.as_str()));
    // And it authenticated the socket.
    let ack = c.join("members/p", false, false).await;
    assert_eq!(
        ack["client"]["permissions"],
        json!({"dbo_id": 7, "row_id": 11})
    );
}

#[tokio::test]
async fn no_protocol_is_selected_when_none_is_offered() {
    let server = TestServer::start();
    let c = server.client().await;
    assert_eq!(c.selected_protocol, None);
}
