//! A socket's send queue, bounded in bytes, and the response body that drains it.
//!
//! Channels push already-encoded frames straight into a member's `Outbox` (no actor
//! mailbox per delivery); the HTTP dispatcher pulls them out through `OutboxBody`,
//! gathering several queued frames into one write. The lock is held only to move a
//! `Bytes` handle in or out, never across an await.

use crate::protocol::{close_frame, Frame};
use actix_web::body::{BodySize, MessageBody};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// This frame would have overflowed the queue: the queue was dropped and the socket
    /// is closing with 1013. The caller should drop the member at once.
    Overflow,
    /// The socket is closing or gone; the frame was discarded.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// A close frame is queued last; the body ends after it.
    Closing,
    /// The body ended or was dropped.
    Done,
}

struct State {
    queue: VecDeque<Frame>,
    bytes: usize,
    waker: Option<Waker>,
    phase: Phase,
    overflowed: bool,
}

pub struct Outbox {
    state: Mutex<State>,
    limit: usize,
}

impl Outbox {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                bytes: 0,
                waker: None,
                phase: Phase::Open,
                overflowed: false,
            }),
            limit,
        })
    }

    /// Queue a frame; on overflow the socket closes with 1013 and nothing queued is sent.
    pub fn push(&self, frame: Frame) -> Push {
        let waker = {
            let mut s = self.state.lock();
            if s.phase != Phase::Open {
                return Push::Closed;
            }
            if s.bytes + frame.len() > self.limit {
                s.queue.clear();
                s.bytes = 0;
                s.queue.push_back(close_frame(
                    crate::protocol::close::OVERLOAD,
                    "slow consumer",
                ));
                s.phase = Phase::Closing;
                s.overflowed = true;
                let w = s.waker.take();
                drop(s);
                if let Some(w) = w {
                    w.wake();
                }
                return Push::Overflow;
            }
            s.bytes += frame.len();
            s.queue.push_back(frame);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Push::Queued
    }

    /// Queue a close frame after what is queued (or instead of it) and end the stream.
    /// Returns false when the socket was already closing.
    pub fn close(&self, code: u16, reason: &str, discard_queued: bool) -> bool {
        let waker = {
            let mut s = self.state.lock();
            if s.phase != Phase::Open {
                return false;
            }
            if discard_queued {
                s.queue.clear();
                s.bytes = 0;
            }
            s.queue.push_back(close_frame(code, reason));
            s.phase = Phase::Closing;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// End the stream without a close frame (the peer is already gone or closed first).
    pub fn finish(&self) {
        let waker = {
            let mut s = self.state.lock();
            if s.phase == Phase::Done {
                return;
            }
            s.phase = Phase::Closing;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the socket was closed for overflowing its queue.
    pub fn overflowed(&self) -> bool {
        self.state.lock().overflowed
    }

    pub fn is_open(&self) -> bool {
        self.state.lock().phase == Phase::Open
    }
}

/// The 101 response's body: everything the server writes to the socket.
pub struct OutboxBody {
    outbox: Arc<Outbox>,
}

impl OutboxBody {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        Self { outbox }
    }
}

impl MessageBody for OutboxBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut s = self.outbox.state.lock();
        if let Some(frame) = s.queue.pop_front() {
            s.bytes = s.bytes.saturating_sub(frame.len());
            return Poll::Ready(Some(Ok(frame)));
        }
        match s.phase {
            Phase::Open => {
                match &s.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => s.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Phase::Closing | Phase::Done => {
                s.phase = Phase::Done;
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let mut s = self.outbox.state.lock();
        s.phase = Phase::Done;
        s.queue.clear();
        s.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_the_queue_and_closes_with_1013() {
        let outbox = Outbox::new(10);
        assert_eq!(outbox.push(Bytes::from_static(b"12345")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"12345")), Push::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"1")), Push::Overflow);
        assert_eq!(outbox.push(Bytes::from_static(b"1")), Push::Closed);
        let s = outbox.state.lock();
        assert_eq!(s.queue.len(), 1);
        assert_eq!(&s.queue[0][2..4], &1013u16.to_be_bytes());
    }

    #[test]
    fn close_keeps_queued_frames_unless_told() {
        let outbox = Outbox::new(100);
        outbox.push(Bytes::from_static(b"a"));
        assert!(outbox.close(1012, "restart", false));
        assert!(!outbox.close(1012, "restart", false));
        assert_eq!(outbox.state.lock().queue.len(), 2);
        assert!(!outbox.is_open());
    }
}
