//! What a broadcast looks like on the wire between nodes (an id-and-audience header
//! line, then the frame JSON), and the broadcasts Redis accepted but this node has
//! not yet seen come back, published again after a reconnect.

use super::*;

impl Inner {
    /// Our own broadcast came back: it is no longer at risk.
    pub(super) fn confirmed(&self, envelope: &[u8]) {
        let Some(split) = envelope.iter().position(|&c| c == b'\n') else {
            return;
        };
        let Ok(header) = serde_json::from_slice::<Header>(&envelope[..split]) else {
            return;
        };
        if !header.m.starts_with(self.node_id.as_str()) {
            return;
        }
        self.pending.lock().remove(&header.m);
    }

    /// After a reconnect: publish again what Redis accepted but never sent back.
    pub(super) async fn republish_pending(&self) -> redis::RedisResult<usize> {
        let mut conn = self.conn();
        let waiting: Vec<_> = {
            let pending = self.pending.lock();
            pending
                .items
                .iter()
                .map(|p| {
                    (
                        p.key.clone(),
                        p.envelope.clone(),
                        p.history_cap,
                        p.entry.clone(),
                    )
                })
                .collect()
        };
        for (key, envelope, cap, entry) in &waiting {
            let _: i64 = self
                .publish_script
                .key(self.topic(key))
                .key(self.history_key(key))
                .key(self.recovery_stream(key))
                .arg(envelope)
                .arg(*cap)
                .arg(self.history_ttl_ms)
                .arg(entry)
                .invoke_async(&mut conn)
                .await?;
        }
        if !waiting.is_empty() {
            tracing::info!(
                republished = waiting.len(),
                "republished broadcasts Redis lost"
            );
        }
        Ok(waiting.len())
    }

    /// Broadcasts pending for long while connected were lost for good; forget them.
    pub(super) fn prune_pending(&self) {
        let mut pending = self.pending.lock();
        let before = pending.items.len();
        pending.retain(|p| p.at.elapsed() < Duration::from_secs(60));
        if pending.items.len() < before {
            tracing::warn!(
                lost = before - pending.items.len(),
                "broadcasts never came back from Redis"
            );
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    /// The broadcast's id: `<node>:<sequence>`, unique in the cluster.
    m: String,
    a: Audience,
}

/// Header (one JSON line: id and audience) + frame JSON; frames never contain a raw newline.
pub(super) fn encode_envelope(mid: &str, b: &Broadcast) -> Vec<u8> {
    let header = Header {
        m: mid.to_string(),
        a: b.audience.clone(),
    };
    let mut out = serde_json::to_vec(&header).expect("headers serialise");
    out.push(b'\n');
    out.extend_from_slice(&b.json);
    out
}

/// A history list entry: a flag byte (`0` everyone, `1` authenticated members only),
/// or `a` + the audience as a JSON line (an event aimed at one user), then the frame.
pub(super) fn encode_history_entry(b: &Broadcast) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.json.len() + 1);
    match &b.audience {
        Audience::Members { authenticated_only } => {
            out.push(if *authenticated_only { b'1' } else { b'0' })
        }
        audience => {
            out.push(b'a');
            out.extend(serde_json::to_vec(audience).expect("audiences serialise"));
            out.push(b'\n');
        }
    }
    out.extend_from_slice(&b.json);
    out
}

pub(super) fn decode_history_entry(e: &[u8]) -> Option<HistoryEntry> {
    let (&flag, rest) = e.split_first()?;
    let (audience, json) = match flag {
        b'0' | b'1' => (
            Audience::Members {
                authenticated_only: flag == b'1',
            },
            rest,
        ),
        b'a' => {
            let split = rest.iter().position(|&c| c == b'\n')?;
            (
                serde_json::from_slice(&rest[..split]).ok()?,
                &rest[split + 1..],
            )
        }
        _ => return None,
    };
    Some(HistoryEntry {
        json: Bytes::copy_from_slice(json),
        audience,
    })
}

pub(super) fn decode_envelope(payload: &[u8]) -> Option<(String, Broadcast)> {
    let split = payload.iter().position(|&c| c == b'\n')?;
    let header: Header = serde_json::from_slice(&payload[..split]).ok()?;
    Some((
        header.m,
        Broadcast {
            json: Bytes::copy_from_slice(&payload[split + 1..]),
            audience: header.a,
            history_cap: 0,
            origin: None,
            seq: None,
        },
    ))
}

/// A broadcast Redis accepted but this node has not yet seen come back: if Redis
/// dies in between, it is published again after the reconnect (receivers skip
/// repeats by id), so nothing accepted is lost.
pub(super) struct Pending {
    pub(super) mid: String,
    pub(super) key: ChannelKey,
    pub(super) envelope: Vec<u8>,
    pub(super) history_cap: usize,
    pub(super) entry: Vec<u8>,
    pub(super) at: std::time::Instant,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.envelope.len() + self.entry.len() + self.mid.len()
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

    /// Keep `p` until it comes back; false when there is no room for it.
    pub(super) fn push(&mut self, p: Pending) -> bool {
        let size = p.bytes();
        if self.bytes + size > self.limit {
            return false;
        }
        self.bytes += size;
        self.items.push_back(p);
        true
    }

    pub(super) fn remove(&mut self, mid: &str) {
        if let Some(i) = self.items.iter().position(|p| p.mid == mid) {
            if let Some(p) = self.items.remove(i) {
                self.bytes -= p.bytes();
            }
        }
    }

    pub(super) fn retain(&mut self, keep: impl Fn(&Pending) -> bool) {
        let mut freed = 0;
        self.items.retain(|p| {
            let kept = keep(p);
            if !kept {
                freed += p.bytes();
            }
            kept
        });
        self.bytes -= freed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let (mid, back) = decode_envelope(&encode_envelope("n:1", &b)).unwrap();
            assert_eq!(mid, "n:1");
            assert_eq!(back.audience, audience);
            assert_eq!(back.json, b.json);
            let stored = decode_history_entry(&encode_history_entry(&b)).unwrap();
            assert_eq!(stored.audience, audience);
            assert_eq!(stored.json, b.json);
        }
    }
}
