//! One node, everything in memory: broadcasts are delivered locally at once and
//! history lives in a ring per channel that outlives the channel actor, expiring
//! after `history_ttl` without writes.

use super::{done, Broadcast, ChannelKey, Engine, EngineResult, HistoryEntry, Published};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

struct Ring {
    entries: VecDeque<HistoryEntry>,
    last_write: Instant,
}

pub struct MemoryEngine {
    history: Mutex<HashMap<ChannelKey, Ring>>,
    history_ttl: Duration,
}

impl MemoryEngine {
    pub fn new(history_ttl: Duration) -> Self {
        Self {
            history: Mutex::new(HashMap::new()),
            history_ttl,
        }
    }

    /// Drop the history of channels nobody wrote to within the TTL; returns how many.
    pub fn sweep(&self) -> usize {
        let mut h = self.history.lock();
        let before = h.len();
        let ttl = self.history_ttl;
        h.retain(|_, ring| ring.last_write.elapsed() < ttl);
        before - h.len()
    }

    pub fn channels_with_history(&self) -> usize {
        self.history.lock().len()
    }
}

impl Engine for MemoryEngine {
    fn clustered(&self) -> bool {
        false
    }

    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<Published> {
        if msg.history_cap > 0 {
            let authenticated_only = msg.audience.authenticated_only();
            let mut h = self.history.lock();
            let ring = h.entry(key.clone()).or_insert_with(|| Ring {
                entries: VecDeque::new(),
                last_write: Instant::now(),
            });
            ring.last_write = Instant::now();
            ring.entries.push_back(HistoryEntry {
                json: msg.json.clone(),
                authenticated_only,
            });
            while ring.entries.len() > msg.history_cap {
                ring.entries.pop_front();
            }
        }
        done(Published::Local(msg))
    }

    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>> {
        let entries = self
            .history
            .lock()
            .get(key)
            .map(|r| r.entries.iter().cloned().collect())
            .unwrap_or_default();
        done(entries)
    }

    fn ready(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Audience;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn msg(text: &'static str, cap: usize) -> Broadcast {
        Broadcast {
            json: Bytes::from_static(text.as_bytes()),
            audience: Audience::everyone(),
            history_cap: cap,
            origin: None,
        }
    }

    #[test]
    fn history_is_capped_and_ordered() {
        let e = MemoryEngine::new(Duration::from_secs(60));
        let k = ChannelKey::new("a", "c");
        for t in ["1", "2", "3"] {
            e.publish(&k, msg(t, 2)).now_or_never().unwrap().unwrap();
        }
        e.publish(&k, msg("x", 0)).now_or_never().unwrap().unwrap();
        let h = e.history(&k).now_or_never().unwrap().unwrap();
        let texts: Vec<_> = h.iter().map(|x| x.json.clone()).collect();
        assert_eq!(texts, vec![Bytes::from("2"), Bytes::from("3")]);
    }

    #[test]
    fn idle_history_expires() {
        let e = MemoryEngine::new(Duration::ZERO);
        let k = ChannelKey::new("a", "c");
        e.publish(&k, msg("1", 5)).now_or_never().unwrap().unwrap();
        assert_eq!(e.sweep(), 1);
        assert_eq!(e.channels_with_history(), 0);
    }
}
