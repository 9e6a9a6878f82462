//! Auth tokens over real sockets (docs/protocol.md section 1): HS256, RS256 and ES256
//! apps, anonymous sockets, every kind of bad token in the default (anonymous)
//! mode and in `invalid_token = "reject"` mode, and `Authorization: Bearer`.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");

/// The rules every app of this file has: one anonymous-friendly, one authenticated-only.
const RULES: &str = r#"
[[apps.channels]]
pattern = "chat/*"
public_messaging = { active = true }
settings = { anonymous_clients = true }

[[apps.channels]]
pattern = "members/*"
public_messaging = { active = true }
"#;

/// Four apps: `test` (HS256, the harness's secret), `rs` (RS256), `es` (ES256)
/// and `strict` (HS256 with `invalid_token = "reject"`).
fn config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[[apps]]
name = "HS"
hash = "test"
api_key = "test-api-key"
[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"
{RULES}

[[apps]]
name = "RS"
hash = "rs"
api_key = "rs-api-key"
[apps.jwt]
algorithm = "RS256"
public_key_pem = '''
{RSA_PUBLIC}'''
{RULES}

[[apps]]
name = "ES"
hash = "es"
api_key = "es-api-key"
[apps.jwt]
algorithm = "ES256"
public_key_pem = '''
{EC_PUBLIC}'''
{RULES}

[[apps]]
name = "Strict"
hash = "strict"
api_key = "strict-api-key"
invalid_token = "reject"
[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"
{RULES}
"#
    )
}

fn claims(id: i64) -> Value {
    json!({
        "sub": id,
        "dbo_id": 7,
        "extras": {"name": format!("user{id}"), "plan": "pro"},
        "exp": now() + 3600,
    })
}

fn hs(claims: Value) -> String {
    token_with(Algorithm::HS256, SECRET.as_bytes(), claims)
}

fn rs(claims: Value) -> String {
    token_with(Algorithm::RS256, RSA_PRIVATE, claims)
}

