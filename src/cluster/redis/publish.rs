//! What a broadcast looks like on the wire between nodes (an id-and-audience header
//! line, then the frame JSON), and the broadcasts Redis accepted but this node has
//! not yet seen come back, published again after a reconnect.

use super::*;

impl Inner {
    /// Our own broadcast came back: it reached Redis's output buffers. It is kept a
    /// little longer (`KEEP_CONFIRMED`): a Redis that dies now may still hold it
    /// unsent for a slower node.
    pub(super) fn confirmed(&self, envelope: &[u8]) {
        let Some(split) = envelope.iter().position(|&c| c == b'\n') else {
            return;
        };
        let Ok(header) = serde_json::from_slice::<Header>(&envelope[..split]) else {
            return;
        };
        if header.m.split_once(':').map(|(node, _)| node) != Some(self.node_id.as_str()) {
            return;
        }
        self.pending.lock().confirm(&header.m);
    }

    /// After a reconnect: publish again what Redis accepted but never sent back,
    /// and, when Redis lost its data (`restarted`), also what came back lately, for
    /// the nodes that had not read it yet. Each is marked republished: receivers
    /// skip what they delivered (by origin and sequence) and deliver the rest only to
    /// members that joined before their own reconnect.
    pub(super) async fn republish_pending(&self, restarted: bool) -> redis::RedisResult<usize> {
        let waiting: Vec<_> = {
            let pending = self.pending.lock();
            pending
                .items
                .iter()
                .filter(|p| restarted || p.confirmed_at.is_none())
                .map(|p| {
                    // Stored once already unless it never came back.
                    let cap = if p.confirmed_at.is_some() {
                        0
                    } else {
                        p.history_cap
                    };
                    (p.key.clone(), mark_republished(&p.envelope), cap)
                })
                .collect()
        };
        let mut conn = self.conn();
        for (key, envelope, cap) in &waiting {
            self.publish_batches(
                &mut conn,
                std::iter::once((key, vec![(&envelope[..], *cap)])),
            )
            .await?;
        }
        if !waiting.is_empty() {
            tracing::info!(
                republished = waiting.len(),
                restarted,
                "republished broadcasts Redis may have lost"
            );
        }
        Ok(waiting.len())
    }

    /// Forget what came back more than `KEEP_CONFIRMED` ago, and what is pending for
    /// long while connected (lost for good).
    pub(super) fn prune_pending(&self) {
        let lost = self.pending.lock().prune();
        if lost > 0 {
            tracing::warn!(lost, "broadcasts never came back from Redis");
        }
    }
}

/// How long a broadcast that came back is kept for a republish after Redis lost
/// its data: longer than a healthy node takes to read what Redis sent it.
const KEEP_CONFIRMED: Duration = Duration::from_secs(2);

/// The envelope with `r` set in its header (republished).
fn mark_republished(envelope: &[u8]) -> Vec<u8> {
    let split = envelope
        .iter()
        .position(|&c| c == b'\n')
        .unwrap_or(envelope.len());
    let Ok(mut header) = serde_json::from_slice::<Header>(&envelope[..split]) else {
        return envelope.to_vec();
    };
    header.r = true;
    let mut out = serde_json::to_vec(&header).expect("headers serialise");
    out.extend_from_slice(&envelope[split..]);
    out
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    /// The broadcast's id: `<node>:<sequence>`, unique in the cluster; the
    /// sequence grows with every broadcast a node publishes, in each channel's order.
    m: String,
    a: Audience,
    /// Published again after Redis was lost (see `republish_pending`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    r: bool,
}

/// Header (one JSON line: id and audience) + frame JSON; frames never contain a raw newline.
pub(super) fn encode_envelope(mid: &str, b: &Broadcast) -> Vec<u8> {
    let header = Header {
        m: mid.to_string(),
        a: b.audience.clone(),
        r: false,
    };
    let mut out = serde_json::to_vec(&header).expect("headers serialise");
    out.push(b'\n');
    out.extend_from_slice(&b.json);
    out
}

/// A broadcast as it arrived: its id, whether it was republished, and itself.
pub(super) struct Arrived {
    pub(super) mid: String,
    pub(super) republished: bool,
    pub(super) broadcast: Broadcast,
}

pub(super) fn decode_envelope(payload: &[u8]) -> Option<Arrived> {
    let split = payload.iter().position(|&c| c == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..split]).ok()?;
    Some(Arrived {
        mid: header.m,
        republished: header.r,
        broadcast: Broadcast {
            json: Bytes::copy_from_slice(&payload[split + 1..]),
            audience: header.a,
            history_cap: 0,
            origin: None,
            seq: None,
        },
    })
}

