//! The engine: the only part of the broker that knows whether there is one node or
//! many. Channel actors hand every broadcast to the engine; the in-memory engine
//! hands it straight back for local delivery, a cluster engine sends it through
//! Redis and delivers what comes back on every node.

mod memory;

pub use memory::MemoryEngine;

use crate::protocol::SharedJson;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// A concrete channel of one app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChannelKey {
    pub app: Arc<str>,
    pub channel: Arc<str>,
}

impl ChannelKey {
    pub fn new(app: &str, channel: &str) -> Self {
        Self {
            app: Arc::from(app),
            channel: Arc::from(channel),
        }
    }
}

/// Who in a channel receives a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every member; only authenticated ones when `authenticated_only`.
    Members { authenticated_only: bool },
    /// One socket (a direct message).
    Socket(Arc<str>),
    /// Members that asked for presence, except the socket the update is about.
    Presence { except: Arc<str> },
    /// Members authenticated as one user (an event with `auth_id`).
    User(crate::rules::EventTarget),
}

/// One frame for a channel, encoded once (JSON text), with its audience.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub json: Bytes,
    pub audience: Audience,
    /// Keep it in the channel's history, capped at this many entries (0: don't).
    pub history_cap: usize,
    /// The sender, told `Service unavailable` when the engine cannot take it.
    pub sender: Option<SharedJson>,
}

/// A stored message as history returns it.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub json: Bytes,
    /// Only authenticated sockets may see it (PROTOCOL.md section 3, history).
    pub authenticated_only: bool,
}

/// What became of a published broadcast.
#[derive(Debug)]
pub enum Published {
    /// Deliver it to the local members now (one node).
    Local(Broadcast),
    /// It will come back from the bus and be delivered then (cluster).
    Remote,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

pub trait Engine: Send + Sync + 'static {
    /// Hand a broadcast to every node; history is appended in the same step.
    fn publish(
        &self,
        key: &ChannelKey,
        msg: Broadcast,
    ) -> BoxFuture<'static, Result<Published, EngineError>>;

    /// The channel's stored messages, oldest first.
    fn history(
        &self,
        key: &ChannelKey,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, EngineError>>;

    /// Whether the engine can take traffic (for `/readyz`).
    fn ready(&self) -> bool;
}
