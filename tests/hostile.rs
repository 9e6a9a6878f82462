//! Hostile load on loopback (issue 6; docs/protocol.md sections 1 and 9), against the real
//! binary so that its memory can be read from /proc:
//!
//! - a connection flood from one address (`connects_per_ip_per_s`): HTTP 429 for the
//!   offender, while a client from 127.0.0.2 connects and chats;
//! - a client in `max_channels_per_socket` channels that never reads while they are
//!   flooded: closed with 1013 (or reset), memory bounded;
//! - a client sending maximum-size frames flat out: each is handled, one byte more is 1009;
//! - a herd of clients that stop reading at once: all closed with 1013 (or reset),
//!   memory bounded.
//!
//! Every test measures a well-behaved pair (a paced publisher and a subscriber, the
//! "probe") first without the offender (baseline), then under attack with the same
//! publisher rate, and asserts that the subscriber got every message and kept at least
//! 95 % of its baseline delivery rate. The delivery rate of a phase is the number of
//! probe messages delivered divided by the time from the first send to the last
//! arrival: a stall anywhere in the phase that is not caught up by the phase's end
//! lowers it. The tests take a process-wide lock and run one at a time, so that they
//! do not measure each other.

mod cluster_support;
mod common;

use common::process::{print_tail, spawn_listening, temp_path, wait_status};
use common::{http_get, Client, SECRET, WAIT};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The offenders' address, and the well-behaved clients' (Linux routes all of 127/8
/// to the loopback interface).
const BAD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const GOOD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Probe: messages per second, phase length, payload padding.
const PROBE_RATE: u32 = 400;
const PROBE_PHASE: Duration = Duration::from_secs(3);
const PROBE_PAD: usize = 200;
/// A well-behaved subscriber keeps this share of its baseline delivery rate.
const MIN_RATE_RATIO: f64 = 0.95;
/// The broker's resident memory may grow by at most this much under attack.
const RSS_HEADROOM_KIB: u64 = 64 * 1024;

/// One test at a time: they measure rates and memory.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// The broker: the real binary on a free port.

struct Broker {
    addr: SocketAddr,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    config: PathBuf,
}

/// App `test` with `chat/*` open to everyone (no history, no presence), under the
/// given `[limits]` lines.
fn config_toml(limits: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[limits]
messages_per_minute = 0
frames_per_minute = 0
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
settings = {{ anonymous_clients = true }}
"#
    )
}

impl Broker {
    async fn start(limits: &str) -> Broker {
        let config = temp_path("config", "toml");
        std::fs::write(&config, config_toml(limits)).unwrap();
        let log = temp_path("broker", "log");
        let (child, addr) =
            spawn_listening(cluster_support::broker_command(&config, &log), &log).await;
        let broker = Broker {
            addr,
            pid: child.id(),
            child: Some(child),
            log,
            config,
        };
        wait_status(addr, "/healthz", 200, Duration::from_secs(10)).await;
        broker
    }

    fn url(&self) -> String {
        format!("ws://{}/rt/test", self.addr)
    }

    /// Resident memory in KiB (VmRSS).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("the broker's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The sum of a metric's samples whose line starts with `prefix` (name and labels).
    async fn metric(&self, prefix: &str) -> f64 {
        let (status, text) = http_get(self.addr, "/metrics").await;
        assert_eq!(status, 200);
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Fails the test if the broker died.
    fn assert_alive(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the broker exited: {status}");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            print_tail("broker log", &self.log, 60);
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Samples the broker's RSS every 50 ms until stopped; the maximum seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(broker: &Broker) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let pid = broker.pid;
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kib) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<u64>().ok())
                    {
                        max = max.max(kib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            max
        });
        RssSampler { stop, task }
    }

    async fn max_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

// ---------------------------------------------------------------------------
// Clients

