//! The clients of a run: each holds one raw WebSocket at a time on one channel
//! (with presence), sends numbered messages, and logs every session (socket id,
//! join time, everything received) and every message it sent (accepted when its
//! echo came back). Now and then it sends a direct message to another member it
//! knows from presence, for the checker's leak check. A closed socket is reopened on
//! the next node.

use crate::check::{Sent, Session};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

/// What one client did, read by the run when it ends.
#[derive(Default)]
pub struct Log {
    pub sessions: Vec<Session>,
    pub sent: Vec<Sent>,
    /// The session open now (an index into `sessions`).
    pub open: Option<usize>,
    /// Barrier tags the open session received.
    pub barriers: HashSet<String>,
}

pub enum Command {
    /// Send a barrier message with this tag on the channel.
    Barrier(String),
    /// Stop reading (and sending) for this long: a slow consumer.
    Stall(Duration),
}

pub struct Client {
    pub id: usize,
    pub channel: String,
    pub log: Arc<Mutex<Log>>,
    pub commands: mpsc::UnboundedSender<Command>,
}

/// Phases the run tells every client: sending, then quiet (no new messages), then done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    Sending,
    Quiet,
    Done,
}

/// Who a client is and how it behaves.
pub struct Spec {
    pub id: usize,
    pub channel: String,
    /// The brokers, tried in turn.
    pub nodes: Vec<SocketAddr>,
    pub seed: u64,
    /// A message every `every_ms` to `3 × every_ms` ms.
    pub every_ms: u64,
    /// A JWT for the socket (`Sec-WebSocket-Protocol`): an authenticated client,
    /// which sends one public message in three for authenticated members only.
    pub token: Option<String>,
}

pub fn start(spec: Spec, phase: watch::Receiver<Phase>) -> Client {
    let log = Arc::new(Mutex::new(Log::default()));
    let (commands, rx) = mpsc::unbounded_channel();
    let client = Client {
        id: spec.id,
        channel: spec.channel.clone(),
        log: log.clone(),
        commands,
    };
    tokio::spawn(run(spec, phase, log, rx));
    client
}