/// A broadcast Redis accepted but this node has not yet seen come back (or saw
/// come back less than `KEEP_CONFIRMED` ago): if Redis dies in between, it is
/// published again after the reconnect (receivers skip repeats by id), so nothing
/// accepted is lost.
pub(super) struct Pending {
    pub(super) mid: String,
    pub(super) key: ChannelKey,
    pub(super) envelope: Vec<u8>,
    pub(super) history_cap: usize,
    pub(super) at: std::time::Instant,
    /// When it came back.
    pub(super) confirmed_at: Option<std::time::Instant>,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.envelope.len() + self.mid.len()
    }
}

/// The broadcasts at risk, bounded in bytes (`cluster.resend_buffer_bytes`): when
/// full, a new broadcast is refused (`Service unavailable` to its sender) rather
/// than an older accepted one forgotten (docs/protocol.md section 9).
pub(super) struct PendingQueue {
    pub(super) items: std::collections::VecDeque<Pending>,
    bytes: usize,
    limit: usize,
}

impl PendingQueue {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            items: std::collections::VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Keep `p` until it comes back; false when there is no room for it, even
    /// after forgetting what came back already (oldest first).
    pub(super) fn push(&mut self, p: Pending) -> bool {
        let size = p.bytes();
        while self.bytes + size > self.limit {
            let Some(i) = self.items.iter().position(|q| q.confirmed_at.is_some()) else {
                return false;
            };
            if let Some(q) = self.items.remove(i) {
                self.bytes -= q.bytes();
            }
        }
        self.bytes += size;
        self.items.push_back(p);
        true
    }

    /// Forget a refused broadcast. Searched from the newest: what is refused was
    /// published lately, behind up to 2 s of broadcasts that came back.
    pub(super) fn remove(&mut self, mid: &str) {
        if let Some(i) = self.items.iter().rposition(|p| p.mid == mid) {
            if let Some(p) = self.items.remove(i) {
                self.bytes -= p.bytes();
            }
        }
    }

    /// It came back. Searched from the newest: what comes back is mostly recent.
    pub(super) fn confirm(&mut self, mid: &str) {
        if let Some(p) = self.items.iter_mut().rev().find(|p| p.mid == mid) {
            p.confirmed_at.get_or_insert_with(std::time::Instant::now);
        }
    }

    /// Drop what came back more than `KEEP_CONFIRMED` ago and what never came back
    /// within a minute; answers how many of the latter.
    pub(super) fn prune(&mut self) -> usize {
        let (mut freed, mut lost) = (0, 0);
        self.items.retain(|p| {
            let keep = match p.confirmed_at {
                Some(at) => at.elapsed() < KEEP_CONFIRMED,
                None => p.at.elapsed() < Duration::from_secs(60),
            };
            if !keep {
                freed += p.bytes();
                lost += usize::from(p.confirmed_at.is_none());
            }
            keep
        });
        self.bytes -= freed;
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(mid: &str) -> Pending {
        Pending {
            mid: mid.into(),
            key: ChannelKey::new("a", "c"),
            envelope: vec![0; 100],
            history_cap: 0,
            at: std::time::Instant::now(),
            confirmed_at: None,
        }
    }

    /// What came back makes room for what did not; what did not is never dropped
    /// for room (a new broadcast is refused instead).
    #[test]
    fn a_full_buffer_drops_what_came_back_first_and_then_refuses() {
        let size = pending("n:0").bytes();
        let mut q = PendingQueue::new(size * 2);
        assert!(q.push(pending("n:0")));
        assert!(q.push(pending("n:1")));
        q.confirm("n:0");
        assert!(q.push(pending("n:2")), "n:0 came back: its room is taken");
        assert_eq!(
            q.items.iter().map(|p| p.mid.as_str()).collect::<Vec<_>>(),
            ["n:1", "n:2"]
        );
        assert!(!q.push(pending("n:3")), "nothing came back: refused");
        q.remove("n:2");
        assert!(q.push(pending("n:3")));
        assert_eq!(q.prune(), 0, "nothing is old yet");
    }

    #[test]
    fn envelopes_round_trip() {
        for audience in [
            Audience::everyone(),
            Audience::Members {
                authenticated_only: true,
            },
            Audience::Socket {
                id: Arc::from("s1"),
            },
            Audience::Presence {
                except: Arc::from("s2"),
            },
            Audience::User(crate::rules::EventTarget {
                row_id: "42".into(),
                dbo_id: Some(7),
            }),
        ] {
            let b = Broadcast {
                json: Bytes::from_static(br#"{"action":"message","payload":"a\nb"}"#),
                audience: audience.clone(),
                history_cap: 5,
                origin: None,
                seq: None,
            };
            let back = decode_envelope(&encode_envelope("n:1", &b)).unwrap();
            assert_eq!(back.mid, "n:1");
            assert!(!back.republished);
            assert_eq!(back.broadcast.audience, audience);
            assert_eq!(back.broadcast.json, b.json);
            let again = decode_envelope(&mark_republished(&encode_envelope("n:1", &b))).unwrap();
            assert!(again.republished);
            assert_eq!(again.broadcast.json, b.json);
        }
    }
}
