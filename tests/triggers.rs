//! Webhook triggers (docs/protocol.md section 7) against a scripted HTTP server running
//! in the test: joins allowed or refused, messages passed, replaced or refused,
//! timeouts and non-2xx answers refuse, and what the webhook receives.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the webhook answers.
struct Reply {
    status: u16,
    body: &'static str,
    delay: Duration,
}

fn ok(body: &'static str) -> Reply {
    Reply {
        status: 200,
        body,
        delay: Duration::ZERO,
    }
}

/// One request the webhook received.
#[derive(Debug)]
struct HookRequest {
    method: String,
    path: String,
    /// Lower-cased names.
    headers: HashMap<String, String>,
    body: Value,
}

struct Hook {
    url: String,
    requests: mpsc::UnboundedReceiver<HookRequest>,
}

impl Hook {
    /// A webhook on 127.0.0.1:0 answering each request (one per connection) by `script`.
    async fn start(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(script);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, script) = (tx.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, tx, &*script).await;
                });
            }
        });
        Hook { url, requests: rx }
    }

    /// The next request the webhook received.
    async fn next(&mut self) -> HookRequest {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("a webhook request in time")
            .expect("webhook running")
    }

    /// No request is pending (call after a barrier that follows the requests).
    fn assert_idle(&mut self) {
        if let Ok(r) = self.requests.try_recv() {
            panic!("unexpected webhook request: {r:?}");
        }
    }
}