/// Open a WebSocket from `src` (the client socket is bound to that address first).
///
/// `internet_like`: a small receive window and an Ethernet-sized MSS. On loopback the
/// MSS is 64 KiB and Linux grows the server's send buffer for such a peer to
/// `tcp_wmem`'s maximum (4 MiB here) even while the peer reads nothing, so a
/// non-reading loopback client would hold megabytes in the kernel before the broker's
/// own queue (`send_queue_bytes`) even starts to fill. With a 1460-byte MSS the kernel
/// holds about 100 KiB, as it would for a client across a network.
async fn connect_from(
    src: IpAddr,
    broker: &Broker,
    internet_like: bool,
) -> Result<Ws, tungstenite::Error> {
    let sock = TcpSocket::new_v4().map_err(tungstenite::Error::Io)?;
    sock.bind(SocketAddr::new(src, 0))
        .map_err(tungstenite::Error::Io)?;
    if internet_like {
        sock.set_recv_buffer_size(4096)
            .map_err(tungstenite::Error::Io)?;
        set_mss(&sock, 1460);
    }
    let stream = sock
        .connect(broker.addr)
        .await
        .map_err(tungstenite::Error::Io)?;
    let req = broker.url().into_client_request().unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
    Ok(ws)
}

/// TCP_MAXSEG on a socket not yet connected: the MSS it announces in its SYN.
fn set_mss(sock: &TcpSocket, mss: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a socket we own, with a value of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            &mss as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
}

async fn client_from(src: IpAddr, broker: &Broker) -> Client {
    let ws = tokio::time::timeout(WAIT, connect_from(src, broker, false))
        .await
        .expect("connect in time")
        .expect("connect");
    Client::from_stream(ws)
}

/// How a socket the server should have closed ended, read from the client side.
#[derive(Debug, PartialEq)]
enum Fate {
    /// A close frame with this code.
    Closed(u16),
    /// The TCP connection was reset.
    Reset,
    /// The connection ended without a close frame.
    Ended(String),
    /// Nothing for the whole wait: the socket is still open.
    StillOpen,
}

/// Read (and count) everything until the socket ends or `within` passes.
async fn read_fate(ws: &mut Ws, within: Duration) -> (usize, Fate) {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return (frames, Fate::StillOpen),
            Ok(Some(Ok(Message::Close(c)))) => {
                return (
                    frames,
                    Fate::Closed(c.map(|c| u16::from(c.code)).unwrap_or(1005)),
                )
            }
            Ok(Some(Ok(_))) => frames += 1,
            Ok(Some(Err(tungstenite::Error::Io(e))))
                if e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                return (frames, Fate::Reset)
            }
            Ok(Some(Err(e))) => return (frames, Fate::Ended(e.to_string())),
            Ok(None) => return (frames, Fate::Ended("end of stream".into())),
        }
    }
}

fn join_frame(channel: &str) -> Message {
    Message::Text(
        json!({"action":"join","options":{"channel":channel},"payload":{"history":false,"presence":false}})
            .to_string(),
    )
}

/// Send joins for every channel, then read until every ack is in (other frames skipped).
async fn join_all(ws: &mut Ws, channels: &[String]) {
    for c in channels {
        ws.send(join_frame(c)).await.unwrap();
    }
    let mut acked = 0;
    while acked < channels.len() {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("join acks in time")
            .expect("socket open")
            .expect("no socket error");
        if let Message::Text(t) = msg {
            let f: Value = serde_json::from_str(&t).unwrap();
            match f["action"].as_str() {
                Some("join") => acked += 1,
                Some("error") => panic!("join refused: {f}"),
                _ => {}
            }
        }
    }
}

/// A task reading (and dropping) everything a socket receives, so that it never
/// becomes a slow consumer; counts the text frames.
fn drain_in_background(
    mut stream: SplitStream<Ws>,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Text(_)) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (count, task)
}

// ---------------------------------------------------------------------------
// The probe: a paced publisher and a well-behaved subscriber on one channel.

