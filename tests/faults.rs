//! Faults with real processes (issue 6; docs/protocol.md sections 8 and 9): SIGTERM during
//! traffic on one node and in a cluster, and a slow Redis (`DEBUG SLEEP`).
//!
//! What "nothing accepted is lost" means here, precisely:
//!
//! - A client message is **accepted** when its sender received its echo (a public
//!   message's audience includes its sender) before its socket was closed. A message
//!   that got neither its echo nor an error frame before the close is
//!   **unacknowledged**: the broker may have read it or not, and it may reach the
//!   others or not, but at most once. (A message the broker never read cannot be
//!   accepted; the client cannot tell which of these it was.)
//! - A backend event is accepted when the publish API answered 202.
//! - A channel has one order (on every node). A member receives exactly a prefix of
//!   it: from its join (before the traffic here) up to the point where it was closed,
//!   with nothing missing, repeated or reordered in between. So a member is "still
//!   connected at that point" of the channel's order exactly when its stream reaches
//!   past that point, and then it has every message up to there.
//! - As a cross-check against a broker that drops what it had queued for a socket it
//!   closes (which a prefix alone would not show): an accepted message must have
//!   reached every member whose close frame arrived more than `SLACK` after the
//!   sender's echo of that message.

mod cluster_support;
mod common;

use cluster_support::{Node, Opts, Redis};
use common::process::{http_status, print_tail, temp_path, wait_status};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// See the module comment: a close arriving this long after an echo proves the member
/// was connected when the message was delivered.
const SLACK: Duration = Duration::from_secs(1);

/// One test at a time: they measure delays, and run several processes each.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// A single node (no Redis): the real binary.

struct Single {
    addr: SocketAddr,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    config: PathBuf,
}

impl Single {
    async fn start(drain_s: u64) -> Single {
        let config = temp_path("single", "toml");
        std::fs::write(
            &config,
            format!(
                r#"
[server]
listen = "127.0.0.1:0"
drain_s = {drain_s}

[limits]
messages_per_minute = 0
frames_per_minute = 0

[[apps]]
name = "Test"
hash = "test"
api_key = "{key}"

[apps.jwt]
algorithm = "HS256"
secret = "{secret}"

[[apps.channels]]
pattern = "chat/*"
public_messaging = {{ active = true }}
settings = {{ anonymous_clients = true, message_history = 5 }}
"#,
                key = common::API_KEY,
                secret = common::SECRET,
            ),
        )
        .unwrap();
        let log = temp_path("single", "log");
        let (child, addr) =
            common::process::spawn_listening(cluster_support::broker_command(&config, &log), &log)
                .await;
        let node = Single {
            addr,
            pid: child.id(),
            child: Some(child),
            log,
            config,
        };
        wait_status(addr, "/readyz", 200, Duration::from_secs(10)).await;
        node
    }

    fn url(&self) -> String {
        format!("ws://{}/rt/test", self.addr)
    }

    fn sigterm(&self) {
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill -TERM {}", self.pid);
    }

    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            print_tail("single node log", &self.log, 80);
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// POST a publish request; the status, or None when the node did not answer.
async fn try_publish(addr: SocketAddr, hash: &str, key: &str, body: &Value) -> Option<u16> {
    let body = body.to_string();
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "POST /api/apps/{hash}/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

// ---------------------------------------------------------------------------
// Members: a socket in one channel that may publish at a steady pace, and records
// everything it receives with its arrival time.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    /// A client message: (sender id, index).
    Msg(usize, u64),
    /// A backend event.
    Event(u64),
}

#[derive(Debug, Clone, PartialEq)]
enum End {
    Closed(u16),
    /// Saw the end-of-test marker on its channel.
    Marker,
    Ended(String),
}

#[derive(Debug)]
struct Log {
    id: usize,
    channel: String,
    /// Messages and events, in arrival order, with arrival times.
    seen: Vec<(Key, Instant)>,
    errors: Vec<Value>,
    /// When each of its own messages was sent.
    sent_at: Vec<Instant>,
    end: End,
    end_at: Instant,
}

impl Log {
    fn keys(&self) -> Vec<Key> {
        self.seen.iter().map(|(k, _)| *k).collect()
    }

