//! The small messages an actor sends back to the actor that owns it. They live
//! apart from the actors so that an owned actor holds a `Recipient` of one of
//! these, never its owner's type: channels do not import connections or the
//! registry, and the modules form no cycle (docs/architecture.md).

use actix::Message;
use std::sync::Arc;

/// From a channel to a member's connection.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum MemberNotice {
    /// The socket's send queue overflowed; it is closing with 1013.
    SlowConsumer,
    /// The join did not take effect, or the member was taken out of the channel.
    Unjoined { channel: Arc<str> },
}

/// From a channel to its registry: it has no member left.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChannelIdle {
    pub channel: Arc<str>,
    /// Joins the channel received; the registry compares it with the joins it sent
    /// to know whether one is still on its way.
    pub joins_seen: u64,
}

/// To a connection: close the socket with a code (drain on shutdown: 1012).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct CloseSocket {
    pub code: u16,
    pub reason: &'static str,
}
