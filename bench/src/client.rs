//! The client side: sockets speaking the protocol as the SDK does (join, message,
//! leave), subscribers that time every delivery, and a publisher driver.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;
pub type Err = String;

/// Sockets per source address before the next 127.0.0.x is used (the ephemeral
/// port range holds ~28k ports per source address and destination).
const PER_SOURCE: u64 = 16_000;
static CONNECTS: AtomicU64 = AtomicU64::new(0);

/// The clock every timestamp is taken on (one process: publisher and subscribers).
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn next_source() -> Option<Ipv4Addr> {
    let k = CONNECTS.fetch_add(1, Ordering::Relaxed);
    let block = (k / PER_SOURCE) % 250;
    (block > 0).then(|| Ipv4Addr::new(127, 0, 0, 1 + block as u8))
}

pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(read_buffer)
}

/// Open a WebSocket to `ws://127.0.0.1:port/path`, offering `token` as the
/// subprotocol (as the SDK does). Spreads source addresses over 127.0.0.x.
pub async fn connect(
    port: u16,
    path: &str,
    token: Option<&str>,
    read_buffer: usize,
) -> Result<Ws, Err> {
    let fut = async {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = next_source() {
            // Let connect() pick the port by the whole 4-tuple, not bind().
            let one: libc::c_int = 1;
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            socket
                .bind(SocketAddr::from((ip, 0)))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut req = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        if let Some(t) = token {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                t.parse().map_err(|_| "bad token header".to_string())?,
            );
        }
        let (ws, _) =
            tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config(read_buffer)))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        Ok(ws)
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| "connect timed out".to_string())?
}

pub fn join_frame(channel: &str) -> String {
    format!(
        r#"{{"action":"join","options":{{"channel":"{channel}"}},"payload":{{"history":false,"presence":false}}}}"#
    )
}

