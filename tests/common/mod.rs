//! Test harness: a real server on an ephemeral port (in-process, its own actix
//! system on a thread) and real WebSocket clients (tokio-tungstenite).
#![allow(dead_code)]

pub mod process;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use switchboard::{Config, ServerHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const API_KEY: &str = "test-api-key";

/// The test app `test`: HS256, and one rule per flag combination the tests need.
pub const BASE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[limits]
messages_per_minute = 0

[[apps]]
name = "Test"
hash = "test"
api_key = "test-api-key"

[apps.jwt]
algorithm = "HS256"
secret = "test-secret-0123456789abcdef0123456789"

[[apps.channels]]
pattern = "chat/*"
public_messaging = { active = true }
private_messaging = { active = true }
settings = { anonymous_clients = true, presence = true, message_history = 5 }

[[apps.channels]]
pattern = "members/*"
public_messaging = { active = true, auth = true }
private_messaging = { active = true, auth = true }
settings = { presence = true, message_history = 25 }

[[apps.channels]]
pattern = "mixed/*"
public_messaging = { active = true }
private_messaging = { active = true }
settings = { anonymous_clients = true, auth_channel = true, presence = true, message_history = 25 }

[[apps.channels]]
pattern = "readonly"
settings = { anonymous_clients = true, message_history = 5 }
history_events = true

[[apps.channels]]
pattern = "closed"
active = false
settings = { anonymous_clients = true }

[[apps.channels]]
pattern = "user:*"
owner_segment = true
settings = { presence = true }

[[apps.channels]]
pattern = "admin/*"
join_roles = ["admin"]
public_messaging = { active = true }
publish_roles = ["admin"]

[[apps.channels]]
pattern = "forum"
public_messaging = { active = true }
settings = { anonymous_clients = true, nested_channels = true }
"#;

/// One app `test` (HS256 with [`SECRET`], key [`API_KEY`]) on 127.0.0.1:0, with
/// `limits`, `app` and `jwt` appended to their tables and `rules` after them.
pub fn test_app_config(limits: &str, app: &str, jwt: &str, rules: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[limits]
messages_per_minute = 0
{limits}

[[apps]]
name = "Test"
hash = "test"
api_key = "{API_KEY}"
{app}

[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"
{jwt}

{rules}
"#
    )
}

pub struct TestServer {
    pub addr: SocketAddr,
    handle: ServerHandle,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with_config(BASE_CONFIG)
    }

    /// Start with a TOML configuration (its `listen` should be 127.0.0.1:0).
    pub fn with_config(toml: &str) -> TestServer {
        Self::with_loaded_config(Config::from_toml(toml).expect("test config is valid"))
    }

    /// Start with an already loaded configuration (e.g. `Config::load` of a file, so that
    /// relative paths in it resolve); its `listen` should be 127.0.0.1:0.
    pub fn with_loaded_config(config: Config) -> TestServer {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = switchboard::Server::bind(&config).expect("bind");
                tx.send((server.addr, server.handle())).unwrap();
                let handle = server.handle();
                actix_rt::spawn(async move {
                    // Stop when the TestServer is dropped.
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                    handle.shutdown().await;
                });
                server.run().await.expect("server ran");
            });
        });
        let (addr, handle) = rx.recv().expect("server started");
        TestServer {
            addr,
            handle,
            stop: Some(stop_tx),
        }
    }

    pub fn url(&self, hash: &str) -> String {
        format!("ws://{}/rt/{}", self.addr, hash)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful shutdown (as on SIGTERM), awaited.
    pub async fn shutdown(&self) {
        self.handle.shutdown().await;
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url("test"), None).await
    }

    pub async fn client_with_token(&self, token: &str) -> Client {
        Client::connect(&self.url("test"), Some(token)).await
    }

    /// POST a body to the publish API of app `test` with the right key.
    pub async fn publish(&self, body: &Value) -> (u16, Value) {
        http_post(
            self.addr,
            "/api/apps/test/events",
            Some(API_KEY),
            &body.to_string(),
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A minimal HTTP/1.1 POST over a real socket: (status, JSON body or Null).
pub async fn http_post(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, Value) {
    http_request(addr, "POST", path, bearer, body).await
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, raw) = http_raw(addr, "GET", path, None, "").await;
    (status, raw)
}

pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let (status, raw) = http_raw(addr, method, path, bearer, body).await;
    (status, serde_json::from_str(&raw).unwrap_or(Value::Null))
}

async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    // Chunked bodies: take the first chunk's data.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n").nth(1).unwrap_or("").to_string()
    } else {
        body
    };
    (status, body)
}

