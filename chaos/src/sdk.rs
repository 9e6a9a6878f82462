//! Clients that are the real `@xano/js-sdk`: one Node process each
//! (`tests/sdk/helpers/chaos-client.mjs`), which joins, sends numbered messages
//! through the SDK and lets the SDK reconnect by itself. Its JSON lines on stdout
//! become the same log as a raw client's, so the checker reads both alike.
//! Times come as wall-clock ms and are mapped onto `Instant`s: a send is stamped
//! just before the SDK sends and a join when its ack arrived, so the checker never
//! owes a member a message sent before it joined.

use crate::check::{Sent, Session};
use crate::clients::{Client, Command, Log, Phase};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

/// Where the SDK client script is, from the repository root.
pub const SCRIPT: &str = "tests/sdk/helpers/chaos-client.mjs";

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `Instant` of a wall-clock time in ms (same machine, same clock).
fn instant_of(ms: u64) -> Instant {
    static BASE: OnceLock<(Instant, u64)> = OnceLock::new();
    let (at, base_ms) = *BASE.get_or_init(|| (Instant::now(), wall_ms()));
    if ms >= base_ms {
        at + Duration::from_millis(ms - base_ms)
    } else {
        at.checked_sub(Duration::from_millis(base_ms - ms))
            .unwrap_or(at)
    }
}

/// Start SDK client `id` on `channel`, its sockets going round the brokers.
pub fn start(
    id: usize,
    channel: String,
    nodes: &[SocketAddr],
    every_ms: u64,
    mut phase: watch::Receiver<Phase>,
) -> std::io::Result<Client> {
    instant_of(wall_ms());
    let ports: Vec<String> = nodes.iter().map(|a| a.port().to_string()).collect();
    let mut child = tokio::process::Command::new("node")
        .arg(Path::new(SCRIPT))
        .args([
            &ports.join(","),
            "chaos",
            &channel,
            &id.to_string(),
            &every_ms.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let log = Arc::new(Mutex::new(Log::default()));
    let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
    let reader_log = log.clone();
    let reader_channel = channel.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                on_line(id, &reader_channel, &v, &reader_log);
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                Some(Command::Barrier(tag)) = rx.recv() => format!("barrier {tag}\n"),
                changed = phase.changed() => {
                    if changed.is_err() {
                        "done\n".to_string()
                    } else {
                        match *phase.borrow() {
                            Phase::Sending => continue,
                            Phase::Quiet => "quiet\n".to_string(),
                            Phase::Done => "done\n".to_string(),
                        }
                    }
                }
            };
            let done = line == "done\n";
            if stdin.write_all(line.as_bytes()).await.is_err() || done {
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                return;
            }
        }
    });
    Ok(Client {
        id,
        channel,
        log,
        commands,
    })
}

fn on_line(id: usize, channel: &str, v: &Value, log: &Mutex<Log>) {
    let mut l = log.lock().unwrap();
    let ms = v["ms"].as_u64().unwrap_or_else(wall_ms);
    match v["t"].as_str() {
        Some("session") => {
            if let Some(i) = l.open {
                l.sessions[i].open_at_end = false;
            }
            l.sessions.push(Session {
                socket_id: v["socket"].as_str().unwrap_or_default().to_string(),
                channel: channel.to_string(),
                authenticated: false,
                joined: instant_of(ms),
                open_at_end: true,
                received: Vec::new(),
                direct: Vec::new(),
            });
            l.open = Some(l.sessions.len() - 1);
            l.barriers.clear();
        }
        Some("closed") => {
            if let Some(i) = l.open.take() {
                l.sessions[i].open_at_end = false;
            }
            l.barriers.clear();
        }
        Some("sending") => {
            let Some(n) = v["n"].as_u64() else { return };
            l.sent.push(Sent {
                id: (id, n),
                channel: channel.to_string(),
                at: instant_of(ms),
                accepted: false,
                auth_only: false,
            });
        }
        Some("recv") => {
            let (Some(c), Some(n)) = (v["c"].as_u64(), v["n"].as_u64()) else {
                return;
            };
            let Some(i) = l.open else { return };
            l.sessions[i].received.push((c as usize, n));
            if c as usize == id {
                if let Some(s) = l.sent.iter_mut().rev().find(|s| s.id == (id, n)) {
                    s.accepted = true;
                }
            }
        }
        Some("barrier") => {
            if let Some(tag) = v["tag"].as_str() {
                l.barriers.insert(tag.to_string());
            }
        }
        _ => {}
    }
}