#[derive(Debug, Clone)]
struct PhaseStats {
    sent: usize,
    delivered: usize,
    /// Delivered per second, from the first send to the last arrival.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl std::fmt::Display for PhaseStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} delivered, {:.1} msg/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.delivered, self.sent, self.rate, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

struct Probe {
    channel: String,
    pad: usize,
    sink: SplitSink<Ws, Message>,
    /// (phase, index, arrival) of every probe message the subscriber got.
    arrivals: Arc<Mutex<Vec<(u64, usize, Instant)>>>,
    /// Set when the subscriber's socket ended.
    subscriber_lost: Arc<Mutex<Option<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Probe {
    /// `publisher` and `subscriber` must have joined `channel`; the subscriber may be in
    /// other channels too (their frames are read and skipped).
    fn new(channel: &str, pad: usize, publisher: Client, subscriber: Client) -> Probe {
        let (sink, stream) = publisher.ws.split();
        let (_, echo_task) = drain_in_background(stream);
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(Mutex::new(None));
        let (a, l) = (arrivals.clone(), lost.clone());
        let mut ws = subscriber.ws;
        let sub_task = tokio::spawn(async move {
            loop {
                let why = match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if t.contains("\"probe\"") {
                            let f: Value = serde_json::from_str(&t).unwrap();
                            if f["action"] == "message" {
                                let p = &f["payload"];
                                let phase = p["probe"].as_u64().unwrap();
                                let i = p["i"].as_u64().unwrap() as usize;
                                a.lock().unwrap().push((phase, i, Instant::now()));
                            }
                        }
                        continue;
                    }
                    Some(Ok(Message::Close(c))) => format!("closed: {c:?}"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => format!("error: {e}"),
                    None => "ended".to_string(),
                };
                *l.lock().unwrap() = Some(why);
                return;
            }
        });
        Probe {
            channel: channel.to_string(),
            pad,
            sink,
            arrivals,
            subscriber_lost: lost,
            tasks: vec![echo_task, sub_task],
        }
    }

