//! One actor per live channel on this node, and the only writer of its channel:
//! client messages, backend events and presence updates all leave through
//! `ChannelActor::publish`, and every broadcast the engine's subscription brings
//! back is delivered by `ChannelActor::deliver`, which encodes nothing: the frame
//! was encoded once and the same bytes go to every local recipient's outbox.
//! Same order in history and live, on one node or many (docs/architecture.md).

use super::notices::{ChannelIdle, MemberNotice};
use crate::auth::Identity;
use crate::cluster::{
    Audience, Broadcast, ChannelKey, Deliver, Engine, EngineError, HistoryEntry, SocketTarget,
};
use crate::config::{ChannelRule, Limits};
use crate::outbox::{Outbox, Push};
use crate::protocol::{self, SharedJson};
use crate::rules::{self, Denied};
use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;

mod join;
mod messages;
pub use join::Join;
pub use messages::{Addressed, ChannelEvent, ClientMessage, HistoryRequest};

/// What a channel needs of `limits`.
#[derive(Debug, Clone, Copy)]
pub struct ChannelLimits {
    /// The largest reply (join ack, history, presence_full) in JSON bytes.
    pub reply_bytes: usize,
    /// A larger frame is delivered live but not stored.
    pub history_entry_bytes: usize,
}

impl ChannelLimits {
    pub fn of(limits: &Limits) -> ChannelLimits {
        ChannelLimits {
            reply_bytes: limits.reply_budget(),
            history_entry_bytes: limits.max_history_entry_bytes,
        }
    }
}

/// A socket in a channel, as the channel sees it.
#[derive(Clone)]
pub struct Member {
    pub identity: Arc<Identity>,
    pub client: SharedJson,
    pub outbox: Arc<Outbox>,
    pub conn: Recipient<MemberNotice>,
    pub presence: bool,
    /// The engine's watermark when it joined: broadcasts numbered at or below it
    /// were published before the join (see `Broker::watermark`).
    pub joined_after: u64,
}

pub struct ChannelActor {
    key: ChannelKey,
    rule: Arc<ChannelRule>,
    members: HashMap<Arc<str>, Member>,
    /// Joins received, reported with `ChannelIdle` so the registry can tell whether a
    /// join is still on its way here.
    joins_seen: u64,
    registry: Recipient<ChannelIdle>,
    engine: Arc<dyn Engine>,
    /// Whether this actor receives the channel's broadcasts: from its first join on.
    /// An actor started for a backend event alone publishes and stops.
    subscribed: bool,
    limits: ChannelLimits,
    /// This channel's previous actor on this node, still stopping: nothing here
    /// runs before it finished (see `RegistryActor::live`).
    predecessor: Option<Addr<ChannelActor>>,
    /// Publishes the engine has not answered yet; the actor stops only after them.
    publishing: usize,
    stop_when_published: bool,
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(before) = self.predecessor.take() {
            // Answered once its mailbox, held by its pending engine work, gets here;
            // an error means it has stopped: either way it is done.
            ctx.wait(
                async move {
                    let _ = before.send(Snapshot).await;
                }
                .into_actor(self),
            );
        }
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if self.subscribed {
            self.engine
                .unsubscribe(&self.key, ctx.address().recipient::<Deliver>());
        }
    }
}

impl ChannelActor {
    pub fn new(
        key: ChannelKey,
        rule: Arc<ChannelRule>,
        registry: Recipient<ChannelIdle>,
        engine: Arc<dyn Engine>,
        limits: ChannelLimits,
    ) -> Self {
        Self {
            key,
            rule,
            members: HashMap::new(),
            joins_seen: 0,
            registry,
            engine,
            subscribed: false,
            limits,
            predecessor: None,
            publishing: 0,
            stop_when_published: false,
        }
    }

    /// Start only after `predecessor` (this channel's previous actor) has finished.
    pub fn after(mut self, predecessor: Option<Addr<ChannelActor>>) -> Self {
        self.predecessor = predecessor;
        self
    }

    fn channel(&self) -> &str {
        &self.key.channel
    }