    /// The indices of its own messages that came back to it (accepted), with when.
    fn echoes(&self) -> BTreeMap<u64, Instant> {
        self.seen
            .iter()
            .filter_map(|(k, t)| match k {
                Key::Msg(s, i) if *s == self.id => Some((*i, *t)),
                _ => None,
            })
            .collect()
    }
}

/// How a member behaves.
#[derive(Clone)]
struct Role {
    /// Publish one message every this long (None: only listen).
    every: Option<Duration>,
    /// When `stop` is set: send the end-of-test marker (one member per channel).
    marker: bool,
}

const LISTEN: Role = Role {
    every: None,
    marker: false,
};

fn sender(ms: u64) -> Role {
    Role {
        every: Some(Duration::from_millis(ms)),
        marker: false,
    }
}

/// Shared by a test's members: `go` starts the publishing (once every member has
/// joined, so that every stream starts at the channel's first message), `stop` ends it.
#[derive(Default)]
struct Ctl {
    go: AtomicBool,
    stop: AtomicBool,
}

impl Ctl {
    fn new() -> Arc<Ctl> {
        Arc::new(Ctl::default())
    }

    fn go(&self) {
        self.go.store(true, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(common::WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect");
    ws
}

/// Connect to `url`, join `channel` (ack awaited), then run `role` until the socket
/// is closed, the marker arrives, or nothing happens for 5 s.
async fn member(
    url: &str,
    id: usize,
    channel: &str,
    role: Role,
    ctl: Arc<Ctl>,
) -> tokio::task::JoinHandle<Log> {
    let mut ws = connect(url).await;
    ws.send(Message::Text(
        json!({"action":"join","options":{"channel":channel},"payload":{"history":false,"presence":false}})
            .to_string(),
    ))
    .await
    .unwrap();
    loop {
        let m = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .expect("join ack in time")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = m {
            let f: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(f["action"], "join", "{f}");
            break;
        }
    }
    let channel = channel.to_string();
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut log = Log {
            id,
            channel: channel.clone(),
            seen: Vec::new(),
            errors: Vec::new(),
            sent_at: Vec::new(),
            end: End::Ended("not yet".into()),
            end_at: Instant::now(),
        };
        let mut tick = tokio::time::interval(role.every.unwrap_or(Duration::from_millis(20)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sending = role.every.is_some() || role.marker;
        loop {
            tokio::select! {
                m = stream.next() => {
                    let at = Instant::now();
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            let f: Value = serde_json::from_str(&t).unwrap();
                            match f["action"].as_str() {
                                Some("message") => {
                                    let p = &f["payload"];
                                    if !p["marker"].is_null() {
                                        log.end = End::Marker;
                                        log.end_at = at;
                                        break;
                                    }
                                    let s = p["s"].as_u64().expect("a sender id") as usize;
                                    let i = p["i"].as_u64().expect("an index");
                                    log.seen.push((Key::Msg(s, i), at));
                                }
                                Some("event") => {
                                    let e = f["payload"]["data"]["e"].as_u64().expect("an event index");
                                    log.seen.push((Key::Event(e), at));
                                }
                                _ => log.errors.push(f),
                            }
                        }
                        Some(Ok(Message::Close(c))) => {
                            log.end = End::Closed(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                            log.end_at = at;
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            log.end = End::Ended(e.to_string());
                            log.end_at = at;
                            break;
                        }
                        None => {
                            log.end = End::Ended("end of stream".into());
                            log.end_at = at;
                            break;
                        }
                    }
                }
                _ = tick.tick(), if sending => {
                    if ctl.stop.load(Ordering::Relaxed) {
                        sending = false;
                        if role.marker {
                            let frame = json!({"action":"message","options":{"channel":channel},"payload":{"marker": id}});
                            let _ = sink.send(Message::Text(frame.to_string())).await;
                        }
                        continue;
                    }
                    if role.every.is_none() || !ctl.go.load(Ordering::Relaxed) {
                        continue;
                    }
                    let i = log.sent_at.len() as u64;
                    let frame = json!({"action":"message","options":{"channel":channel},"payload":{"s": id, "i": i}});
                    log.sent_at.push(Instant::now());
                    if sink.send(Message::Text(frame.to_string())).await.is_err() {
                        sending = false;
                    }
                }
                _ = tokio::time::sleep(common::WAIT) => {
                    log.end = End::Ended("nothing for 5 s".into());
                    log.end_at = Instant::now();
                    break;
                }
            }
        }
        log
    })
}

// ---------------------------------------------------------------------------
// Checks

/// `short` is a prefix of `long`.
fn assert_prefix(what: &str, short: &[Key], long: &[Key]) {
    let n = short.len().min(long.len());
    if let Some(at) = (0..n).find(|&k| short[k] != long[k]) {
        panic!(
            "{what}: diverges from the channel's order at position {at}: got {:?}, the order has {:?} \
             (around: got {:?}, order {:?})",
            short[at],
            long[at],
            &short[at.saturating_sub(3)..(at + 3).min(short.len())],
            &long[at.saturating_sub(3)..(at + 3).min(long.len())],
        );
    }
    assert!(
        short.len() <= long.len(),
        "{what}: {} frames, more than the longest stream ({})",
        short.len(),
        long.len()
    );
}

fn assert_no_duplicates(what: &str, order: &[Key]) {
    let mut seen = BTreeSet::new();
    for k in order {
        assert!(seen.insert(*k), "{what}: {k:?} delivered twice");
    }
}

/// Each sender's messages appear in `order` as 0, 1, 2, … with no hole: the broker
/// reads a socket in order, so if it delivered message i + 1 it had read message i.
fn assert_senders_gapless(what: &str, order: &[Key]) {
    let mut next: HashMap<usize, u64> = HashMap::new();
    for k in order {
        if let Key::Msg(s, i) = k {
            let want = next.entry(*s).or_insert(0);
            assert_eq!(
                *i, *want,
                "{what}: sender {s}'s message {i} arrived where {want} was due (a hole or a reorder)"
            );
            *want += 1;
        }
    }
}

/// The cross-check of the module comment: every accepted message of `senders` reached
/// every member in `members` whose stream ended more than SLACK after the echo.
fn assert_reached_members_open_after(what: &str, senders: &[&Log], members: &[&Log]) -> usize {
    let mut checked = 0;
    for s in senders {
        for (i, echoed_at) in s.echoes() {
            for m in members {
                if m.end_at > echoed_at + SLACK {
                    assert!(
                        m.seen.iter().any(|(k, _)| *k == Key::Msg(s.id, i)),
                        "{what}: message {i} of sender {} was echoed to it {:?} before member {} \
                         was closed, but that member never got it",
                        s.id,
                        m.end_at.duration_since(echoed_at),
                        m.id
                    );
                    checked += 1;
                }
            }
        }
    }
    checked
}

// ---------------------------------------------------------------------------

/// SIGTERM on a single node while every member of three channels publishes and a
/// backend posts events: every socket gets 1012, each member's stream is a prefix of
/// its channel's one order with no hole, every accepted message and event reached
/// every member still connected at that point, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn sigterm_on_a_single_node_closes_1012_and_loses_nothing_accepted() {
    let _serial = serial();
    const DRAIN_S: u64 = 2;
    const CHANNELS: usize = 3;
    const MEMBERS: usize = 6;
    let mut node = Single::start(DRAIN_S).await;
    let ctl = Ctl::new();
    let channels: Vec<String> = (0..CHANNELS).map(|c| format!("chat/term{c}")).collect();
    let mut tasks = Vec::new();
    for (c, ch) in channels.iter().enumerate() {
        for m in 0..MEMBERS {
            let id = c * MEMBERS + m;
            tasks.push(member(&node.url(), id, ch, sender(10), ctl.clone()).await);
        }
    }
    ctl.go();
    // A backend: one event per channel every 25 ms, until the node refuses (503) or
    // is gone. Which were accepted (202)?
    let events = {
        let addr = node.addr;
        let channels = channels.clone();
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = None;
            for k in 0u64.. {
                let body: Vec<Value> = channels
                    .iter()
                    .map(|c| json!({"channel": c, "event": "tick", "data": {"e": k}}))
                    .collect();
                match try_publish(addr, "test", common::API_KEY, &json!(body)).await {
                    Some(202) => accepted.push(k),
                    other => {
                        refused = Some((k, other));
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (accepted, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    node.sigterm();
    let signalled = Instant::now();
    let status = node.wait_exit(Duration::from_secs(DRAIN_S + 5)).await;
    let exited = signalled.elapsed();
    let (accepted_events, refused_event) = events.await.unwrap();
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.unwrap());
    }
    assert!(status.success(), "exit status {status} after SIGTERM");

    let mut summary = Vec::new();
    for ch in &channels {
        let members: Vec<&Log> = logs.iter().filter(|l| &l.channel == ch).collect();
        for m in &members {
            assert_eq!(
                m.end,
                End::Closed(1012),
                "{ch}: member {} ended with {:?}",
                m.id,
                m.end
            );
            assert!(
                m.end_at.duration_since(signalled) <= Duration::from_secs(DRAIN_S + 1),
                "{ch}: member {} closed {:?} after SIGTERM (drain_s {DRAIN_S})",
                m.id,
                m.end_at.duration_since(signalled)
            );
            assert!(m.errors.is_empty(), "{ch}: member {}: {:?}", m.id, m.errors);
        }
        let longest = members.iter().max_by_key(|m| m.seen.len()).unwrap().keys();
        for m in &members {
            assert_prefix(&format!("{ch}: member {}", m.id), &m.keys(), &longest);
        }
        assert_no_duplicates(ch, &longest);
        assert_senders_gapless(ch, &longest);
        // Every accepted event is in the order, and nothing else is.
        let events_in: Vec<u64> = longest
            .iter()
            .filter_map(|k| match k {
                Key::Event(e) => Some(*e),
                _ => None,
            })
            .collect();
        assert_eq!(
            events_in, accepted_events,
            "{ch}: the events in the channel's order are not exactly the accepted ones"
        );
        let checked = assert_reached_members_open_after(ch, &members, &members);
        let sent: usize = members.iter().map(|m| m.sent_at.len()).sum();
        let accepted: usize = members.iter().map(|m| m.echoes().len()).sum();
        let delivered_unacked = longest
            .iter()
            .filter(|k| match k {
                Key::Msg(s, i) => !members
                    .iter()
                    .find(|m| m.id == *s)
                    .unwrap()
                    .echoes()
                    .contains_key(i),
                _ => false,
            })
            .count();
        let lens: Vec<usize> = members.iter().map(|m| m.seen.len()).collect();
        summary.push(format!(
            "{ch}: {sent} sent, {accepted} accepted (echoed), {delivered_unacked} delivered to others \
             without an echo, {} never delivered; {} events; streams {lens:?}; {checked} \
             (message, later-closed member) pairs cross-checked",
            sent - accepted - delivered_unacked,
            events_in.len(),
        ));
    }
    eprintln!(
        "SIGTERM on one node: exit 0 after {exited:?}; events: {} accepted, then {refused_event:?}\n{}",
        accepted_events.len(),
        summary.join("\n")
    );
    assert!(!accepted_events.is_empty());
}

/// SIGTERM on node A of two (and Redis) while members on both nodes publish in two
/// channels: A's members get 1012 and A exits 0; B's members all see one and the same
/// order, which holds every accepted message (from either node) exactly once and
/// extends what each of A's members saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn sigterm_in_a_cluster_the_other_node_gets_every_accepted_message() {
    let _serial = serial();
    const CHANNELS: usize = 2;
    const PER_NODE: usize = 3;
    let redis = cluster_support::Redis::start().await;
    let opts = Opts::default();
    let mut a = Node::start("A", &redis, &opts).await;
    let b = Node::start("B", &redis, &opts).await;
    let ctl = Ctl::new();
    let channels: Vec<String> = (0..CHANNELS).map(|c| format!("chat/cterm{c}")).collect();
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    let mut id = 0;
    for ch in &channels {
        for k in 0..PER_NODE {
            on_a.push(member(&a.url(), id, ch, sender(20), ctl.clone()).await);
            id += 1;
            let role = Role {
                every: Some(Duration::from_millis(20)),
                marker: k == 0,
            };
            on_b.push(member(&b.url(), id, ch, role, ctl.clone()).await);
            id += 1;
        }
    }
    ctl.go();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.sigterm();
    let signalled = Instant::now();
    let status = a.wait_exit(Duration::from_secs(6)).await;
    let exited = signalled.elapsed();
    // B's members go on a little, then stop; the marker closes each channel's stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ctl.stop();
    let mut logs_a = Vec::new();
    for t in on_a {
        logs_a.push(t.await.unwrap());
    }
    let mut logs_b = Vec::new();
    for t in on_b {
        logs_b.push(t.await.unwrap());
    }
    assert!(
        status.success(),
        "node A: exit status {status} after SIGTERM"
    );

    let mut summary = Vec::new();
    for ch in &channels {
        let la: Vec<&Log> = logs_a.iter().filter(|l| &l.channel == ch).collect();
        let lb: Vec<&Log> = logs_b.iter().filter(|l| &l.channel == ch).collect();
        for m in &la {
            assert_eq!(m.end, End::Closed(1012), "{ch}: A's member {}", m.id);
            assert!(
                m.errors.is_empty(),
                "{ch}: A's member {}: {:?}",
                m.id,
                m.errors
            );
        }
        for m in &lb {
            assert_eq!(m.end, End::Marker, "{ch}: B's member {}", m.id);
            assert!(
                m.errors.is_empty(),
                "{ch}: B's member {}: {:?}",
                m.id,
                m.errors
            );
        }
        let order = lb[0].keys();
        for m in &lb[1..] {
            assert_eq!(
                m.keys(),
                order,
                "{ch}: B's members {} and {} saw different streams",
                lb[0].id,
                m.id
            );
        }
        assert_no_duplicates(&format!("{ch} on B"), &order);
        assert_senders_gapless(&format!("{ch} on B"), &order);
        for m in &la {
            assert_prefix(&format!("{ch}: A's member {}", m.id), &m.keys(), &order);
        }
        // Every accepted message, from either node, reached B.
        let on_b: BTreeSet<Key> = order.iter().copied().collect();
        let mut accepted_a = 0;
        let mut accepted_b = 0;
        for s in la.iter().chain(&lb) {
            for i in s.echoes().keys() {
                assert!(
                    on_b.contains(&Key::Msg(s.id, *i)),
                    "{ch}: message {i} of sender {} was accepted but never reached node B",
                    s.id
                );
            }
            if la.iter().any(|m| m.id == s.id) {
                accepted_a += s.echoes().len();
            } else {
                accepted_b += s.echoes().len();
            }
        }
        let senders: Vec<&Log> = la.iter().chain(&lb).copied().collect();
        let checked = assert_reached_members_open_after(ch, &senders, &la);
        let sent_a: usize = la.iter().map(|m| m.sent_at.len()).sum();
        let from_a_on_b = order
            .iter()
            .filter(|k| matches!(k, Key::Msg(s, _) if la.iter().any(|m| m.id == *s)))
            .count();
        summary.push(format!(
            "{ch}: senders on A sent {sent_a}, {accepted_a} accepted, {from_a_on_b} reached B \
             ({} without an echo); senders on B: {accepted_b} accepted; B's order {} long; A's \
             streams {:?}; {checked} (message, later-closed member) pairs cross-checked on A",
            from_a_on_b - accepted_a,
            order.len(),
            la.iter().map(|m| m.seen.len()).collect::<Vec<_>>()
        ));
    }
    eprintln!(
        "SIGTERM in a cluster: A exited 0 after {exited:?}\n{}",
        summary.join("\n")
    );
}

// ---------------------------------------------------------------------------
// A slow Redis

/// A redis-server that accepts `DEBUG` from local connections (Redis 7 refuses it by
/// default, the setting cannot be changed at run time, and Redis 6 does not know it).
async fn debug_redis() -> Redis {
    let version = Command::new("redis-server")
        .arg("--version")
        .output()
        .expect("redis-server on PATH (apt-get install redis-server)");
    let major: u32 = String::from_utf8_lossy(&version.stdout)
        .split("v=")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    if major >= 7 {
        Redis::start_with(&["--enable-debug-command", "local"]).await
    } else {
        Redis::start().await
    }
}

/// `DEBUG SLEEP secs` on a connection of its own; returns when Redis answers.
async fn debug_sleep(port: u16, secs: f64) {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(secs as u64 + 5))),
        )
        .await
        .expect("a connection to redis");
    let _: () = redis::cmd("DEBUG")
        .arg("SLEEP")
        .arg(secs)
        .query_async(&mut c)
        .await
        .expect("DEBUG SLEEP");
}

/// The longest gap between consecutive arrivals that overlaps [from, to].
fn max_gap(arrivals: &[Instant], from: Instant, to: Instant) -> Duration {
    arrivals
        .windows(2)
        .filter(|w| w[1] >= from && w[0] <= to)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

/// Redis stops answering for `SLEEP` (a `DEBUG SLEEP`) while four channels spread over
/// two nodes, and one channel on a single node without Redis, carry steady traffic.
/// Nothing accepted is lost or repeated (every subscriber, on either node, gets every
/// accepted message once, in order); `/healthz` answers and new connections and
/// upgrades are accepted during the sleep; delivery recovers within `SLEEP + 2 s`;
/// the single node does not notice.
///
/// Every cluster delivery, the sender's own node included, goes through Redis (one
/// order per channel), so while Redis sleeps every channel of every node stalls for
/// about the sleep: measured and printed, not asserted away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn slow_redis_loses_nothing_and_recovers() {
    let _serial = serial();
    const SLEEP: Duration = Duration::from_secs(1);
    const CHANNELS: usize = 4;
    let redis = debug_redis().await;
    let a = Node::start("A", &redis, &Opts::default()).await;
    let b = Node::start("B", &redis, &Opts::default()).await;
    let single = Single::start(1).await;
    let ctl = Ctl::new();
    // Every publisher ends its channel's stream with the marker.
    let publisher = || Role {
        every: Some(Duration::from_millis(20)),
        marker: true,
    };
    // Channel c: its publisher on A (even c) or B (odd c); a subscriber on each node.
    let mut pubs = Vec::new();
    let mut subs = Vec::new();
    for c in 0..CHANNELS {
        let ch = format!("chat/slow{c}");
        let (home, other) = if c % 2 == 0 { (&a, &b) } else { (&b, &a) };
        subs.push(member(&home.url(), 100 + c, &ch, LISTEN, ctl.clone()).await);
        subs.push(member(&other.url(), 200 + c, &ch, LISTEN, ctl.clone()).await);
        pubs.push(member(&home.url(), c, &ch, publisher(), ctl.clone()).await);
    }
    let single_sub = member(&single.url(), 300, "chat/slow", LISTEN, ctl.clone()).await;
    let single_pub = member(&single.url(), 50, "chat/slow", publisher(), ctl.clone()).await;

    ctl.go();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sleep_started = Instant::now();
    let sleeping = tokio::spawn({
        let port = redis.port;
        async move {
            debug_sleep(port, SLEEP.as_secs_f64()).await;
            Instant::now()
        }
    });
    // During the sleep: health, a new TCP connection, a new WebSocket upgrade.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut probes = Vec::new();
    for (name, node) in [("A", &a), ("B", &b)] {
        let t = Instant::now();
        let health = http_status(node.addr, "/healthz").await;
        probes.push((format!("{name} /healthz"), health, t.elapsed()));
        let t = Instant::now();
        let tcp = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(node.addr))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        probes.push((format!("{name} TCP connect"), tcp.then_some(0), t.elapsed()));
        let t = Instant::now();
        let upgrade = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(node.url()),
        )
        .await;
        let upgraded = matches!(upgrade, Ok(Ok(_)));
        probes.push((
            format!("{name} WebSocket upgrade"),
            upgraded.then_some(101),
            t.elapsed(),
        ));
    }
    let probes_done = Instant::now();
    let sleep_ended = sleeping.await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    ctl.stop();

    let mut pub_logs = Vec::new();
    for t in pubs {
        pub_logs.push(t.await.unwrap());
    }
    let mut sub_logs = Vec::new();
    for t in subs {
        sub_logs.push(t.await.unwrap());
    }
    let single_sub = single_sub.await.unwrap();
    let single_pub = single_pub.await.unwrap();
    let slept = sleep_ended.duration_since(sleep_started);

    assert!(
        slept >= SLEEP.mul_f64(0.9),
        "DEBUG SLEEP returned after {slept:?}"
    );
    // The probes ran while Redis slept and each answered at once.
    assert!(
        probes_done < sleep_ended,
        "the probes outlasted the sleep ({:?} after it ended): {probes:?}",
        probes_done.duration_since(sleep_ended)
    );
    for (what, result, took) in &probes {
        assert!(
            result.is_some(),
            "{what} failed while Redis slept: {probes:?}"
        );
        assert!(
            *took < Duration::from_millis(500),
            "{what} took {took:?} while Redis slept"
        );
    }

    let window = (sleep_started, sleep_ended + Duration::from_secs(2));
    let mut report = Vec::new();
    let mut refused_total = 0;
    for p in &pub_logs {
        let ch = &p.channel;
        assert_eq!(p.end, End::Marker, "{ch}: publisher {}", p.id);
        // Refusals are allowed (Service unavailable), nothing else.
        let refused = p
            .errors
            .iter()
            .filter(|e| e["payload"]["message"] == "Service unavailable")
            .count();
        assert_eq!(refused, p.errors.len(), "{ch}: {:?}", p.errors);
        refused_total += refused;
        let accepted: Vec<u64> = p.echoes().keys().copied().collect();
        assert_eq!(
            accepted.len() + refused,
            p.sent_at.len(),
            "{ch}: every message is either echoed or refused"
        );
        for s in sub_logs.iter().filter(|s| &s.channel == ch) {
            assert_eq!(s.end, End::Marker, "{ch}: subscriber {}", s.id);
            assert!(s.errors.is_empty(), "{ch}: {:?}", s.errors);
            let got: Vec<u64> = s
                .seen
                .iter()
                .map(|(k, _)| match k {
                    Key::Msg(sender, i) if *sender == p.id => *i,
                    other => panic!("{ch}: unexpected {other:?}"),
                })
                .collect();
            assert_eq!(
                got, accepted,
                "{ch}: subscriber {} must get every accepted message once, in order",
                s.id
            );
            let arrivals: Vec<Instant> = s.seen.iter().map(|(_, t)| *t).collect();
            let gap = max_gap(&arrivals, window.0, window.1);
            let latency = s
                .seen
                .iter()
                .map(|(k, t)| match k {
                    Key::Msg(_, i) => t.duration_since(p.sent_at[*i as usize]),
                    _ => unreachable!(),
                })
                .max()
                .unwrap();
            // When the last message sent before the sleep ended arrived.
            let caught_up = s
                .seen
                .iter()
                .filter(
                    |(k, _)| matches!(k, Key::Msg(_, i) if p.sent_at[*i as usize] <= sleep_ended),
                )
                .map(|(_, t)| *t)
                .max()
                .unwrap();
            let recovery = caught_up.saturating_duration_since(sleep_started);
            let (home, other) = if p.id % 2 == 0 {
                ("A", "B")
            } else {
                ("B", "A")
            };
            report.push(format!(
                "{ch} (publisher on {home}, subscriber on {}): longest gap {gap:?}, max latency \
                 {latency:?}, caught up {recovery:?} after the sleep began",
                if s.id < 200 { home } else { other },
            ));
            assert!(
                latency < slept + Duration::from_secs(2),
                "{ch}: a message took {latency:?} (Redis slept {slept:?})"
            );
            assert!(
                recovery < slept + Duration::from_secs(2),
                "{ch}: caught up {recovery:?} after the sleep began (Redis slept {slept:?})"
            );
        }
    }
    // The single node: everything, and no stall.
    assert_eq!(single_pub.end, End::Marker);
    assert_eq!(single_sub.end, End::Marker);
    assert!(single_pub.errors.is_empty() && single_sub.errors.is_empty());
    let single_got: Vec<u64> = single_sub
        .seen
        .iter()
        .map(|(k, _)| match k {
            Key::Msg(_, i) => *i,
            other => panic!("single: unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        single_got,
        (0..single_pub.sent_at.len() as u64).collect::<Vec<_>>()
    );
    let arrivals: Vec<Instant> = single_sub.seen.iter().map(|(_, t)| *t).collect();
    let single_gap = max_gap(&arrivals, window.0, window.1);
    eprintln!(
        "slow Redis: DEBUG SLEEP {SLEEP:?} took {slept:?}; {refused_total} messages refused; \
         probes during the sleep: {probes:?}\n{}\nsingle node (no Redis): longest gap {single_gap:?}",
        report.join("\n")
    );
    assert!(
        single_gap < Duration::from_millis(500),
        "the single node stalled {single_gap:?} while Redis (which it does not use) slept"
    );
}