    /// Publish `PROBE_PHASE` worth of messages at `PROBE_RATE` (missed ticks are caught
    /// up, so every phase sends the same count), then wait for the last to arrive.
    async fn phase(&mut self, id: u64) -> PhaseStats {
        let count = (PROBE_RATE as f64 * PROBE_PHASE.as_secs_f64()) as usize;
        let pad = "p".repeat(self.pad);
        let mut sends = Vec::with_capacity(count);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / PROBE_RATE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..count {
            tick.tick().await;
            let frame = json!({"action":"message","options":{"channel":self.channel},
                "payload":{"probe": id, "i": i, "pad": pad}});
            sends.push(Instant::now());
            self.sink
                .send(Message::Text(frame.to_string()))
                .await
                .expect("the probe publisher can send");
        }
        // Every message, or WAIT without progress.
        let mut last_count = 0;
        let mut last_progress = Instant::now();
        loop {
            let n = self
                .arrivals
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _, _)| *p == id)
                .count();
            if n >= count || last_progress.elapsed() > WAIT {
                break;
            }
            if n != last_count {
                last_count = n;
                last_progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let arrivals: Vec<(usize, Instant)> = self
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| *p == id)
            .map(|(_, i, t)| (*i, *t))
            .collect();
        let mut seen = vec![false; count];
        let mut latencies = Vec::with_capacity(arrivals.len());
        for (i, t) in &arrivals {
            assert!(!seen[*i], "probe phase {id}: message {i} delivered twice");
            seen[*i] = true;
            latencies.push(t.duration_since(sends[*i]).as_secs_f64() * 1000.0);
        }
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        let last = arrivals.iter().map(|(_, t)| *t).max().unwrap_or(sends[0]);
        let span = last.duration_since(sends[0]).as_secs_f64().max(1e-3);
        PhaseStats {
            sent: count,
            delivered: arrivals.len(),
            rate: arrivals.len() as f64 / span,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: latencies.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn assert_subscriber_open(&self) {
        if let Some(why) = self.subscriber_lost.lock().unwrap().as_ref() {
            panic!("the well-behaved subscriber lost its socket: {why}");
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Both phases delivered everything, and the attack phase kept the rate.
fn assert_kept_rate(what: &str, baseline: &PhaseStats, attack: &PhaseStats) {
    let ratio = attack.rate / baseline.rate;
    eprintln!(
        "{what}: probe baseline: {baseline}\n{what}: probe under attack: {attack}\n{what}: rate ratio {ratio:.3}"
    );
    assert_eq!(
        baseline.delivered, baseline.sent,
        "{what}: baseline lost probe messages"
    );
    assert_eq!(
        attack.delivered, attack.sent,
        "{what}: the well-behaved subscriber lost probe messages under attack"
    );
    assert!(
        ratio >= MIN_RATE_RATIO,
        "{what}: the well-behaved subscriber's delivery rate fell to {ratio:.3} of its baseline \
         (baseline: {baseline}; under attack: {attack})"
    );
}

/// Connect the probe (publisher and subscriber from `src`) on `channel`, the subscriber
/// also in `extra` channels; its messages carry `pad` bytes of padding.
async fn start_probe(
    broker: &Broker,
    src: IpAddr,
    channel: &str,
    pad: usize,
    extra: &[String],
) -> Probe {
    let mut publisher = client_from(src, broker).await;
    publisher.join(channel, false, false).await;
    let mut subscriber = client_from(src, broker).await;
    let mut channels = vec![channel.to_string()];
    channels.extend_from_slice(extra);
    join_all(&mut subscriber.ws, &channels).await;
    Probe::new(channel, pad, publisher, subscriber)
}

// ---------------------------------------------------------------------------

/// A flood of upgrades from 127.0.0.1 with `connects_per_ip_per_s` set: beyond the
/// rate the offender gets HTTP 429 at the upgrade (never more accepted than the
/// limiter allows), while clients from 127.0.0.2 keep connecting and chatting and the
/// probe (also from 127.0.0.2) keeps its delivery rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn connect_flood_gets_429_and_other_addresses_are_served() {
    let _serial = serial();
    const LIMIT: u64 = 20;
    const FLOODERS: usize = 8;
    let mut broker = Broker::start(&format!("connects_per_ip_per_s = {LIMIT}")).await;
    let mut probe = start_probe(&broker, GOOD, "chat/probe", PROBE_PAD, &[]).await;
    let baseline = probe.phase(1).await;

    let stop = Arc::new(AtomicBool::new(false));
    let flood_started = Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..FLOODERS {
        let stop = stop.clone();
        let addr = broker.addr;
        let url = broker.url();
        flooders.push(tokio::spawn(async move {
            // (101s, 429s, other outcomes); accepted sockets are held open.
            let (mut ok, mut limited, mut other) = (0u64, 0u64, Vec::new());
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sock = TcpSocket::new_v4().unwrap();
                sock.bind(SocketAddr::new(BAD, 0)).unwrap();
                let attempt = async {
                    let stream = sock.connect(addr).await.map_err(tungstenite::Error::Io)?;
                    let req = url.as_str().into_client_request().unwrap();
                    tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await
                };
                match tokio::time::timeout(WAIT, attempt).await {
                    Ok(Ok((ws, _))) => {
                        ok += 1;
                        held.push(ws);
                    }
                    Ok(Err(tungstenite::Error::Http(resp))) if resp.status() == 429 => limited += 1,
                    Ok(Err(e)) => other.push(e.to_string()),
                    Err(_) => other.push("no answer within 5 s".to_string()),
                }
            }
            (ok, limited, other, held)
        }));
    }
    // Meanwhile, from 127.0.0.2: the probe runs its attack phase, and fresh clients
    // connect, join, chat and leave every 250 ms.
    let good_clients = async {
        let mut round_trips = Vec::new();
        let mut n = 0;
        while flood_started.elapsed() < PROBE_PHASE {
            let started = Instant::now();
            let mut c = client_from(GOOD, &broker).await;
            let channel = format!("chat/good{n}");
            c.join(&channel, false, false).await;
            c.message(&channel, json!({"hello": n})).await;
            let echo = c.expect("message").await;
            assert_eq!(echo["payload"], json!({"hello": n}));
            c.close().await;
            round_trips.push(started.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        round_trips
    };
    let (attack, round_trips) = tokio::join!(probe.phase(2), good_clients);
    stop.store(true, Ordering::Relaxed);
    let flood_s = flood_started.elapsed().as_secs_f64();
    let (mut ok, mut limited, mut other, mut held) = (0, 0, Vec::new(), Vec::new());
    for f in flooders {
        let (o, l, e, h) = f.await.unwrap();
        ok += o;
        limited += l;
        other.extend(e);
        held.extend(h);
    }
    broker.assert_alive();
    probe.assert_subscriber_open();

    let slowest = round_trips.iter().max().copied().unwrap_or_default();
    eprintln!(
        "flood: {} upgrades from {BAD} in {flood_s:.2} s: {ok} accepted, {limited} got 429, {} other; \
         {} clients from {GOOD} connected and chatted meanwhile (slowest connect+join+echo {slowest:?})",
        ok + limited + other.len() as u64,
        other.len(),
        round_trips.len(),
    );
    assert!(
        other.is_empty(),
        "upgrades neither accepted nor 429: {other:?}"
    );
    assert!(
        limited >= 5 * LIMIT,
        "a flood should meet the limiter: only {limited} refusals"
    );
    // Governor: a burst of LIMIT, then LIMIT per second.
    let allowed = LIMIT as f64 * (flood_s + 1.0) + 1.0;
    assert!(
        (ok as f64) <= allowed,
        "{ok} upgrades accepted from one address in {flood_s:.2} s, limit {LIMIT}/s"
    );
    assert!(
        ok >= LIMIT,
        "the first {LIMIT} upgrades fit the burst: {ok}"
    );
    assert!(
        round_trips.len() >= 5,
        "too few well-behaved clients: {round_trips:?}"
    );
    assert_eq!(
        broker
            .metric("switchboard_disconnects_total{reason=\"connect rate\"}")
            .await,
        limited as f64,
        "every 429 is counted"
    );
    assert_kept_rate("flood", &baseline, &attack);
    drop(held);
}

/// A client joins `max_channels_per_socket` channels and never reads again while a
/// publisher floods them: it is closed with 1013 (or reset), the broker's memory stays
/// under baseline + 64 MiB, and a subscriber sharing one of those channels keeps its
/// delivery rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn max_channels_never_reading_is_closed_and_memory_stays_bounded() {
    let _serial = serial();
    const CHANNELS: usize = 100;
    const FLOOD_RATE: u32 = 500; // messages per second, round robin over the channels
    const FLOOD_PAD: usize = 8 * 1024;
    const ATTACK: Duration = Duration::from_secs(6);
    let mut broker = Broker::start(&format!(
        "max_channels_per_socket = {CHANNELS}\nsend_queue_bytes = 1048576"
    ))
    .await;
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("chat/f{i}")).collect();

    // The flood publisher: in every channel, reads (and drops) its own echoes.
    let mut flood = connect_from(GOOD, &broker, false).await.unwrap();
    join_all(&mut flood, &channels).await;
    let (mut flood_sink, flood_stream) = flood.split();
    let (_, flood_reader) = drain_in_background(flood_stream);
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood_sent = Arc::new(AtomicU64::new(0));
    let flood_task = {
        let stop = flood_stop.clone();
        let sent = flood_sent.clone();
        let channels = channels.clone();
        tokio::spawn(async move {
            let pad = "f".repeat(FLOOD_PAD);
            let mut tick = tokio::time::interval(Duration::from_secs(1) / FLOOD_RATE);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let ch = &channels[i % channels.len()];
                let frame = json!({"action":"message","options":{"channel":ch},"payload":{"flood":i,"pad":pad}});
                if flood_sink
                    .send(Message::Text(frame.to_string()))
                    .await
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            flood_sink
        })
    };

    // The probe shares chat/f0 with the offender (and with the flood).
    let mut probe = start_probe(&broker, GOOD, "chat/f0", PROBE_PAD, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the flood's first round
    let baseline = probe.phase(1).await;
    let rss_baseline = broker.rss_kib();
    let fds_baseline = broker.fds();

    // The offender: every channel, then never reads again.
    let mut offender = connect_from(BAD, &broker, true).await.unwrap();
    join_all(&mut offender, &channels).await;
    let attacked = Instant::now();
    let sampler = RssSampler::start(&broker);
    let attack = probe.phase(2).await;
    tokio::time::sleep(ATTACK.saturating_sub(attacked.elapsed())).await;
    let rss_max = sampler.max_kib().await;
    flood_stop.store(true, Ordering::Relaxed);
    let _sink = flood_task.await.unwrap();
    flood_reader.abort();
    broker.assert_alive();
    probe.assert_subscriber_open();

    // The offender reads at last: what was in its buffers, then the 1013 or a reset.
    let (frames, fate) = read_fate(&mut offender, Duration::from_secs(10)).await;
    let slow = broker
        .metric("switchboard_disconnects_total{reason=\"slow consumer\"}")
        .await;
    eprintln!(
        "max channels: flood {} messages of {FLOOD_PAD} B over {CHANNELS} channels; offender read \
         {frames} frames then {fate:?}; RSS {rss_baseline} KiB before, max {rss_max} KiB under \
         attack (+{} KiB); fds {fds_baseline} before, {} after",
        flood_sent.load(Ordering::Relaxed),
        rss_max.saturating_sub(rss_baseline),
        broker.fds()
    );
    assert!(
        matches!(fate, Fate::Closed(1013) | Fate::Reset),
        "the offender must be closed with 1013 or reset: {fate:?}"
    );
    assert!(slow >= 1.0, "the close is counted as a slow consumer");
    assert!(
        rss_max <= rss_baseline + RSS_HEADROOM_KIB,
        "RSS grew from {rss_baseline} KiB to {rss_max} KiB under attack"
    );
    assert_kept_rate("max channels", &baseline, &attack);
}

/// A client sends frames of exactly `max_frame_bytes` flat out for the whole attack
/// phase, round robin: public messages (each delivered back to it), direct messages
/// where private messaging is off (each refused with an error frame) and garbage (each
/// `Invalid frame`); then one frame a byte over the limit: 1009, for that socket
/// alone. Meanwhile the probe keeps its delivery rate.
///
/// "Flat out" is as fast as the broker answers: every frame gets exactly one answer
/// (its echo or its error), and the offender keeps `WINDOW` frames unanswered at most.
/// Errors come straight from the socket's actor while echoes go through the channel,
/// so the unanswered frames can all be echoes: 12 of them (790 KB) fit the default
/// 1 MiB queue, which therefore cannot overflow (with a window of 32 it does, and the
/// broker rightly closes the offender with 1013 as a slow consumer): this test is
/// about frame sizes, not slow consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn maximum_size_frames_flat_out_are_each_handled() {
    let _serial = serial();
    const MAX: usize = 65536;
    const WINDOW: usize = 12;
    let mut broker = Broker::start(&format!(
        "max_frame_bytes = {MAX}\nsend_queue_bytes = 1048576"
    ))
    .await;
    let mut probe = start_probe(&broker, GOOD, "chat/probe", PROBE_PAD, &[]).await;
    let baseline = probe.phase(1).await;
    let rss_baseline = broker.rss_kib();

    let mut big = connect_from(BAD, &broker, false).await.unwrap();
    join_all(&mut big, &["chat/big".to_string()]).await;
    let (mut sink, mut stream) = big.split();
    // Frame i, exactly MAX bytes.
    let frame = |i: usize| -> String {
        let build = |pad: &str| match i % 3 {
            0 => json!({"action":"message","options":{"channel":"chat/big"},
                "payload":{"i":i,"pad":pad}})
            .to_string(),
            1 => json!({"action":"message","options":{"channel":"chat/big","socketId":"nobody"},
                "payload":{"i":i,"pad":pad}})
            .to_string(),
            _ => format!("!{pad}"),
        };
        let pad = "m".repeat(MAX - build("").len());
        let text = build(&pad);
        assert_eq!(text.len(), MAX);
        text
    };
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let sending = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    // Set by the sender once it has sent its last frame: until then `sent` may still
    // grow (a frame already past the `sending` check), so the reader must not stop.
    let sender_done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (window, sending, sent) = (window.clone(), sending.clone(), sent.clone());
        let sender_done = sender_done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0;
            while sending.load(Ordering::Relaxed) {
                match window.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break, // the reader ended
                }
                if let Err(e) = sink.send(Message::Text(frame(i))).await {
                    eprintln!("max frames: send {i} failed: {e}");
                    break;
                }
                i += 1;
                sent.store(i as u64, Ordering::SeqCst);
            }
            sender_done.store(true, Ordering::SeqCst);
            (sink, i, started.elapsed())
        })
    };
    let reader = {
        let (window, sent) = (window.clone(), sent.clone());
        tokio::spawn(async move {
            // Echoed indices; error texts (up to the first ':'); anything else.
            let (mut echoes, mut errors, mut other) = (Vec::new(), Vec::new(), Vec::new());
            while !sender_done.load(Ordering::SeqCst)
                || ((echoes.len() + errors.len()) as u64) < sent.load(Ordering::SeqCst)
            {
                match tokio::time::timeout(WAIT, stream.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        window.add_permits(1);
                        // Only the head of a 64 KiB echo is parsed.
                        if t.starts_with("{\"action\":\"message\"") {
                            let at = t.find("\"payload\":{\"i\":").expect("an echo") + 15;
                            let digits: String =
                                t[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
                            echoes.push(digits.parse::<usize>().unwrap());
                        } else {
                            let f: Value = serde_json::from_str(&t).unwrap();
                            match f["action"].as_str() {
                                Some("error") => errors.push(
                                    f["payload"]["message"]
                                        .as_str()
                                        .unwrap()
                                        .split(':')
                                        .next()
                                        .unwrap()
                                        .to_string(),
                                ),
                                _ => other.push(f.to_string()),
                            }
                        }
                    }
                    Ok(Some(Ok(Message::Close(c)))) => {
                        other.push(format!("closed: {c:?}"));
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    end => {
                        other.push(format!("socket ended: {end:?}"));
                        break;
                    }
                }
            }
            window.close();
            (stream, echoes, errors, other)
        })
    };
    let sampler = RssSampler::start(&broker);
    let attack = probe.phase(2).await;
    sending.store(false, Ordering::Relaxed);
    let (mut sink, frames, send_time) = sender.await.unwrap();
    let (stream, echoes, errors, other) = reader.await.unwrap();
    let rss_max = sampler.max_kib().await;
    broker.assert_alive();
    probe.assert_subscriber_open();

    let mut by_text = std::collections::BTreeMap::<String, usize>::new();
    for e in &errors {
        *by_text.entry(e.clone()).or_default() += 1;
    }
    eprintln!(
        "max frames: {frames} frames of {MAX} B in {send_time:?} ({:.1} MB/s); {} echoes, \
         errors {by_text:?}; RSS {rss_baseline} KiB before, max {rss_max} KiB",
        (frames * MAX) as f64 / send_time.as_secs_f64() / 1e6,
        echoes.len(),
    );
    assert!(other.is_empty(), "unexpected frames: {other:?}");
    assert!(frames >= 3 * WINDOW, "only {frames} frames sent");
    let want: Vec<usize> = (0..frames).step_by(3).collect();
    assert_eq!(echoes, want, "every public message is delivered, in order");
    let mut want_errors = std::collections::BTreeMap::new();
    want_errors.insert("Invalid frame".to_string(), frames / 3);
    want_errors.insert(
        "Private messaging is not allowed on this channel".to_string(),
        (frames + 1) / 3,
    );
    assert_eq!(
        by_text, want_errors,
        "one error frame for each refused frame"
    );
    assert!(
        rss_max <= rss_baseline + RSS_HEADROOM_KIB,
        "RSS grew from {rss_baseline} KiB to {rss_max} KiB"
    );

    // One byte over the limit: 1009, for that socket alone.
    sink.send(Message::Text("!".repeat(MAX + 1)))
        .await
        .expect("send");
    let mut ws = sink.reunite(stream).unwrap();
    let (_, fate) = read_fate(&mut ws, WAIT).await;
    assert_eq!(fate, Fate::Closed(1009));
    assert_kept_rate("max frames", &baseline, &attack);
    let after = probe.phase(3).await;
    assert_eq!(after.delivered, after.sent, "after the 1009: {after}");
}