/// An HS256 token for app `test`.
pub fn token(claims: Value) -> String {
    token_with(jsonwebtoken::Algorithm::HS256, SECRET.as_bytes(), claims)
}

pub fn token_with(alg: jsonwebtoken::Algorithm, key: &[u8], claims: Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let key = match alg {
        jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(key).unwrap(),
        jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(key).unwrap(),
        _ => EncodingKey::from_secret(key),
    };
    encode(&Header::new(alg), &claims, &key).unwrap()
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token for user `id` with extras, valid for an hour.
pub fn user_token(id: i64) -> String {
    token(
        json!({"sub": id, "dbo_id": 7, "extras": {"name": format!("user{id}")}, "exp": now() + 3600}),
    )
}

pub fn user_token_with_roles(id: i64, roles: &[&str]) -> String {
    token(json!({"sub": id, "dbo_id": 7, "roles": roles, "exp": now() + 3600}))
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The protocol the server selected in its 101 answer.
    pub selected_protocol: Option<String>,
    barrier_seq: u64,
}

impl Client {
    /// Wrap a socket connected by the test itself (custom headers).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            selected_protocol: None,
            barrier_seq: 0,
        }
    }

    pub async fn connect(url: &str, token: Option<&str>) -> Client {
        let mut req = url.into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", t.parse().unwrap());
        }
        let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect in time")
            .expect("connect");
        let selected_protocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_string());
        Client {
            ws,
            selected_protocol,
            barrier_seq: 0,
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::Text(text.to_string())).await.unwrap();
    }

    /// The next text frame as JSON (pings are answered by tungstenite).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
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

    /// The next frame, which must have this action.
    pub async fn expect(&mut self, action: &str) -> Value {
        let f = self.recv().await;
        assert_eq!(f["action"], action, "expected {action}, got {f}");
        f
    }

    /// The next frame must be an error with this text.
    pub async fn expect_error(&mut self, message: &str) -> Value {
        let f = self.expect("error").await;
        assert_eq!(f["payload"]["message"], message, "{f}");
        f
    }

    /// Join and return the ack.
    pub async fn join(&mut self, channel: &str, history: bool, presence: bool) -> Value {
        self.send(json!({"action":"join","options":{"channel":channel},"payload":{"history":history,"presence":presence}}))
            .await;
        let ack = self.expect("join").await;
        assert_eq!(ack["options"]["channel"], channel);
        ack
    }

    /// Join with presence and return (ack, presence_full).
    pub async fn join_presence(&mut self, channel: &str) -> (Value, Value) {
        let ack = self.join(channel, false, true).await;
        let full = self.expect("presence_full").await;
        (ack, full)
    }

    pub async fn message(&mut self, channel: &str, payload: Value) {
        self.send(json!({"action":"message","options":{"channel":channel},"payload":payload}))
            .await;
    }

    /// Everything that arrives before a barrier reply on `channel` (which must be joined):
    /// a history request is answered by the channel after every earlier broadcast.
    pub async fn drain_until_barrier(&mut self, channel: &str) -> Vec<Value> {
        self.send(json!({"action":"history","options":{"channel":channel},"payload":null}))
            .await;
        let mut seen = Vec::new();
        loop {
            let f = self.recv().await;
            if f["action"] == "history" && f["options"]["channel"] == channel {
                return seen;
            }
            seen.push(f);
        }
    }

    /// Assert nothing arrives before a barrier on `channel`.
    pub async fn expect_nothing(&mut self, channel: &str) {
        let seen = self.drain_until_barrier(channel).await;
        assert!(seen.is_empty(), "unexpected frames: {seen:?}");
    }

    /// Everything before a connection-level barrier (an unknown action's error).
    pub async fn drain_until_socket_barrier(&mut self) -> Vec<Value> {
        self.barrier_seq += 1;
        let marker = format!("barrier-{}", self.barrier_seq);
        self.send(json!({"action": marker, "options": {"channel": "barrier"}}))
            .await;
        let expected = format!("Invalid frame: unknown action \"{marker}\"");
        let mut seen = Vec::new();
        loop {
            let f = self.recv().await;
            if f["action"] == "error" && f["payload"]["message"] == expected {
                return seen;
            }
            seen.push(f);
        }
    }

    /// Wait for the server's close; returns its code. Frames before it are skipped.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time");
            match msg {
                Some(Ok(Message::Close(Some(c)))) => return u16::from(c.code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

pub fn socket_id(frame: &Value) -> String {
    frame["client"]["socketId"]
        .as_str()
        .expect("client.socketId")
        .to_string()
}
