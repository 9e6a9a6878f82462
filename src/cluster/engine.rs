//! What every engine offers, and the values that cross it: a channel's key, a
//! broadcast with its audience, history entries, member records. `memory` and
//! `redis` implement these traits; nothing else in the broker depends on which.

use crate::protocol::SharedJson;
use crate::rules::EventTarget;
use actix::{Message, Recipient};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use super::result::{done, EngineError, EngineResult};

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
    User(EventTarget),
}

impl Audience {
    pub fn everyone() -> Self {
        Audience::Members {
            authenticated_only: false,
        }
    }

    pub fn user(target: EventTarget) -> Self {
        Audience::User(target)
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
    /// Its number, when the engine numbers broadcasts (see `Broker::watermark`).
    pub seq: Option<u64>,
}

/// A broadcast delivered to a channel actor by its subscription.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Broadcast);

/// A stored message as history returns it.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub json: Bytes,
    /// Who may see it: the audience it was published to, so a history reply shows
    /// a socket only what it could have received live (docs/protocol.md sections 3, 6).
    pub audience: Audience,
}

/// A channel member as the cluster sees it.
#[derive(Debug, Clone)]
pub struct MemberRecord {
    pub socket_id: Arc<str>,
    pub presence: bool,
    pub authenticated: bool,
    pub client: SharedJson,
}

/// Broadcasts and history of a channel.
pub trait Broker {
    /// Hand a broadcast to every subscriber of the channel, on every node; history
    /// is appended in the same step, so history order is delivery order. The
    /// broadcast's place in the channel's order is fixed by this call, not when the
    /// future is polled: a channel may publish again before the answer comes.
    fn publish(&self, key: &ChannelKey, msg: Broadcast) -> EngineResult<()>;

    /// The channel's stored messages, oldest first.
    fn history(&self, key: &ChannelKey) -> EngineResult<Vec<HistoryEntry>>;

    /// Deliver the channel's broadcasts to `sink` (one `Deliver` per broadcast) from
    /// the moment the returned future resolves.
    fn subscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>) -> EngineResult<()>;

    fn unsubscribe(&self, key: &ChannelKey, sink: Recipient<Deliver>);

    /// The number of the last broadcast published so far, for engines that deliver
    /// through a queue the channel also reads (memory): a broadcast with a number at
    /// or below the watermark taken when a socket joined was published before the
    /// join, so that socket does not receive it (its join reply has the history).
    /// Engines that do not number broadcasts answer 0.
    fn watermark(&self) -> u64;

    /// Forget the channel's stored messages, for every node (server API).
    fn clear_history(&self, key: &ChannelKey) -> EngineResult<()>;
}

/// Who is in a channel, on every node.
pub trait Membership {
    /// Make a member known to every node. With webhooks on for its app, the engine
    /// queues `member_added` (after `channel_occupied` for the first member anywhere).
    fn member_joined(&self, key: &ChannelKey, member: MemberRecord) -> EngineResult<()>;

    /// With webhooks on, queues `member_removed` (then `channel_vacated` for the
    /// last member anywhere).
    fn member_left(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<()>;

    /// The `client` objects of members that asked for presence, on every node.
    fn presence(&self, key: &ChannelKey) -> EngineResult<Vec<SharedJson>>;

    /// A member on any node: `Some(authenticated)`, `None` when it is not in the channel.
    fn find_member(&self, key: &ChannelKey, socket_id: Arc<str>) -> EngineResult<Option<bool>>;

    /// Channels of an app under a prefix (longer than it) that are live on any node.
    fn live_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<String>>;

    /// Every member of a channel, on every node (server API).
    fn members(&self, key: &ChannelKey) -> EngineResult<Vec<MemberRecord>>;

    /// Channels of an app starting with `prefix` that have at least one member on
    /// any node, with their member counts, in no particular order (server API).
    fn occupied_channels(&self, app: &str, prefix: &str) -> EngineResult<Vec<(String, usize)>>;
}

/// Per-user connection slots, counted across every node.
pub trait UserSlots {
    /// Take a slot for a user unless `limit` are taken; answers whether it was.
    fn admit_user(&self, app: &str, user: &str, limit: usize) -> EngineResult<bool>;

    fn release_user(&self, app: &str, user: &str);
}

/// Handles a backend event envelope that arrived through the engine (`durable`:
/// from the durable stream, publish it cluster-wide; else deliver it to this node's
/// members). Answers whether it is done (false: retry later).
pub type EventSink = Arc<dyn Fn(Bytes, bool) -> BoxFuture<'static, bool> + Send + Sync>;

/// Which sockets of an app a backend's command is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketTarget {
    Socket(String),
    /// Every socket authenticated as this user (`auth_id`, optionally `auth_table`).
    User(EventTarget),
}

impl SocketTarget {
    /// Whether the socket of `identity` is one of the target's.
    pub fn names(&self, identity: &crate::auth::Identity) -> bool {
        match self {
            SocketTarget::Socket(id) => identity.socket_id == *id,
            SocketTarget::User(user) => crate::rules::event_reaches(Some(user), identity),
        }
    }
}

/// What a backend asks of sockets wherever they are (docs/protocol.md section 10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketCommand {
    /// Close the sockets: 4401, or 4000 with `reconnect`.
    Disconnect {
        app: String,
        target: SocketTarget,
        reconnect: bool,
    },
    /// Take the sockets out of one channel (`Channel access revoked`, then `leave`).
    Unsubscribe {
        app: String,
        channel: String,
        target: SocketTarget,
    },
}

/// Runs a command on this node's sockets; answers how many it reached.
pub type CommandSink = Arc<dyn Fn(SocketCommand) -> BoxFuture<'static, usize> + Send + Sync>;

/// Commands for the sockets of every node.
pub trait Control {
    /// Run `command` on every node (this one too), each through its command sink;
    /// answers the number of sockets reached in all. Nodes that do not answer
    /// within a second are counted as zero.
    fn command(&self, command: SocketCommand) -> EngineResult<usize>;

    /// Where this node runs the commands that reach it.
    fn set_command_sink(&self, sink: CommandSink);
}

pub trait Engine:
    Broker + Membership + UserSlots + Control + super::lifecycle::Webhooks + Send + Sync + 'static
{
    /// Whether the engine can take traffic (for `/readyz`).
    fn ready(&self) -> bool;

    /// Where backend events published into the engine itself go (Redis: the
    /// `publish` topic and stream). Engines without such a path ignore it.
    fn set_event_sink(&self, _sink: EventSink) {}
}