fn es(claims: Value) -> String {
    token_with(Algorithm::ES256, EC_PRIVATE, claims)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsigned token: `alg: none`, empty signature.
fn alg_none(claims: Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

async fn connect(server: &TestServer, app: &str, token: Option<&str>) -> Client {
    let c = Client::connect(&server.url(app), token).await;
    // The 101 must select the protocol that was offered, whatever the token's fate.
    assert_eq!(c.selected_protocol.as_deref(), token, "selected protocol");
    c
}

/// The join ack's client object must be an authenticated user `id` with dbo_id 7.
fn assert_user(ack: &Value, id: i64) {
    let client = &ack["client"];
    assert_eq!(
        client["permissions"],
        json!({"dbo_id": 7, "row_id": id}),
        "{ack}"
    );
    assert_eq!(
        client["extras"],
        json!({"name": format!("user{id}"), "plan": "pro"}),
        "{ack}"
    );
    assert!(client["socketId"].as_str().is_some_and(|s| !s.is_empty()));
}

/// A valid token: the socket is that user and may join an authenticated-only channel.
async fn assert_authenticated(c: &mut Client, id: i64) {
    let ack = c.join("chat/x", false, false).await;
    assert_user(&ack, id);
    let ack = c.join("members/x", false, false).await;
    assert_user(&ack, id);
    // No error frame came first or in between.
    let seen = c.drain_until_socket_barrier().await;
    assert!(seen.is_empty(), "unexpected frames: {seen:?}");
}

/// An anonymous socket: row_id 0, extras {}, refused on an authenticated channel.
async fn assert_anonymous(c: &mut Client) {
    let ack = c.join("chat/x", false, false).await;
    assert_eq!(
        ack["client"]["permissions"],
        json!({"dbo_id": 0, "row_id": 0}),
        "{ack}"
    );
    assert_eq!(ack["client"]["extras"], json!({}), "{ack}");
    c.send(json!({"action":"join","options":{"channel":"members/x"},"payload":{"history":false,"presence":false}}))
        .await;
    let err = c
        .expect_error("Anonymous clients cannot join this channel.")
        .await;
    assert_eq!(err["options"]["channel"], "members/x", "{err}");
}

/// Default mode: a connection-level `Auth token rejected: …` error, then an anonymous socket.
async fn assert_rejected_but_anonymous(server: &TestServer, app: &str, token: &str) -> String {
    let mut c = connect(server, app, Some(token)).await;
    let err = c.expect("error").await;
    let message = err["payload"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.starts_with("Auth token rejected: ")
            && message.len() > "Auth token rejected: ".len(),
        "{err}"
    );
    assert!(
        err["options"].get("channel").is_none(),
        "a connection-level error has no channel: {err}"
    );
    assert_anonymous(&mut c).await;
    message
}

/// Reject mode: closed with 4401.
async fn assert_closed_4401(server: &TestServer, token: &str) {
    let mut c = connect(server, "strict", Some(token)).await;
    assert_eq!(c.expect_close().await, 4401);
}

#[tokio::test]
async fn no_token_is_anonymous() {
    let server = TestServer::with_config(&config());
    for app in ["test", "rs", "es", "strict"] {
        let mut c = connect(&server, app, None).await;
        assert_anonymous(&mut c).await;
        let seen = c.drain_until_socket_barrier().await;
        assert!(seen.is_empty(), "{app}: unexpected frames: {seen:?}");
    }
}

#[tokio::test]
async fn valid_hs256_token_authenticates() {
    let server = TestServer::with_config(&config());
    let token = hs(claims(42));
    let mut c = connect(&server, "test", Some(&token)).await;
    assert_authenticated(&mut c, 42).await;
}

#[tokio::test]
async fn valid_rs256_token_authenticates() {
    let server = TestServer::with_config(&config());
    let token = rs(claims(43));
    let mut c = connect(&server, "rs", Some(&token)).await;
    assert_authenticated(&mut c, 43).await;
}

#[tokio::test]
async fn valid_es256_token_authenticates() {
    let server = TestServer::with_config(&config());
    let token = es(claims(44));
    let mut c = connect(&server, "es", Some(&token)).await;
    assert_authenticated(&mut c, 44).await;
}

#[tokio::test]
async fn valid_token_is_accepted_in_reject_mode() {
    let server = TestServer::with_config(&config());
    let token = hs(claims(45));
    let mut c = connect(&server, "strict", Some(&token)).await;
    assert_authenticated(&mut c, 45).await;
}

#[tokio::test]
async fn expired_token_is_rejected_and_socket_is_anonymous() {
    let server = TestServer::with_config(&config());
    let mut expired = claims(1);
    expired["exp"] = json!(now() - 3600);
    assert_rejected_but_anonymous(&server, "test", &hs(expired.clone())).await;
    assert_rejected_but_anonymous(&server, "rs", &rs(expired.clone())).await;
    assert_rejected_but_anonymous(&server, "es", &es(expired)).await;
}

#[tokio::test]
async fn token_not_yet_valid_is_rejected() {
    let server = TestServer::with_config(&config());
    let mut early = claims(1);
    early["nbf"] = json!(now() + 3600);
    assert_rejected_but_anonymous(&server, "test", &hs(early.clone())).await;
    assert_rejected_but_anonymous(&server, "es", &es(early)).await;
}

#[tokio::test]
async fn token_signed_with_wrong_key_is_rejected() {
    let server = TestServer::with_config(&config());
    let other = token_with(
        Algorithm::HS256,
        b"another-secret-0123456789abcdef0123456789",
        claims(1),
    );
    assert_rejected_but_anonymous(&server, "test", &other).await;

    // An RS256 token whose payload was swapped for another user's.
    let genuine = rs(claims(1));
    let forged_payload = b64(claims(999).to_string().as_bytes());
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_rejected_but_anonymous(&server, "rs", &tampered).await;

    // A well-formed ES256 token for the RS256 app.
    assert_rejected_but_anonymous(&server, "rs", &es(claims(1))).await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let server = TestServer::with_config(&config());
    let token = alg_none(claims(1));
    assert_rejected_but_anonymous(&server, "test", &token).await;
    assert_rejected_but_anonymous(&server, "rs", &token).await;
    assert_rejected_but_anonymous(&server, "es", &token).await;
}

#[tokio::test]
async fn hs256_with_rsa_public_key_as_secret_is_rejected_by_rs_app() {
    let server = TestServer::with_config(&config());
    let confused = token_with(Algorithm::HS256, RSA_PUBLIC.as_bytes(), claims(1));
    assert_rejected_but_anonymous(&server, "rs", &confused).await;
}

#[tokio::test]
async fn garbage_token_is_rejected() {
    let server = TestServer::with_config(&config());
    for garbage in [
        "garbage",
        "a.b.c",
        "not-a-jwt.at-all",
        "eyJhbGciOiJIUzI1NiJ9.e30",
    ] {
        assert_rejected_but_anonymous(&server, "test", garbage).await;
    }
}

#[tokio::test]
async fn oversized_token_is_rejected() {
    let server = TestServer::with_config(&config());
    let mut big = claims(1);
    big["extras"]["blob"] = json!("a".repeat(9 * 1024));
    // Correctly signed: only its size is wrong.
    let token = hs(big);
    assert!(token.len() > 9 * 1024, "{}", token.len());
    assert_rejected_but_anonymous(&server, "test", &token).await;
}

#[tokio::test]
async fn reject_mode_closes_every_bad_token_with_4401() {
    let server = TestServer::with_config(&config());
    let mut expired = claims(1);
    expired["exp"] = json!(now() - 3600);
    let mut early = claims(1);
    early["nbf"] = json!(now() + 3600);
    let mut big = claims(1);
    big["extras"]["blob"] = json!("a".repeat(9 * 1024));
    let bad = [
        hs(expired),
        hs(early),
        token_with(
            Algorithm::HS256,
            b"another-secret-0123456789abcdef0123456789",
            claims(1),
        ),
        alg_none(claims(1)),
        rs(claims(1)),
        "garbage".to_string(),
        hs(big),
    ];
    for token in &bad {
        assert_closed_4401(&server, token).await;
    }
    // The app still serves good and anonymous sockets.
    let mut c = connect(&server, "strict", None).await;
    assert_anonymous(&mut c).await;
}

// ---- Authorization: Bearer (Extension) ----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_bearer(server: &TestServer, app: &str, token: &str) -> (Ws, Option<String>) {
    let mut req = server.url(app).into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .expect("connect");
    let selected = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, selected)
}

