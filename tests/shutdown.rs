//! Graceful shutdown (docs/protocol.md sections 1 and 8): every socket closed with 1012
//! within `drain_s`, `/readyz` failing and upgrades refused with 503 while draining;
//! and the real binary doing the same on SIGTERM, then exiting 0.

mod common;
use common::*;
use futures_util::future::select_all;
use serde_json::json;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

/// The harness's app `test` with a given drain window.
/// The two tests run one at a time: the binary test picks a free port by binding and
/// releasing it, which the in-process server (port 0) could otherwise be handed too.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(drain_s: u64) -> String {
    BASE_CONFIG.replace("drain_s = 1", &format!("drain_s = {drain_s}"))
}

/// An upgrade attempt that must be refused: Some(status) for an HTTP answer,
/// None when the connection itself was refused or cut.
async fn refused_upgrade(url: &str) -> Option<u16> {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time")
    {
        Ok((_, resp)) => panic!("upgrade accepted: {}", resp.status()),
        Err(tungstenite::Error::Http(resp)) => Some(resp.status().as_u16()),
        Err(tungstenite::Error::Io(_)) => None,
        Err(e) => panic!("unexpected upgrade error: {e}"),
    }
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1012_and_refuses_new_ones() {
    let _serial = SERIAL.lock().await;
    const DRAIN_S: u64 = 4;
    let server = TestServer::with_config(&config(DRAIN_S));
    let mut clients = [
        server.client().await,
        server.client_with_token(&user_token(1)).await,
        server.client().await,
    ];
    clients[0].join_presence("chat/x").await;
    clients[1].join("members/x", false, false).await;
    // clients[2] joined nothing.
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);

    let started = Instant::now();
    let url = server.url("test");
    let observe = async {
        // The drain has begun once the first socket gets its 1012; the closes are
        // spread over drain_s, so the server is still up with sockets left to close.
        let (code, first, _) =
            select_all(clients.iter_mut().map(|c| Box::pin(c.expect_close()))).await;
        assert_eq!(code, 1012, "client {first}");
        let (readyz, _) = http_get(server.addr, "/readyz").await;
        assert_eq!(readyz, 503, "/readyz while draining");
        assert_eq!(
            refused_upgrade(&url).await,
            Some(503),
            "an upgrade while draining"
        );
        for (i, c) in clients.iter_mut().enumerate() {
            if i != first {
                assert_eq!(c.expect_close().await, 1012, "client {i}");
            }
        }
        let all_closed = started.elapsed();
        assert!(
            all_closed <= Duration::from_secs(DRAIN_S),
            "the last socket was closed after {all_closed:?}, drain_s is {DRAIN_S}"
        );
    };
    tokio::join!(server.shutdown(), observe);

    // Stopped: an upgrade is refused outright (or with 503).
    let after = refused_upgrade(&url).await;
    assert!(matches!(after, None | Some(503)), "{after:?}");
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The status of `GET path`, or None while nothing answers.
async fn try_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Removes the temporary config file.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn binary_drains_on_sigterm_and_exits_0() {
    let _serial = SERIAL.lock().await;
    const DRAIN_S: u64 = 1;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let file = TempFile(std::env::temp_dir().join(format!(
        "switchboard-shutdown-{}-{nanos}.toml",
        std::process::id()
    )));
    std::fs::write(&file.0, config(DRAIN_S)).unwrap();
    let addr = free_addr();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .arg("--config")
        .arg(&file.0)
        .env("SWITCHBOARD__SERVER__LISTEN", addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    let pid = child.id().expect("a pid");

    // Wait for /healthz: bounded retries while the process starts.
    let mut healthy = false;
    for _ in 0..100 {
        if try_get(addr, "/healthz").await == Some(200) {
            healthy = true;
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the binary exited during start: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "/healthz did not answer 200 within 10 s");
    assert_eq!(try_get(addr, "/readyz").await, Some(200));

    let url = format!("ws://{addr}/rt/test");
    let mut a = Client::connect(&url, None).await;
    let mut b = Client::connect(&url, Some(&user_token(9))).await;
    a.join_presence("chat/x").await;
    let ack = b.join("members/x", false, false).await;
    assert_eq!(
        ack["client"]["permissions"],
        json!({"dbo_id": 7, "row_id": 9})
    );

    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let signalled = Instant::now();

    assert_eq!(a.expect_close().await, 1012);
    assert_eq!(b.expect_close().await, 1012);

    let limit = Duration::from_secs(DRAIN_S + 3);
    let exit = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.expect("wait for the binary"),
        Err(_) => {
            let _ = child.start_kill();
            panic!("the binary did not exit within {limit:?} of SIGTERM");
        }
    };
    assert!(
        exit.success(),
        "exit status {exit} after {:?}",
        signalled.elapsed()
    );
}
