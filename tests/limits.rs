//! Limits, overload and liveness over real sockets (docs/protocol.md sections 1, 3 and 9):
//! frame size (1009), rate limit, channels per socket, max connections (1013),
//! connections per user (4429), slow consumers (1013) and ping/pong timeouts.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// App `test` (the harness's HS256 secret) with `chat/*` open to everyone and
/// `members/*` for authenticated sockets, under the given `[limits]` body.
fn config(limits: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[limits]
{limits}

[[apps]]
name = "Test"
hash = "test"
api_key = "test-api-key"

[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"

[[apps.channels]]
pattern = "chat/*"
public_messaging = {{ active = true }}
private_messaging = {{ active = true }}
settings = {{ anonymous_clients = true, presence = true, message_history = 5 }}
"#
    )
}

/// Send one raw WebSocket frame (tungstenite masks it as a client must).
async fn send_fragment(c: &mut Client, data: &[u8], first: bool, last: bool) {
    let opcode = if first {
        OpCode::Data(Data::Text)
    } else {
        OpCode::Data(Data::Continue)
    };
    c.ws.send(Message::Frame(Frame::message(data.to_vec(), opcode, last)))
        .await
        .unwrap();
}

/// Read frames until a message with this payload arrives; returns the frames skipped.
async fn recv_message(c: &mut Client, payload: &Value) -> Vec<Value> {
    let mut skipped = Vec::new();
    loop {
        let f = c.recv().await;
        if f["action"] == "message" && &f["payload"] == payload {
            return skipped;
        }
        skipped.push(f);
    }
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_1009_and_others_keep_working() {
    let server = TestServer::with_config(&config("max_frame_bytes = 1024"));
    let mut big = server.client().await;
    let mut other = server.client().await;
    big.join("chat/x", false, false).await;
    other.join("chat/x", false, false).await;

    let text = json!({"action":"message","options":{"channel":"chat/x"},"payload":{"pad":"x".repeat(2000)}})
        .to_string();
    big.send_raw(&text).await;
    assert_eq!(big.expect_close().await, 1009);

    // The other member is untouched and the channel still delivers.
    other.message("chat/x", json!({"text": "still here"})).await;
    let m = other.expect("message").await;
    assert_eq!(m["payload"], json!({"text": "still here"}));
    let seen = other.drain_until_barrier("chat/x").await;
    assert!(
        seen.iter().all(|f| f["action"] != "message"),
        "the oversized message must not be delivered: {seen:?}"
    );
}

#[tokio::test]
async fn fragmented_message_over_max_frame_bytes_closes_1009() {
    let server = TestServer::with_config(&config("max_frame_bytes = 1024"));
    let mut a = server.client().await;
    let mut other = server.client().await;
    a.join("chat/x", false, false).await;
    other.join("chat/x", false, false).await;

    // Control: a fragmented message under the limit is reassembled and delivered.
    let small = json!({"action":"message","options":{"channel":"chat/x"},"payload":{"pad":"y".repeat(400)}})
        .to_string();
    let bytes = small.as_bytes();
    let third = bytes.len() / 3;
    send_fragment(&mut a, &bytes[..third], true, false).await;
    send_fragment(&mut a, &bytes[third..2 * third], false, false).await;
    send_fragment(&mut a, &bytes[2 * third..], false, true).await;
    let m = other.expect("message").await;
    assert_eq!(m["payload"], json!({"pad": "y".repeat(400)}));
    let m = a.expect("message").await;
    assert_eq!(m["payload"], json!({"pad": "y".repeat(400)}));

    // Three fragments of 600 bytes each: every frame is under the limit, the message is not.
    let big = json!({"action":"message","options":{"channel":"chat/x"},"payload":{"pad":"z".repeat(1700)}})
        .to_string();
    let bytes = big.as_bytes();
    assert!(bytes.len() > 1024);
    let chunks: Vec<&[u8]> = bytes.chunks(600).collect();
    assert!(chunks.iter().all(|c| c.len() <= 600));
    for (i, chunk) in chunks.iter().enumerate() {
        send_fragment(&mut a, chunk, i == 0, i + 1 == chunks.len()).await;
    }
    assert_eq!(a.expect_close().await, 1009);

    other.message("chat/x", json!({"text": "after"})).await;
    let m = other.expect("message").await;
    assert_eq!(m["payload"], json!({"text": "after"}));
    let seen = other.drain_until_barrier("chat/x").await;
    assert!(seen.iter().all(|f| f["action"] != "message"), "{seen:?}");
}

#[tokio::test]
async fn rate_limit_refuses_the_fourth_message() {
    let server = TestServer::with_config(&config("messages_per_minute = 3"));
    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("chat/x", false, false).await;
    b.join("chat/x", false, false).await;

    for i in 0..4 {
        a.message("chat/x", json!({"n": i})).await;
    }
    // The sender sees its three echoes and one error for the fourth, in some order.
    let seen = a.drain_until_barrier("chat/x").await;
    let echoes: Vec<&Value> = seen
        .iter()
        .filter(|f| f["action"] == "message")
        .map(|f| &f["payload"])
        .collect();
    assert_eq!(
        echoes,
        vec![&json!({"n": 0}), &json!({"n": 1}), &json!({"n": 2})],
        "{seen:?}"
    );
    let errors: Vec<&Value> = seen.iter().filter(|f| f["action"] == "error").collect();
    assert_eq!(errors.len(), 1, "{seen:?}");
    assert_eq!(errors[0]["payload"]["message"], "Rate limit exceeded");
    assert_eq!(errors[0]["options"]["channel"], "chat/x");
    assert_eq!(seen.len(), 4, "{seen:?}");

    // The other member got the first three only.
    let got = b.drain_until_barrier("chat/x").await;
    let payloads: Vec<&Value> = got.iter().map(|f| &f["payload"]).collect();
    assert_eq!(
        payloads,
        vec![&json!({"n": 0}), &json!({"n": 1}), &json!({"n": 2})],
        "{got:?}"
    );
}

#[tokio::test]
async fn too_many_channels() {
    let server = TestServer::with_config(&config("max_channels_per_socket = 2"));
    let mut c = server.client().await;
    c.join("chat/a", false, false).await;
    c.join("chat/b", false, false).await;
    c.send(json!({"action":"join","options":{"channel":"chat/c"},"payload":{"history":false,"presence":false}}))
        .await;
    let err = c.expect_error("Too many channels").await;
    assert_eq!(err["options"]["channel"], "chat/c");
    // A repeated join of a joined channel is not a new channel.
    c.join("chat/a", false, false).await;
    // Not joined: a message there is refused.
    c.message("chat/c", json!(1)).await;
    c.expect_error("Not joined to this channel").await;
    // Leaving frees a place.
    c.send(json!({"action":"leave","options":{"channel":"chat/a"},"payload":null}))
        .await;
    c.expect("leave").await;
    c.join("chat/c", false, false).await;
}

#[tokio::test]
async fn max_connections_closes_the_third_socket_with_1013() {
    let server = TestServer::with_config(&config("max_connections = 2"));
    let mut a = server.client().await;
    let mut b = server.client().await;
    let mut third = server.client().await;
    assert_eq!(third.expect_close().await, 1013);
    // The first two are unaffected.
    a.join("chat/x", false, false).await;
    b.join("chat/x", false, false).await;
    a.message("chat/x", json!("hi")).await;
    assert_eq!(b.expect("message").await["payload"], "hi");
}

/// Connect as `token`; Ok(client) when the socket works (its join is acked),
/// Err(close code) when the server closed it first.
async fn try_user(server: &TestServer, token: &str) -> Result<Client, u16> {
    let mut c = server.client_with_token(token).await;
    c.send(json!({"action":"join","options":{"channel":"chat/x"},"payload":{"history":false,"presence":false}}))
        .await;
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["action"] == "join" {
                    return Ok(c);
                }
            }
            Some(Ok(Message::Close(Some(c)))) => return Err(u16::from(c.code)),
            Some(Ok(Message::Close(None))) => return Err(1005),
            Some(Ok(_)) => continue,
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

#[tokio::test]
async fn max_connections_per_user() {
    let server = TestServer::with_config(&config("max_connections_per_user = 1"));
    let first = try_user(&server, &user_token(1))
        .await
        .expect("first socket");
    assert_eq!(try_user(&server, &user_token(1)).await.err(), Some(4429));
    // Another user, and anonymous sockets, are not affected.
    let _other = try_user(&server, &user_token(2))
        .await
        .expect("another user");
    let _anon1 = server.client().await;
    let _anon2 = server.client().await;

    // The first socket closes; wait for the server's answer to the close.
    let mut first = first;
    first.ws.close(None).await.expect("close frame sent");
    loop {
        match tokio::time::timeout(WAIT, first.ws.next())
            .await
            .expect("server answers the close")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
    // The server may release the place a moment later: retry within the harness timeout.
    let deadline = Instant::now() + WAIT;
    let mut refusals = 0;
    let again = loop {
        match try_user(&server, &user_token(1)).await {
            Ok(c) => break c,
            Err(code) => {
                assert_eq!(code, 4429);
                refusals += 1;
                assert!(
                    Instant::now() < deadline,
                    "user 1 still refused after {refusals} attempts"
                );
            }
        }
    };
    drop(again);
}

#[tokio::test]
async fn slow_consumer_is_closed_and_others_get_everything() {
    const COUNT: usize = 1000;
    let server =
        TestServer::with_config(&config("send_queue_bytes = 65536\nmax_frame_bytes = 16384"));
    // S joins with presence, then never reads again.
    let mut slow = server.client().await;
    let (ack, _) = slow.join_presence("chat/x").await;
    let slow_id = socket_id(&ack);

    let mut normal = server.client().await;
    normal.join_presence("chat/x").await;

    let mut publisher = server.client().await;
    publisher.join("chat/x", false, false).await;

    // Lockstep: the publisher waits for its echo and N for its copy before the next
    // message, so N is never more than a frame behind; S reads nothing.
    let is_slow_leave = |f: &Value| {
        f["action"] == "presence_update"
            && f["payload"]["action"] == "leave"
            && f["payload"]["presence"]["socketId"] == slow_id.as_str()
    };
    let pad = "p".repeat(12 * 1024);
    let mut left = false;
    for i in 0..COUNT {
        let payload = json!({"i": i, "pad": pad});
        publisher.message("chat/x", payload.clone()).await;
        recv_message(&mut publisher, &payload).await;
        // N: the message, with nothing missing or out of order before it.
        loop {
            let f = normal.recv().await;
            if is_slow_leave(&f) {
                left = true;
            } else if f["action"] == "message" {
                assert_eq!(f["payload"]["i"], i, "N got message out of order");
                break;
            }
        }
    }
    // S left at once when its queue overflowed: the leave precedes a barrier on N.
    if !left {
        left = normal
            .drain_until_barrier("chat/x")
            .await
            .iter()
            .any(is_slow_leave);
    }

    // S reads at last: some messages, then a 1013 close or the end of the connection.
    let mut received = 0;
    let mut close_code = None;
    let mut ended = false;
    loop {
        let Ok(next) = tokio::time::timeout(WAIT, slow.ws.next()).await else {
            break;
        };
        match next {
            Some(Ok(Message::Text(t))) => {
                let f: Value = serde_json::from_str(&t).unwrap();
                if f["action"] == "message" {
                    received += 1;
                }
            }
            Some(Ok(Message::Close(c))) => {
                close_code = Some(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                ended = true;
                break;
            }
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => {
                ended = true;
                break;
            }
        }
    }
    let summary = format!(
        "S read {received} of {COUNT} messages, then {}; N saw S's leave: {left}",
        match (ended, close_code) {
            (true, Some(code)) => format!("a close frame {code}"),
            (true, None) => "the end of the connection".to_string(),
            (false, _) => "nothing more for 5 s (still open)".to_string(),
        }
    );
    eprintln!("{summary}");
    assert!(received < COUNT, "{summary}");
    assert!(ended, "{summary}");
    if let Some(code) = close_code {
        assert_eq!(code, 1013, "{summary}");
    }
    assert!(left, "{summary}");
}

#[tokio::test]
async fn ping_keeps_readers_and_drops_silent_sockets() {
    let server = TestServer::with_config(&config("ping_interval_s = 1\npong_timeout_s = 2"));
    let mut live = server.client().await;

    // A raw client: completes the upgrade, then never sends a byte.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /rt/test HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();

    let silent = async {
        let mut buf = vec![0u8; 4096];
        let mut all = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
                .await
                .expect("the silent socket is dropped within 10 s")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        (started.elapsed(), all)
    };
    // Meanwhile the tungstenite client keeps reading (and so answers pings) for 4 s.
    let reading = async {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(4000);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, live.ws.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Close(c)))) => panic!("live client closed: {c:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("live client ended: {other:?}"),
            }
        }
        pings
    };
    let ((dropped_after, raw_bytes), pings) = tokio::join!(silent, reading);

    let head = String::from_utf8_lossy(&raw_bytes);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        dropped_after >= Duration::from_secs(2),
        "dropped after {dropped_after:?}, before pong_timeout_s"
    );
    assert!(pings >= 2, "server pinged {pings} times in 4 s");
    // Past 3 s, the reading client is still connected and served.
    assert!(started.elapsed() > Duration::from_secs(3));
    live.join("chat/x", false, false).await;
    live.message("chat/x", json!("alive")).await;
    assert_eq!(live.expect("message").await["payload"], "alive");
}
