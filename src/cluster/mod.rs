//! The engine: the only part of the broker that knows whether there is one node or
//! many. Channel actors hand every broadcast to the engine; the in-memory engine
//! hands it straight back for local delivery, the Redis engine sends it through
//! Redis and every node (the origin too) delivers what comes back.

mod memory;
pub mod redis;

pub use memory::MemoryEngine;

use crate::protocol::SharedJson;
use crate::rules::EventTarget;
use actix::{Message, Recipient};
use bytes::Bytes;
use futures_util::future::{ready, BoxFuture};
use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Audience {
    /// Every member; only authenticated ones when `authenticated_only`.
    #[serde(rename = "m")]
    Members { authenticated_only: bool },
    /// One socket (a direct message).
    #[serde(rename = "s")]
    Socket { id: Arc<str> },
    /// Members that asked for presence, except the socket the update is about.
    #[serde(rename = "p")]
    Presence { except: Arc<str> },
    /// Members authenticated as one user (an event with `auth_id`).
    #[serde(rename = "u")]
    User { row_id: String, dbo_id: Option<i64> },
}

impl Audience {
    pub fn everyone() -> Self {
        Audience::Members {
            authenticated_only: false,
        }
    }

    pub fn user(target: EventTarget) -> Self {
        Audience::User {
            row_id: target.row_id,
            dbo_id: target.dbo_id,
        }
    }

    /// Whether a stored copy may only be shown to authenticated sockets.
    pub fn authenticated_only(&self) -> bool {
        match self {
            Audience::Members { authenticated_only } => *authenticated_only,
            Audience::User { .. } => true,
            _ => false,
        }
    }
}

/// One frame for a channel, encoded once (JSON text), with its audience.
#[derive(Debug, Clone)]
pub struct Broadcast {
    pub json: Bytes,
    pub audience: Audience,
    /// Keep it in the channel's history, capped at this many entries (0: don't).
    pub history_cap: usize,
    /// The socket that sent it, told `Service unavailable` if the engine refuses it.
    pub origin: Option<Arc<str>>,
}

/// A broadcast delivered to a channel actor by a cluster engine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Broadcast);

/// A stored message as history returns it.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub json: Bytes,
    /// Only authenticated sockets may see it (PROTOCOL.md section 3, history).
    pub authenticated_only: bool,
}

/// A channel member as the cluster sees it.
#[derive(Debug, Clone)]
pub struct MemberRecord {
    pub socket_id: Arc<str>,
    pub presence: bool,
    pub authenticated: bool,
    pub client: SharedJson,
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

pub type EngineResult<T> = BoxFuture<'static, Result<T, EngineError>>;

pub fn done<T: Send + 'static>(value: T) -> EngineResult<T> {
    Box::pin(ready(Ok(value)))
}

pub trait Engine: Send + Sync + 'static {
    /// Whether members and presence are shared across nodes; when false, channel
    /// actors answer presence and recipient questions from their own members.
    fn clustered(&self) -> bool;

    /// Hand a broadcast to every node; history is appended in the same step.
    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<Published>;

    /// The channel's stored messages, oldest first.
    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>>;

    /// Whether the engine can take traffic (for `/readyz`).
    fn ready(&self) -> bool;

    /// Receive the channel's broadcasts from the bus (cluster engines).
    fn subscribe(&self, _key: &ChannelKey, _sink: Recipient<Deliver>) -> EngineResult<()> {
        done(())
    }

    fn unsubscribe(&self, _key: &ChannelKey, _sink: Recipient<Deliver>) {}

    /// Make a member known to every node.
    fn member_joined(&self, _key: &ChannelKey, _member: MemberRecord) -> EngineResult<()> {
        done(())
    }

    fn member_left(&self, _key: &ChannelKey, _socket_id: Arc<str>) -> EngineResult<()> {
        done(())
    }

    /// Presence members on every node (cluster engines only).
    fn presence(&self, _key: &ChannelKey) -> EngineResult<Vec<SharedJson>> {
        done(Vec::new())
    }

    /// A member on any node: `Some(authenticated)` (cluster engines only).
    fn find_member(&self, _key: &ChannelKey, _socket_id: Arc<str>) -> EngineResult<Option<bool>> {
        done(None)
    }

    /// Channels of an app under a prefix that are live on any node; `None`: only
    /// this node knows (ask the registry).
    fn live_channels(&self, _app: &str, _prefix: &str) -> EngineResult<Option<Vec<String>>> {
        done(None)
    }

    /// Take a connection slot for a user across the cluster (`None`: count locally).
    fn admit_user(&self, _app: &str, _user: &str, _limit: usize) -> EngineResult<Option<bool>> {
        done(None)
    }

    fn release_user(&self, _app: &str, _user: &str) {}
}