pub fn leave_frame(channel: &str) -> String {
    format!(r#"{{"action":"leave","options":{{"channel":"{channel}"}},"payload":null}}"#)
}

/// A message frame of `payload_bytes` payload carrying the send time, a sequence
/// number per channel and the channel's index.
pub fn message_frame(channel: &str, cidx: u64, seq: u64, payload_bytes: usize) -> String {
    let head = format!(r#"{{"t":{},"s":{seq},"c":{cidx}"#, now_us());
    // `,"p":"` + pad + `"}` = 8 bytes + pad
    let pad = payload_bytes.saturating_sub(head.len() + 8);
    let mut s = String::with_capacity(64 + channel.len() + payload_bytes);
    s.push_str(r#"{"action":"message","options":{"channel":""#);
    s.push_str(channel);
    s.push_str(r#""},"payload":"#);
    s.push_str(&head);
    if payload_bytes > head.len() + 1 {
        s.push_str(r#","p":""#);
        s.extend(std::iter::repeat_n('x', pad));
        s.push('"');
    }
    s.push('}');
    s.push('}');
    s
}

/// The `action` of an outbound frame (the server writes it first; we do not parse JSON).
pub fn action_of(text: &str) -> &str {
    let Some(i) = text.find(r#""action":""#) else {
        return "";
    };
    let rest = &text[i + 10..];
    &rest[..rest.find('"').unwrap_or(0)]
}

/// (send time, sequence, channel index) of a delivered message, if it is one of ours.
pub fn stamp_of(text: &str) -> Option<(u64, u64, u64)> {
    let i = text.find(r#""payload":{"t":"#)?;
    parse_stamp(&text.as_bytes()[i + 10..])
}

/// Parse `{"t":T,"s":S,"c":C` at the start of `p`.
fn parse_stamp(p: &[u8]) -> Option<(u64, u64, u64)> {
    let rest = p.strip_prefix(br#"{"t":"#)?;
    let (t, rest) = digits_b(rest)?;
    let rest = rest.strip_prefix(br#","s":"#)?;
    let (s, rest) = digits_b(rest)?;
    let rest = rest.strip_prefix(br#","c":"#)?;
    let (c, _) = digits_b(rest)?;
    Some((t, s, c))
}

/// Send a frame and read until the frame whose action is `want` (an `error` first fails).
pub async fn request(ws: &mut Ws, frame: String, want: &str) -> Result<(), Err> {
    ws.send(Message::text(frame))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let a = action_of(t.as_str());
                    if a == want {
                        return Ok(());
                    }
                    if a == "error" {
                        return Err(format!("error frame: {}", t.as_str()));
                    }
                }
                Some(Ok(Message::Close(c))) => return Err(format!("closed: {c:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("closed".into()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| format!("no {want} ack within 20 s"))?
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// What subscribers share: delivery count (for the flat-out window), latencies.
pub struct Shared {
    pub received: AtomicU64,
    pub wake_at: AtomicU64,
    pub notify: Notify,
    /// One histogram per group (e.g. per node in the cluster scenario).
    pub hists: Vec<Mutex<Histogram<u64>>>,
    pub received_by_group: Vec<AtomicU64>,
}

impl Shared {
    pub fn new(groups: usize) -> Arc<Shared> {
        Arc::new(Shared {
            received: AtomicU64::new(0),
            wake_at: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
            hists: (0..groups).map(|_| Mutex::new(new_histogram())).collect(),
            received_by_group: (0..groups).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn flush(&self, group: usize, buf: &mut Vec<u64>) {
        if buf.is_empty() {
            return;
        }
        let mut h = self.hists[group].lock().unwrap();
        for &v in buf.iter() {
            h.saturating_record(v.max(1));
        }
        buf.clear();
    }
}

#[derive(Default, Debug, Clone)]
pub struct SubStats {
    pub received: u64,
    pub duplicates: u64,
    pub errors: u64,
    pub closed_early: bool,
    pub close_reason: Option<String>,
}

/// Read deliveries until `stop`; answers the socket (unless the server closed it).
///
/// The hot loop decodes WebSocket frames itself from large reads instead of going
/// through tungstenite's `Stream` (the handshake and the join did): on a 2-core
/// machine the load generator must cost less per delivery than the server it
/// measures, and tungstenite's per-message path cost ~2x the broker's.
pub async fn subscriber(
    ws: Ws,
    shared: Arc<Shared>,
    group: usize,
    payload_bytes: usize,
    read_buf: usize,
    mut stop: watch::Receiver<bool>,
) -> (Option<Ws>, SubStats) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stats = SubStats::default();
    // Nothing is sent to a subscriber between its join ack and the first message,
    // so tungstenite holds no read-ahead here.
    let mut tcp = ws.into_inner();
    // Last sequence seen per channel index (a socket is in few channels).
    let mut last_seq: Vec<(u64, u64)> = Vec::with_capacity(1);
    let mut lat: Vec<u64> = Vec::with_capacity(64);
    let mut buf = vec![0u8; read_buf.max(4096)];
    let (mut start, mut end) = (0usize, 0usize);
    let mut pongs: Vec<u8> = Vec::new();
    'read: loop {
        if start == end {
            start = 0;
            end = 0;
        } else if buf.len() - end < buf.len() / 4 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if buf.len() - end < buf.len() / 4 {
                buf.resize(buf.len() * 2, 0);
            }
        }
        let n = tokio::select! {
            biased;
            _ = stop.changed() => break 'read,
            r = tcp.read(&mut buf[end..]) => match r {
                Ok(0) => {
                    stats.closed_early = true;
                    stats.close_reason = Some("eof".into());
                    break 'read;
                }
                Ok(n) => n,
                Err(e) => {
                    stats.closed_early = true;
                    stats.close_reason = Some(e.to_string());
                    break 'read;
                }
            },
        };
        end += n;
        let now = now_us();
        let mut fresh = 0u64;
        // Decode every complete frame in buf[start..end].
        loop {
            let avail = &buf[start..end];
            let Some((opcode, fin, header, len)) = frame_header(avail) else {
                break;
            };
            if avail.len() < header + len {
                break;
            }
            let payload = &avail[header..header + len];
            match opcode {
                0x1 if fin => {
                    if let Some((sent, seq, cidx)) = stamp_fast(payload, payload_bytes) {
                        let last = match last_seq.iter_mut().find(|(c, _)| *c == cidx) {
                            Some((_, l)) => l,
                            None => {
                                last_seq.push((cidx, 0));
                                &mut last_seq.last_mut().unwrap().1
                            }
                        };
                        if seq > *last {
                            *last = seq;
                            fresh += 1;
                            lat.push(now.saturating_sub(sent));
                            if lat.len() == lat.capacity() {
                                shared.flush(group, &mut lat);
                            }
                        } else {
                            stats.duplicates += 1;
                        }
                    } else {
                        let text = String::from_utf8_lossy(payload);
                        if action_of(&text) == "error" {
                            stats.errors += 1;
                            eprintln!("subscriber got an error frame: {text}");
                        }
                    }
                }
                0x8 => {
                    stats.closed_early = true;
                    stats.close_reason = Some(format!(
                        "close frame {:?}",
                        String::from_utf8_lossy(payload)
                    ));
                    break 'read;
                }
                0x9 => {
                    // Pong with the same payload (client frames are masked: a zero key).
                    pongs.extend_from_slice(&[0x8A, 0x80 | len as u8, 0, 0, 0, 0]);
                    pongs.extend_from_slice(payload);
                }
                0xA => {}
                _ => {
                    stats.errors += 1;
                    eprintln!("subscriber: unexpected frame opcode {opcode} fin {fin}");
                }
            }
            start += header + len;
        }
        if fresh > 0 {
            stats.received += fresh;
            shared.received_by_group[group].fetch_add(fresh, Ordering::Relaxed);
            let total = shared.received.fetch_add(fresh, Ordering::AcqRel) + fresh;
            if total >= shared.wake_at.load(Ordering::Acquire) {
                shared.notify.notify_one();
            }
        }
        if !pongs.is_empty() {
            if tcp.write_all(&pongs).await.is_err() {
                stats.closed_early = true;
                break 'read;
            }
            pongs.clear();
        }
    }
    shared.flush(group, &mut lat);
    if stats.closed_early {
        return (None, stats);
    }
    let rest = buf[start..end].to_vec();
    let ws = WebSocketStream::from_partially_read(
        tcp,
        rest,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        Some(ws_config(4096)),
    )
    .await;
    (Some(ws), stats)
}

/// (opcode, fin, header length, payload length) of a server frame (unmasked).
fn frame_header(b: &[u8]) -> Option<(u8, bool, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (mut header, len) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(l) as usize)
        }
        l => (2, l as usize),
    };
    if masked {
        // Servers never mask; treat the key as part of the header (payload unreadable).
        header += 4;
    }
    Some((opcode, fin, header, len))
}

/// The stamp of a delivered frame: the payload is the frame's last member, so it
/// starts `payload_bytes + 1` bytes before the end; else search for it.
pub fn stamp_fast(frame: &[u8], payload_bytes: usize) -> Option<(u64, u64, u64)> {
    if let Some(at) = frame.len().checked_sub(payload_bytes + 1) {
        if let Some(s) = parse_stamp(&frame[at..]) {
            return Some(s);
        }
    }
    stamp_of(std::str::from_utf8(frame).ok()?)
}

fn digits_b(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 || end > 19 {
        return None;
    }
    let mut v = 0u64;
    for &d in &s[..end] {
        v = v * 10 + (d - b'0') as u64;
    }
    Some((v, &s[end..]))
}

/// One publishing socket: the driver writes through `sink`; a reader task drains
/// the echoes and counts error frames (refused messages).
pub struct Publisher {
    /// (name, index, messages sent) of each channel this socket publishes to, in turn.
    pub channels: Vec<(String, u64, u64)>,
    next: usize,
    sink: SplitSink<Ws, Message>,
    reader: tokio::task::JoinHandle<(SplitStream<Ws>, u64)>,
    pub refused: Arc<AtomicU64>,
    /// Subscribers of each of its channels.
    pub subscribers: u64,
    /// Messages sent over all its channels.
    pub sent: u64,
    stop: watch::Sender<bool>,
}

impl Publisher {
    pub fn new(ws: Ws, channels: Vec<(String, u64)>, subscribers: u64) -> Publisher {
        let (sink, mut stream) = ws.split();
        let refused = Arc::new(AtomicU64::new(0));
        let (stop, mut stop_rx) = watch::channel(false);
        let r = refused.clone();
        let reader = tokio::spawn(async move {
            let mut echoes = 0u64;
            loop {
                tokio::select! {
                    biased;
                    _ = stop_rx.changed() => break,
                    m = stream.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if action_of(t.as_str()) == "error" {
                                if r.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!("publisher got an error frame: {}", t.as_str());
                                }
                            } else {
                                echoes += 1;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            (stream, echoes)
        });
        Publisher {
            channels: channels.into_iter().map(|(n, i)| (n, i, 0)).collect(),
            next: 0,
            sink,
            reader,
            refused,
            subscribers,
            sent: 0,
            stop,
        }
    }

    async fn feed(&mut self, payload_bytes: usize) -> Result<(), Err> {
        let k = self.next % self.channels.len();
        self.next += 1;
        let (name, cidx, seq) = &mut self.channels[k];
        *seq += 1;
        self.sent += 1;
        let frame = message_frame(name, *cidx, *seq, payload_bytes);
        self.sink
            .feed(Message::text(frame))
            .await
            .map_err(|e| format!("publish: {e}"))
    }

    async fn flush(&mut self) -> Result<(), Err> {
        self.sink.flush().await.map_err(|e| format!("publish: {e}"))
    }

    /// Deliveries this publisher's accepted messages should cause.
    pub fn expected(&self) -> u64 {
        self.sent
            .saturating_sub(self.refused.load(Ordering::Relaxed))
            * self.subscribers
    }

    /// Stop the reader and get the socket back.
    pub async fn finish(self) -> Option<Ws> {
        let _ = self.stop.send(true);
        let (stream, _echoes) = self.reader.await.ok()?;
        stream.reunite(self.sink).ok()
    }
}

pub enum Pace {
    /// As fast as the system delivers, at most `window` messages per subscriber in flight.
    Flat { window: u64 },
    /// A fixed total rate of messages per second over all publishers.
    Rate(f64),
}

pub struct DriveResult {
    pub started: Instant,
    pub sending_ended: Instant,
    /// When every expected delivery had arrived (or the drain gave up).
    pub drained: Instant,
    pub sent: u64,
    pub expected: u64,
    pub refused: u64,
    pub error: Option<String>,
}

/// Publish for `duration`, then wait (bounded) until every accepted message reached
/// every subscriber.
pub async fn drive(
    pubs: &mut [Publisher],
    shared: &Shared,
    pace: Pace,
    duration: Duration,
    payload_bytes: usize,
) -> DriveResult {
    let started = Instant::now();
    let deadline = started + duration;
    let mut error = None;
    let total_subs: u64 = pubs.iter().map(|p| p.subscribers).sum();
    let expected_now =
        |pubs: &[Publisher]| -> u64 { pubs.iter().map(|p| p.expected()).sum::<u64>() };
    match pace {
        Pace::Flat { window } => {
            // One publisher in practice; round-robin if several.
            let per_msg = (total_subs / pubs.len().max(1) as u64).max(1);
            let mut i = 0usize;
            'outer: while Instant::now() < deadline {
                let sent_deliveries: u64 = pubs.iter().map(|p| p.sent * p.subscribers).sum();
                let received = shared.received.load(Ordering::Acquire);
                let in_flight = sent_deliveries.saturating_sub(received);
                let limit = window * per_msg;
                if in_flight >= limit {
                    // Wait until half the window has drained.
                    let target = sent_deliveries - limit / 2;
                    let notified = shared.notify.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    shared.wake_at.store(target, Ordering::Release);
                    if shared.received.load(Ordering::Acquire) < target {
                        let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
                    }
                    shared.wake_at.store(u64::MAX, Ordering::Release);
                    continue;
                }
                let room = (limit - in_flight) / per_msg;
                for _ in 0..room.max(1) {
                    let p = &mut pubs[i % pubs.len()];
                    i += 1;
                    if let Err(e) = p.feed(payload_bytes).await {
                        error = Some(e);
                        break 'outer;
                    }
                }
                for p in pubs.iter_mut() {
                    if let Err(e) = p.flush().await {
                        error = Some(e);
                        break 'outer;
                    }
                }
            }
        }
        Pace::Rate(rate) => {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sent = 0u64;
            let mut i = 0usize;
            let n = pubs.len();
            let mut touched = vec![false; n];
            'rate: loop {
                tick.tick().await;
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                let due = ((now - started).as_secs_f64() * rate) as u64;
                if due <= sent {
                    continue;
                }
                for _ in sent..due {
                    let k = i % n;
                    i += 1;
                    touched[k] = true;
                    if let Err(e) = pubs[k].feed(payload_bytes).await {
                        error = Some(e);
                        break 'rate;
                    }
                }
                sent = due;
                for (k, t) in touched.iter_mut().enumerate() {
                    if *t {
                        *t = false;
                        if let Err(e) = pubs[k].flush().await {
                            error = Some(e);
                            break 'rate;
                        }
                    }
                }
            }
        }
    }
    let sending_ended = Instant::now();
    // Drain: until everything accepted has arrived, or no progress for 3 s (max 30 s).
    let mut last = shared.received.load(Ordering::Acquire);
    let mut last_progress = Instant::now();
    let drain_deadline = sending_ended + Duration::from_secs(30);
    let drained = loop {
        let received = shared.received.load(Ordering::Acquire);
        if received >= expected_now(pubs) {
            break Instant::now();
        }
        if received != last {
            last = received;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > Duration::from_secs(3) || Instant::now() > drain_deadline {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // Late error frames for the last messages would have arrived by now.
    DriveResult {
        started,
        sending_ended,
        drained,
        sent: pubs.iter().map(|p| p.sent).sum(),
        expected: expected_now(pubs),
        refused: pubs.iter().map(|p| p.refused.load(Ordering::Relaxed)).sum(),
        error,
    }
}

/// Run `n` jobs with at most `concurrency` at once; answers results in index order.
pub async fn run_bounded<T, F, Fut>(n: usize, concurrency: usize, mut f: F) -> Vec<T>
where
    T: Send + 'static,
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let fut = f(i);
        handles.push(tokio::spawn(async move {
            let r = fut.await;
            drop(permit);
            r
        }));
    }
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("task panicked"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = message_frame("chat/x", 3, 7, 100);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        let at = f.find(r#""payload":"#).unwrap() + 10;
        let p = &f[at..f.len() - 1];
        assert_eq!(p.len(), 100, "{p}");
        assert_eq!(v["payload"]["s"], 7);
        let delivered = format!(
            r#"{{"action":"message","options":{{"channel":"chat/x","authenticated":false,"socketId":null}},"client":{{"socketId":"a"}},"payload":{p}}}"#
        );
        assert_eq!(action_of(&delivered), "message");
        let (t, s, c) = stamp_of(&delivered).unwrap();
        assert_eq!((s, c), (7, 3));
        assert_eq!(stamp_fast(delivered.as_bytes(), 100), Some((t, 7, 3)));
        assert_eq!(stamp_fast(f.as_bytes(), 100), Some((t, 7, 3)));
        assert_eq!(
            stamp_fast(delivered.as_bytes(), 90),
            Some((t, 7, 3)),
            "fallback search"
        );
        assert_eq!(t, v["payload"]["t"].as_u64().unwrap());
        assert_eq!(stamp_of(&f).unwrap().1, 7);
        let small = message_frame("c", 0, 1, 10);
        assert!(
            serde_json::from_str::<serde_json::Value>(&small).is_ok(),
            "{small}"
        );
        assert_eq!(action_of(r#"{"action":"join"}"#), "join");
    }
}