/// A herd of clients in one channel stops reading at once while the channel carries
/// traffic: every one of them is closed with 1013 (or reset), memory stays bounded,
/// the broker's descriptors come back to their baseline, and a well-behaved member of
/// the same channel keeps its delivery rate.
///
/// The herd's queued frames are shared (one buffer per broadcast), but each stalled
/// socket also holds a private copy of what the HTTP dispatcher took from its queue
/// before the socket stopped taking writes (measured: about 75 KiB of RSS per stalled
/// socket against 16-20 KiB per reading one), so 400 of them fit the 64 MiB ceiling;
/// 1,000 took 75 MiB (all closed with 1013, the probe untouched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn herd_that_stops_reading_is_closed_and_others_keep_receiving() {
    let _serial = serial();
    const HERD: usize = 400;
    const CHANNEL: &str = "chat/herd";
    let mut broker = Broker::start("send_queue_bytes = 262144").await;
    // The probe alone carries the channel's traffic: 400 msg/s of 2 KiB.
    let mut probe = start_probe(&broker, GOOD, CHANNEL, 2048, &[]).await;
    let baseline = probe.phase(1).await;
    let rss_baseline = broker.rss_kib();
    let fds_baseline = broker.fds();

    // The herd joins (reading its acks), then none of them reads again.
    let joined = Instant::now();
    let mut herd: Vec<Ws> = futures_util::stream::iter(0..HERD)
        .map(|_| {
            let broker = &broker;
            async move {
                let mut ws = connect_from(BAD, broker, true).await.unwrap();
                join_all(&mut ws, &[CHANNEL.to_string()]).await;
                ws
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let join_time = joined.elapsed();
    let sampler = RssSampler::start(&broker);
    let attack = probe.phase(2).await;
    let rss_max = sampler.max_kib().await;
    broker.assert_alive();
    probe.assert_subscriber_open();

    // Every member of the herd: what was buffered, then 1013 or a reset.
    let fates: Vec<(usize, Fate)> = futures_util::future::join_all(
        herd.iter_mut()
            .map(|ws| read_fate(ws, Duration::from_secs(10))),
    )
    .await;
    let mut tally = std::collections::BTreeMap::<String, usize>::new();
    for (_, f) in &fates {
        *tally.entry(format!("{f:?}")).or_default() += 1;
    }
    drop(herd);
    // The broker lets go of every herd socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.fds() > fds_baseline + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fds_after = broker.fds();
    let slow = broker
        .metric("switchboard_disconnects_total{reason=\"slow consumer\"}")
        .await;
    let after = probe.phase(3).await;
    eprintln!(
        "herd: {HERD} clients joined in {join_time:?}; fates {tally:?}; {slow} counted as slow \
         consumers; RSS {rss_baseline} KiB before, max {rss_max} KiB (+{} KiB); fds \
         {fds_baseline} before, {fds_after} after; probe afterwards: {after}",
        rss_max.saturating_sub(rss_baseline)
    );
    let bad: Vec<_> = fates
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| !matches!(f, Fate::Closed(1013) | Fate::Reset))
        .take(5)
        .collect();
    assert!(
        bad.is_empty(),
        "herd members not closed with 1013 or reset: {bad:?} (all: {tally:?})"
    );
    assert_eq!(
        slow, HERD as f64,
        "every herd member counted as a slow consumer"
    );
    assert!(
        rss_max <= rss_baseline + RSS_HEADROOM_KIB,
        "RSS grew from {rss_baseline} KiB to {rss_max} KiB"
    );
    assert!(
        fds_after <= fds_baseline + 2,
        "descriptors: {fds_baseline} before the herd, {fds_after} after it was closed"
    );
    assert_kept_rate("herd", &baseline, &attack);
    assert_eq!(after.delivered, after.sent, "after the herd: {after}");
}