async fn run(
    spec: Spec,
    mut phase: watch::Receiver<Phase>,
    log: Arc<Mutex<Log>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let Spec {
        id,
        channel,
        nodes,
        seed,
        every_ms,
        token,
    } = spec;
    let authenticated = token.is_some();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9));
    let mut attempt = id;
    let mut next_n: u64 = 0;
    let mut next_direct: u64 = 0;
    while *phase.borrow() != Phase::Done {
        let node = nodes[attempt % nodes.len()];
        attempt += 1;
        let url = format!("ws://{node}/rt/chaos");
        let Ok(mut request) =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
        else {
            return;
        };
        if let Some(t) = token.as_deref().and_then(|t| t.parse().ok()) {
            request.headers_mut().insert("Sec-WebSocket-Protocol", t);
        }
        let ws = match tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(request),
        )
        .await
        {
            Ok(Ok((ws, _))) => ws,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (mut tx, mut rx) = ws.split();
        let join =
            json!({"action":"join","options":{"channel":channel},"payload":{"presence":true}});
        if tx
            .send(Message::Text(join.to_string().into()))
            .await
            .is_err()
        {
            continue;
        }
        let mut session: Option<usize> = None;
        // Other members' socket ids, from presence.
        let mut peers: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(
            rng.random_range(every_ms..every_ms * 3 + 1),
        ));
        loop {
            tokio::select! {
                frame = rx.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(f) = serde_json::from_str::<Value>(&text) else { continue };
                    on_frame(id, &channel, authenticated, &f, &log, &mut session);
                    track_peers(&f, &log, session, &mut peers);
                }
                _ = tick.tick(), if session.is_some() && *phase.borrow() == Phase::Sending => {
                    if !peers.is_empty() && rng.random_range(0..4) == 0 {
                        let to = peers[rng.random_range(0..peers.len())].clone();
                        let d = next_direct;
                        next_direct += 1;
                        let m = json!({"action":"message","options":{"channel":channel,"socketId":to},"payload":{"c":id,"d":d,"to":to}});
                        if tx.send(Message::Text(m.to_string().into())).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let n = next_n;
                    next_n += 1;
                    let auth_only = authenticated && rng.random_range(0..3) == 0;
                    log.lock().unwrap().sent.push(Sent {
                        id: (id, n),
                        channel: channel.clone(),
                        at: Instant::now(),
                        accepted: false,
                        auth_only,
                    });
                    let options = if auth_only {
                        json!({"channel":channel,"authenticated":true})
                    } else {
                        json!({"channel":channel})
                    };
                    let m = json!({"action":"message","options":options,"payload":{"c":id,"n":n}});
                    if tx.send(Message::Text(m.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(command) = commands.recv() => match command {
                    Command::Barrier(tag) => {
                        let m = json!({"action":"message","options":{"channel":channel},"payload":{"barrier":tag}});
                        if tx.send(Message::Text(m.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    // Neither reads nor answers pings meanwhile: the broker may drop it.
                    Command::Stall(how_long) => tokio::time::sleep(how_long).await,
                },
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Done {
                        // The run ends with this session open.
                        return;
                    }
                }
            }
        }
        // The socket closed: its session is over.
        {
            let mut l = log.lock().unwrap();
            if let Some(i) = session.take() {
                l.sessions[i].open_at_end = false;
            }
            l.open = None;
            l.barriers.clear();
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
    }
}

/// Keep `peers` (the other members' socket ids) up to date from presence frames.
fn track_peers(f: &Value, log: &Mutex<Log>, session: Option<usize>, peers: &mut Vec<String>) {
    let own = session.map(|i| log.lock().unwrap().sessions[i].socket_id.clone());
    let id_of = |client: &Value| client["socketId"].as_str().map(str::to_string);
    match f["action"].as_str() {
        Some("presence_full") => {
            *peers = f["payload"]["presence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(id_of)
                .filter(|p| Some(p) != own.as_ref())
                .collect();
        }
        Some("presence_update") => {
            let Some(p) = id_of(&f["payload"]["presence"]) else {
                return;
            };
            peers.retain(|q| *q != p);
            if f["payload"]["action"] == "join" && Some(&p) != own.as_ref() {
                peers.push(p);
            }
        }
        _ => {}
    }
}

fn on_frame(
    id: usize,
    channel: &str,
    authenticated: bool,
    f: &Value,
    log: &Mutex<Log>,
    session: &mut Option<usize>,
) {
    let mut l = log.lock().unwrap();
    match f["action"].as_str() {
        Some("join") if f["options"]["channel"] == channel && session.is_none() => {
            l.sessions.push(Session {
                socket_id: f["client"]["socketId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                channel: channel.to_string(),
                authenticated,
                joined: Instant::now(),
                open_at_end: true,
                received: Vec::new(),
                direct: Vec::new(),
            });
            let i = l.sessions.len() - 1;
            *session = Some(i);
            l.open = Some(i);
        }
        Some("message") => {
            let Some(i) = *session else { return };
            let p = &f["payload"];
            if let Some(tag) = p["barrier"].as_str() {
                l.barriers.insert(tag.to_string());
                return;
            }
            if let (Some(c), Some(d), Some(to)) =
                (p["c"].as_u64(), p["d"].as_u64(), p["to"].as_str())
            {
                l.sessions[i].direct.push(((c as usize, d), to.to_string()));
                return;
            }
            let (Some(c), Some(n)) = (p["c"].as_u64(), p["n"].as_u64()) else {
                return;
            };
            l.sessions[i].received.push((c as usize, n));
            if c as usize == id {
                if let Some(s) = l.sent.iter_mut().rev().find(|s| s.id == (id, n)) {
                    s.accepted = true;
                }
            }
        }
        _ => {}
    }
}