async fn serve_one(
    mut stream: TcpStream,
    tx: mpsc::UnboundedSender<HookRequest>,
    script: &(dyn Fn(&Value) -> Reply + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("").to_string();
    let path = request_line.next().unwrap_or("").to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let reply = script(&body);
    let _ = tx.send(HookRequest {
        method,
        path,
        headers,
        body,
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let response = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// App `test` whose `t/*` channels call the webhook, with a 500 ms timeout.
fn config(hook_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[[apps]]
name = "Test"
hash = "test"
api_key = "{API_KEY}"

[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"

[[apps.channels]]
pattern = "t/*"
trigger_url = "{hook_url}"
trigger_timeout_ms = 500
public_messaging = {{ active = true }}
settings = {{ anonymous_clients = true, presence = true }}
"#
    )
}

/// The webhook's request must be an authenticated POST with the documented body.
fn assert_hook_request(
    r: &HookRequest,
    action: &str,
    channel: &str,
    client: &Value,
    payload: &Value,
) {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.path, "/hook", "{r:?}");
    assert_eq!(
        r.headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {API_KEY}").as_str()),
        "{r:?}"
    );
    assert!(
        r.headers
            .get("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{r:?}"
    );
    let body = &r.body;
    let keys: Vec<&String> = body
        .as_object()
        .expect("a JSON object body")
        .keys()
        .collect();
    for key in ["action", "channel", "client", "options", "payload"] {
        assert!(body.get(key).is_some(), "missing {key}: {body}");
    }
    assert_eq!(keys.len(), 5, "{body}");
    assert_eq!(body["action"], action, "{body}");
    assert_eq!(body["channel"], channel, "{body}");
    assert_eq!(&body["client"], client, "{body}");
    assert!(body["options"].is_object(), "{body}");
    assert_eq!(body["options"]["channel"], channel, "{body}");
    assert_eq!(&body["payload"], payload, "{body}");
}

fn join_frame(channel: &str) -> Value {
    json!({"action":"join","options":{"channel":channel},"payload":{"history":false,"presence":false}})
}

fn join_payload() -> Value {
    json!({"history": false, "presence": false})
}

/// Joins answer by channel name; messages by their `text`.
fn script(body: &Value) -> Reply {
    let slow = Reply {
        status: 200,
        body: "null",
        delay: Duration::from_secs(3),
    };
    match (body["action"].as_str(), body["channel"].as_str()) {
        (Some("join"), Some("t/deny")) => ok("false"),
        (Some("join"), Some("t/empty")) => ok(""),
        (Some("join"), Some("t/slow")) => slow,
        (Some("join"), Some("t/error")) => Reply {
            status: 500,
            body: "null",
            delay: Duration::ZERO,
        },
        (Some("join"), _) => ok("null"),
        (Some("message"), _) => match body["payload"]["text"].as_str() {
            Some("dirty") => ok(r#"{"text":"clean"}"#),
            Some("refuse") => ok("false"),
            Some("slow") => slow,
            Some("error") => Reply {
                status: 503,
                body: r#"{"text":"from an error page"}"#,
                delay: Duration::ZERO,
            },
            _ => ok("null"),
        },
        _ => Reply {
            status: 400,
            body: "",
            delay: Duration::ZERO,
        },
    }
}

#[tokio::test]
async fn join_allowed_by_null_or_empty_reply() {
    let mut hook = Hook::start(script).await;
    let server = TestServer::with_config(&config(&hook.url));

    let mut anon = server.client().await;
    let ack = anon.join("t/open", false, false).await;
    let r = hook.next().await;
    assert_hook_request(&r, "join", "t/open", &ack["client"], &join_payload());

    // An empty body passes too; the request carries an authenticated client object.
    let mut user = server.client_with_token(&user_token(5)).await;
    let ack = user.join("t/empty", false, false).await;
    assert_eq!(
        ack["client"]["permissions"],
        json!({"dbo_id": 7, "row_id": 5})
    );
    let r = hook.next().await;
    assert_hook_request(&r, "join", "t/empty", &ack["client"], &join_payload());
    assert_eq!(r.body["client"]["extras"], json!({"name": "user5"}));

    // The joined socket is a member: it can send (the webhook passes the message).
    user.message("t/empty", json!({"text": "hi"})).await;
    let m = user.expect("message").await;
    assert_eq!(m["payload"], json!({"text": "hi"}));
    let r = hook.next().await;
    assert_hook_request(
        &r,
        "message",
        "t/empty",
        &ack["client"],
        &json!({"text": "hi"}),
    );
    hook.assert_idle();
}

#[tokio::test]
async fn join_refused_by_false() {
    let mut hook = Hook::start(script).await;
    let server = TestServer::with_config(&config(&hook.url));
    let mut c = server.client().await;
    c.send(join_frame("t/deny")).await;
    let err = c.expect_error("Join rejected").await;
    assert_eq!(err["options"]["channel"], "t/deny");
    let r = hook.next().await;
    assert_eq!(r.body["action"], "join");
    assert_eq!(r.body["channel"], "t/deny");

    // Not a member: a message there is refused before any webhook call.
    c.message("t/deny", json!({"text": "hi"})).await;
    c.expect_error("Not joined to this channel").await;
    let seen = c.drain_until_socket_barrier().await;
    assert!(seen.is_empty(), "{seen:?}");
    hook.assert_idle();
}

#[tokio::test]
async fn message_payload_replaced_by_reply() {
    let mut hook = Hook::start(script).await;
    let server = TestServer::with_config(&config(&hook.url));
    let mut a = server.client().await;
    let mut b = server.client().await;
    let ack_a = a.join("t/room", false, false).await;
    b.join("t/room", false, false).await;
    hook.next().await;
    hook.next().await;

    a.message("t/room", json!({"text": "dirty", "n": 1})).await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], json!({"text": "clean"}), "{m}");
        assert_eq!(m["options"]["channel"], "t/room");
        assert_eq!(m["client"], ack_a["client"]);
    }
    let r = hook.next().await;
    assert_hook_request(
        &r,
        "message",
        "t/room",
        &ack_a["client"],
        &json!({"text": "dirty", "n": 1}),
    );
    // Nothing else: the original payload went nowhere.
    for c in [&mut a, &mut b] {
        let seen = c.drain_until_barrier("t/room").await;
        assert!(seen.is_empty(), "{seen:?}");
    }
}

#[tokio::test]
async fn message_refused_by_false_reaches_nobody() {
    let mut hook = Hook::start(script).await;
    let server = TestServer::with_config(&config(&hook.url));
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("t/room", false, false).await;
    b.join("t/room", false, false).await;
    hook.next().await;
    hook.next().await;

    a.message("t/room", json!({"text": "refuse"})).await;
    let err = a.expect_error("Message rejected").await;
    assert_eq!(err["options"]["channel"], "t/room");
    let r = hook.next().await;
    assert_eq!(r.body["action"], "message");
    assert_eq!(r.body["payload"], json!({"text": "refuse"}));
    for c in [&mut a, &mut b] {
        let seen = c.drain_until_barrier("t/room").await;
        assert!(seen.is_empty(), "{seen:?}");
    }
    // The next message passes.
    a.message("t/room", json!({"text": "fine"})).await;
    assert_eq!(
        b.expect("message").await["payload"],
        json!({"text": "fine"})
    );
}

#[tokio::test]
async fn webhook_timeout_refuses() {
    let mut hook = Hook::start(script).await;
    let server = TestServer::with_config(&config(&hook.url));
    let mut c = server.client().await;

    let started = Instant::now();
    c.send(join_frame("t/slow")).await;
    let err = c.expect_error("Join rejected").await;
    let took = started.elapsed();
    assert_eq!(err["options"]["channel"], "t/slow");
    assert!(
        took < Duration::from_millis(2500),
        "refused after {took:?}: the webhook answers after 3 s, the timeout is 500 ms"
    );
    hook.next().await;

    // A message whose webhook is too slow is refused as well, and delivered to no one.
    let mut b = server.client().await;
    c.join("t/room", false, false).await;
    b.join("t/room", false, false).await;
    hook.next().await;
    hook.next().await;
    let started = Instant::now();
    c.message("t/room", json!({"text": "slow"})).await;
    let err = c.expect_error("Message rejected").await;
    assert_eq!(err["options"]["channel"], "t/room");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "refused after {took:?}");
    hook.next().await;
    for s in [&mut c, &mut b] {
        let seen = s.drain_until_barrier("t/room").await;
        assert!(seen.is_empty(), "{seen:?}");
    }
}

#[tokio::test]
async fn webhook_non_2xx_refuses() {
    let mut hook = Hook::start(script).await;
    let server = TestServer::with_config(&config(&hook.url));
    let mut c = server.client().await;
    c.send(join_frame("t/error")).await;
    let err = c.expect_error("Join rejected").await;
    assert_eq!(err["options"]["channel"], "t/error");
    hook.next().await;

    let mut b = server.client().await;
    c.join("t/room", false, false).await;
    b.join("t/room", false, false).await;
    hook.next().await;
    hook.next().await;
    // A 503 whose body is JSON neither passes nor replaces the message.
    c.message("t/room", json!({"text": "error"})).await;
    let err = c.expect_error("Message rejected").await;
    assert_eq!(err["options"]["channel"], "t/room");
    hook.next().await;
    for s in [&mut c, &mut b] {
        let seen = s.drain_until_barrier("t/room").await;
        assert!(seen.is_empty(), "{seen:?}");
    }
}