    /// Finish `fut` at once when it is ready (the in-memory engine), else hold this
    /// channel's mailbox until it is, so that frames keep their order.
    fn run<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        mut fut: BoxFuture<'static, T>,
        then: impl FnOnce(&mut Self, T, &mut Context<Self>) + 'static,
    ) {
        match (&mut fut).now_or_never() {
            Some(value) => then(self, value, ctx),
            None => {
                ctx.wait(
                    fut.into_actor(self)
                        .map(move |value, act, ctx| then(act, value, ctx)),
                );
            }
        }
    }

    /// Hand a broadcast to the engine; it comes back through the subscription.
    /// `then` runs once the engine took it (or refused it: the sender is told).
    fn publish(
        &mut self,
        msg: Broadcast,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, Result<(), EngineError>, &mut Context<Self>) + 'static,
    ) {
        let origin = msg.origin.clone();
        let mut fut = self.engine.publish(&self.key, msg);
        let answered =
            move |act: &mut Self, result: Result<(), EngineError>, ctx: &mut Context<Self>| {
                if let Err(e) = &result {
                    tracing::warn!(channel = %act.key.channel, error = %e, "publish refused");
                    if let Some(m) = origin.and_then(|id| act.members.get(&id)) {
                        act.send_error(m, Denied::Unavailable);
                    }
                }
                then(act, result, ctx)
            };
        if let Some(result) = (&mut fut).now_or_never() {
            return answered(self, result, ctx);
        }
        // The engine fixed the broadcast's place in the channel's order when it was
        // called: the mailbox need not wait for the answer (a busy channel pipelines).
        self.publishing += 1;
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.publishing -= 1;
            answered(act, result, ctx);
            if act.stop_when_published && act.publishing == 0 {
                ctx.stop();
            }
        }));
    }

    /// Push one encoded frame to every local member in the audience.
    fn deliver(&mut self, msg: &Broadcast, ctx: &mut Context<Self>) {
        let frame = protocol::text_frame(&msg.json);
        let mut dropped = Vec::new();
        let mut queued = 0u64;
        let seq = msg.seq.unwrap_or(u64::MAX);
        let mut push = |id: &Arc<str>, m: &Member| {
            if seq <= m.joined_after {
                return; // published before this member joined
            }
            match m.outbox.push(frame.clone()) {
                Push::Queued => queued += 1,
                Push::Overflow => dropped.push((id.clone(), true)),
                Push::Closed => dropped.push((id.clone(), false)),
            }
        };
        match &msg.audience {
            // One recipient: look it up rather than walk the members.
            Audience::Socket { id: target } => {
                if let Some((id, m)) = self.members.get_key_value(target) {
                    push(id, m);
                }
            }
            audience => {
                for (id, m) in &self.members {
                    if in_audience(audience, id, m) {
                        push(id, m);
                    }
                }
            }
        }
        crate::metrics::delivered(queued);
        for (id, overflowed) in dropped {
            if overflowed {
                self.drop_slow_consumer(&id, ctx);
            } else {
                self.remove_member(&id, ctx);
            }
        }
    }

    /// A member whose queue overflowed, whatever pushed last (a broadcast, an ack, a
    /// history reply, an error): out of this channel now, and its connection closes
    /// with 1013, which takes it out of every other channel (docs/protocol.md section 9).
    fn drop_slow_consumer(&mut self, id: &Arc<str>, ctx: &mut Context<Self>) {
        crate::metrics::dropped("slow_consumer");
        if let Some(m) = self.members.get(id) {
            m.conn.do_send(MemberNotice::SlowConsumer);
        }
        self.remove_member(id, ctx);
    }

    /// After pushing a reply to a member: drop it if that overflowed its queue.
    fn check_overflow(&mut self, id: &Arc<str>, ctx: &mut Context<Self>) {
        if self.members.get(id).is_some_and(|m| m.outbox.overflowed()) {
            self.drop_slow_consumer(id, ctx);
        }
    }

    /// The stored entries a member may see: those it could have received live.
    fn visible_history<'a>(
        &self,
        id: &'a str,
        member: &'a Member,
        entries: &'a [HistoryEntry],
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        entries
            .iter()
            .filter(move |e| in_audience(&e.audience, id, member))
            .map(|e| e.json.as_ref())
    }

    fn presence_update(&self, joined: bool, member: &Member, id: &Arc<str>) -> Broadcast {
        Broadcast {
            json: protocol::presence_update_json(self.channel(), joined, &member.client),
            audience: Audience::Presence { except: id.clone() },
            history_cap: 0,
            origin: None,
            seq: None,
        }
    }

    /// Remove a member; others with presence (on every node) get the `leave`.
    fn remove_member(&mut self, id: &Arc<str>, ctx: &mut Context<Self>) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        // Held in order with this channel's other engine work, and finished before
        // the actor may stop, so the other nodes always hear of the leave.
        let forget = self.engine.member_left(&self.key, id.clone());
        let update = member
            .presence
            .then(|| self.presence_update(false, &member, id));
        let (engine, key) = (self.engine.clone(), self.key.clone());
        let fut: BoxFuture<'static, Result<(), EngineError>> = Box::pin(async move {
            forget.await?;
            match update {
                Some(u) => engine.publish(&key, u).await,
                None => Ok(()),
            }
        });
        self.run(ctx, fut, |act, result, _| {
            if let Err(e) = result {
                tracing::warn!(channel = %act.key.channel, error = %e, "leave not announced");
            }
        });
        self.report_if_idle();
        true
    }

    /// Tell the registry when no member is left (it decides whether to stop us).
    fn report_if_idle(&self) {
        if self.members.is_empty() {
            self.registry.do_send(ChannelIdle {
                channel: self.key.channel.clone(),
                joins_seen: self.joins_seen,
            });
        }
    }

    fn send_error(&self, member: &Member, denied: Denied) {
        let text = denied.to_string();
        crate::metrics::error_sent(&text);
        member
            .outbox
            .push(protocol::error_frame(Some(self.channel()), &text));
    }
}

