//! The `switchboard` binary as a child process, for tests that need a real
//! process (signals, SIGKILL, a second node). It listens on `127.0.0.1:0` and
//! the test learns the port from the broker's own "listening" log line: a port
//! picked by the test and released before the child binds it can be handed to
//! another process in between.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `switchboard --log-format json serve --config <config>`, stdout and stderr
/// into `log`, `RUST_LOG=info` (the "listening" line must be logged), and
/// nothing from the environment overriding the test's configuration. The
/// config should say `listen = "127.0.0.1:0"`; see [`spawn_listening`].
pub fn broker_command(config: &Path, log: &Path) -> Command {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["--log-format", "json", "serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHBOARD__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Spawn `cmd` (from [`broker_command`]) and wait, bounded, for the address it
/// bound. Panics with the log if the process exits first or never says.
pub async fn spawn_listening(mut cmd: Command, log: &Path) -> (Child, SocketAddr) {
    let mut child = cmd.spawn().expect("start the switchboard binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(listening_addr) {
            return (child, addr);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("switchboard exited ({status}) before listening; its log:\n{text}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("switchboard did not log \"listening\" within 10 s; its log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `addr` of a JSON log line whose message is "listening".
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")? != "listening" {
        return None;
    }
    fields.get("addr")?.as_str()?.parse().ok()
}

/// A unique path in the temp dir for a test's config or log file.
pub fn temp_path(tag: &str, ext: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "switchboard-test-{}-{nanos}-{}-{tag}.{ext}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Print the last `lines` lines of a log (for a failing test's output).
pub fn print_tail(what: &str, path: &Path, lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    eprintln!(
        "===== {what} ({}, last {lines} lines) =====\n{tail}\n=====",
        path.display()
    );
}

/// The status of `GET path`, or None when nothing answers within 2 s.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

/// Poll `GET path` until it answers `status`; how long that took. Fails after `within`.
pub async fn wait_status(addr: SocketAddr, path: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = http_status(addr, path).await;
        if got == Some(status) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{addr}: {path} still {got:?} (want {status}) after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
