//! A channel's stream has a TTL, so an idle channel costs Redis nothing. Setting it
//! on every publish costs a command per channel per script call, so a node sets it
//! at most every `REFRESH_EVERY` per stream, to that much more than it must last:
//! the stream still outlives its last publish by at least its TTL. A stream the
//! publish script creates gets its TTL in the same call (`writer::PUBLISH_LUA`), so
//! none is ever left without one, whatever this node remembers.

use super::*;
use std::time::Instant;

/// How often at most a node sets one stream's TTL while it publishes to it.
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// How long a stream lives after a publish not kept in history.
pub(super) fn recovery_stream_ttl_ms() -> u64 {
    history::RECOVERY_TTL_MS + REFRESH_EVERY.as_millis() as u64
}

/// When this node last set each stream's TTL (by topic), and whether to the history TTL.
#[derive(Default)]
pub(super) struct TtlRefresh {
    set: HashMap<String, (Instant, bool)>,
}

impl TtlRefresh {
    /// Whether a call publishing to `topic` (with a broadcast kept in history when
    /// `kept`) sets its stream's TTL; remembers it when it does. A stream last set to
    /// the recovery TTL gets the history TTL with the first kept broadcast.
    pub(super) fn due(&mut self, topic: &str, kept: bool) -> bool {
        let now = Instant::now();
        let due = match self.set.get(topic) {
            None => true,
            Some(&(at, history)) => now.duration_since(at) >= REFRESH_EVERY || (kept && !history),
        };
        if due {
            self.set.insert(topic.to_string(), (now, kept));
        }
        due
    }

    /// Forget what is due anyway.
    pub(super) fn prune(&mut self) {
        self.set.retain(|_, (at, _)| at.elapsed() < REFRESH_EVERY);
    }

    /// Redis may have lost the streams (a reconnect): every stream is due.
    pub(super) fn forget(&mut self) {
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ttl_is_set_once_a_period_and_again_for_history() {
        let mut t = TtlRefresh::default();
        assert!(t.due("a", false), "first publish");
        assert!(!t.due("a", false), "set lately");
        assert!(t.due("a", true), "history needs the longer TTL");
        assert!(!t.due("a", true));
        assert!(!t.due("a", false), "a history TTL covers the recovery one");
        assert!(t.due("b", true), "another stream");
        t.forget();
        assert!(t.due("a", true), "after a reconnect, every stream");
        t.prune();
        assert_eq!(t.set.len(), 1, "nothing is old yet; b was forgotten");
    }
}