/// Whether a member is in an audience: `deliver` asks it of each member for a
/// broadcast, history replies of each stored entry, so live and stored agree.
fn in_audience(audience: &Audience, id: &str, m: &Member) -> bool {
    match audience {
        Audience::Members { authenticated_only } => {
            rules::reaches(*authenticated_only, m.identity.authenticated)
        }
        Audience::Socket { id: target } => **target == *id,
        Audience::Presence { except } => m.presence && **except != *id,
        Audience::User(target) => rules::event_reaches(Some(target), &m.identity),
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub socket_id: Arc<str>,
}

impl Handler<Leave> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.remove_member(&msg.socket_id, ctx);
    }
}

/// After a reload: the channel's rule now (None: no rule covers it any more). Members
/// the rule no longer admits get `Channel access revoked`, then a `leave`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateRule(pub Option<Arc<ChannelRule>>);

impl Handler<UpdateRule> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateRule, ctx: &mut Context<Self>) {
        if let Some(rule) = &msg.0 {
            self.rule = rule.clone();
        }
        let channel = self.key.channel.clone();
        let revoked: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(_, m)| match &msg.0 {
                None => true,
                Some(rule) => rules::check_join(rule, &m.identity, &channel).is_err(),
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.revoke(revoked, ctx);
    }
}

impl ChannelActor {
    /// Take members out: each gets `Channel access revoked`, then a `leave`; the
    /// others with presence get the `leave` (docs/protocol.md sections 3, 10).
    fn revoke(&mut self, ids: Vec<Arc<str>>, ctx: &mut Context<Self>) -> usize {
        let channel = self.key.channel.clone();
        let mut revoked = 0;
        for id in ids {
            if let Some(m) = self.members.get(&id).cloned() {
                self.send_error(&m, Denied::AccessRevoked);
                m.outbox.push(protocol::leave_frame(&channel));
                m.conn.do_send(MemberNotice::Unjoined {
                    channel: channel.clone(),
                });
                revoked += 1;
            }
            self.remove_member(&id, ctx);
        }
        revoked
    }
}

/// From the server API: take the sockets of `target` out of this channel; answers
/// how many were here.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Revoke(pub SocketTarget);

impl Handler<Revoke> for ChannelActor {
    type Result = usize;

    fn handle(&mut self, msg: Revoke, ctx: &mut Context<Self>) -> usize {
        let chosen: Vec<Arc<str>> = self
            .members
            .iter()
            .filter(|(_, m)| msg.0.names(&m.identity))
            .map(|(id, _)| id.clone())
            .collect();
        self.revoke(chosen, ctx)
    }
}

/// For the admin view: (local members, local presence members).
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct Snapshot;

impl Handler<Snapshot> for ChannelActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let presence = self.members.values().filter(|m| m.presence).count();
        MessageResult((self.members.len(), presence))
    }
}

/// From the registry: no join is on its way, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        if self.members.is_empty() {
            if self.publishing == 0 {
                ctx.stop();
            } else {
                self.stop_when_published = true;
            }
        }
    }
}

/// A broadcast of this channel, from the engine's subscription.
impl Handler<Deliver> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.deliver(&msg.0, ctx);
    }
}