async fn ws_send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string())).await.unwrap();
}

async fn ws_recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
            Message::Close(c) => panic!("socket closed: {c:?}"),
            _ => continue,
        }
    }
}

async fn ws_join(ws: &mut Ws, channel: &str) -> Value {
    ws_send(
        ws,
        json!({"action":"join","options":{"channel":channel},"payload":{"history":false,"presence":false}}),
    )
    .await;
    ws_recv(ws).await
}

#[tokio::test]
async fn bearer_header_authenticates() {
    let server = TestServer::with_config(&config());
    let (mut ws, selected) = connect_bearer(&server, "test", &hs(claims(46))).await;
    assert_eq!(
        selected, None,
        "no protocol was offered, none may be selected"
    );
    let ack = ws_join(&mut ws, "members/x").await;
    assert_eq!(ack["action"], "join", "{ack}");
    assert_eq!(ack["options"]["channel"], "members/x");
    assert_user(&ack, 46);

    let (mut ws, _) = connect_bearer(&server, "rs", &rs(claims(47))).await;
    let ack = ws_join(&mut ws, "members/x").await;
    assert_eq!(ack["action"], "join", "{ack}");
    assert_user(&ack, 47);
}

#[tokio::test]
async fn bad_bearer_token_is_rejected() {
    let server = TestServer::with_config(&config());
    let mut expired = claims(1);
    expired["exp"] = json!(now() - 3600);
    let (mut ws, _) = connect_bearer(&server, "test", &hs(expired.clone())).await;
    let err = ws_recv(&mut ws).await;
    assert_eq!(err["action"], "error", "{err}");
    assert!(
        err["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Auth token rejected: ")),
        "{err}"
    );
    let refused = ws_join(&mut ws, "members/x").await;
    assert_eq!(
        refused["payload"]["message"], "Anonymous clients cannot join this channel.",
        "{refused}"
    );

    // Reject mode: 4401.
    let (mut ws, _) = connect_bearer(&server, "strict", &hs(expired)).await;
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(c)))) => break u16::from(c.code),
            Some(Ok(Message::Close(None))) => break 1005,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, 4401);
}
