//! The per-socket frame rate (`limits.frames_per_minute`, docs/protocol.md section
//! 9): every client frame counts. Over the rate a frame is refused; a client that
//! keeps going until it has sent ten times the rate within a minute is abusive.

use governor::clock::MonotonicClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// A per-socket limiter on the standard monotonic clock: a zero-sized clock keeps
/// it small, and every socket holds one or two.
pub type Limiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    MonotonicClock,
    governor::middleware::NoOpMiddleware<std::time::Instant>,
>;

/// A limiter of `n` per minute; None when `n` is 0 (off).
pub fn per_minute(n: u32) -> Option<Limiter> {
    let n = NonZeroU32::new(n)?;
    Some(RateLimiter::direct_with_clock(
        Quota::per_minute(n),
        MonotonicClock,
    ))
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    Take,
    /// `Rate limit exceeded`; the frame has no effect.
    Refuse,
    /// Close the socket with 1008.
    Close,
}

pub struct FrameRate {
    limiter: Limiter,
    per_minute: u32,
    window_start: Instant,
    refused: u32,
}

impl FrameRate {
    /// None when the limit is off (0).
    pub fn new(per_minute: u32) -> Option<FrameRate> {
        Some(FrameRate {
            limiter: self::per_minute(per_minute)?,
            per_minute,
            window_start: Instant::now(),
            refused: 0,
        })
    }

    pub fn check(&mut self) -> FrameVerdict {
        if self.limiter.check().is_ok() {
            return FrameVerdict::Take;
        }
        if self.window_start.elapsed() >= Duration::from_secs(60) {
            self.window_start = Instant::now();
            self.refused = 0;
        }
        self.refused += 1;
        // The rate itself went through; nine times more refused makes ten times.
        if self.refused >= self.per_minute.saturating_mul(9) {
            FrameVerdict::Close
        } else {
            FrameVerdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_rate_and_closes_at_ten_times_it() {
        let mut rate = FrameRate::new(3).unwrap();
        let verdicts: Vec<_> = (0..30).map(|_| rate.check()).collect();
        assert_eq!(&verdicts[..3], &[FrameVerdict::Take; 3]);
        assert!(verdicts[3..29].iter().all(|v| *v == FrameVerdict::Refuse));
        assert_eq!(verdicts[29], FrameVerdict::Close);
        assert!(FrameRate::new(0).is_none());
    }
}
