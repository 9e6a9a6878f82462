//! One actor per live channel on this node: its local members and audiences. Every
//! outgoing frame is encoded once here and the same bytes are pushed to each local
//! recipient's outbox. What other nodes must see goes through the engine.

use super::connection::{ConnectionActor, SlowConsumer, Unjoined};
use super::registry::{ChannelIdle, RegistryActor};
use crate::auth::Identity;
use crate::cluster::{
    Audience, Broadcast, ChannelKey, Deliver, Engine, EngineError, HistoryEntry, MemberRecord,
    Published,
};
use crate::config::ChannelRule;
use crate::outbox::{Outbox, Push};
use crate::protocol::{self, JoinRequest, SharedJson};
use crate::rules::{self, Denied};
use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

mod messages;
pub use messages::{ClientMessage, HistoryRequest};

/// A socket in a channel, as the channel sees it.
#[derive(Clone)]
pub struct Member {
    pub identity: Arc<Identity>,
    pub client: SharedJson,
    pub outbox: Arc<Outbox>,
    pub conn: Addr<ConnectionActor>,
    pub presence: bool,
}

pub struct ChannelActor {
    key: ChannelKey,
    rule: Arc<ChannelRule>,
    members: HashMap<Arc<str>, Member>,
    /// Joins received, reported with `ChannelIdle` so the registry can tell whether a
    /// join is still on its way here.
    joins_seen: u64,
    registry: Addr<RegistryActor>,
    engine: Arc<dyn Engine>,
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Subscribe before the first join is handled, so nothing published after the
        // join ack can be missed on this node.
        let fut = self
            .engine
            .subscribe(&self.key, ctx.address().recipient::<Deliver>());
        self.run(ctx, fut, |act, result, _| {
            if let Err(e) = result {
                tracing::warn!(channel = %act.key.channel, error = %e, "subscribe failed; retried on reconnect");
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.engine
            .unsubscribe(&self.key, ctx.address().recipient::<Deliver>());
    }
}

impl ChannelActor {
    pub fn new(
        key: ChannelKey,
        rule: Arc<ChannelRule>,
        registry: Addr<RegistryActor>,
        engine: Arc<dyn Engine>,
    ) -> Self {
        Self {
            key,
            rule,
            members: HashMap::new(),
            joins_seen: 0,
            registry,
            engine,
        }
    }

    fn channel(&self) -> &str {
        &self.key.channel
    }

    fn presence_on(&self) -> bool {
        self.rule.settings.presence
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

    /// Hand a broadcast to the engine; deliver now when it says so.
    fn publish(&mut self, msg: Broadcast, ctx: &mut Context<Self>) {
        let origin = msg.origin.clone();
        let fut = self.engine.publish(&self.key, msg);
        self.run(ctx, fut, move |act, result, ctx| match result {
            Ok(Published::Local(msg)) => act.deliver(&msg, ctx),
            Ok(Published::Remote) => {}
            Err(e) => {
                tracing::warn!(channel = %act.key.channel, error = %e, "publish refused");
                if let Some(m) = origin.and_then(|id| act.members.get(&id)) {
                    act.send_error(m, Denied::Unavailable);
                }
            }
        });
    }

    /// Push one encoded frame to every local member in the audience.
    pub fn deliver(&mut self, msg: &Broadcast, ctx: &mut Context<Self>) {
        let frame = protocol::text_frame(&msg.json);
        let mut dropped = Vec::new();
        let mut queued = 0u64;
        let mut push = |id: &Arc<str>, m: &Member| match m.outbox.push(frame.clone()) {
            Push::Queued => queued += 1,
            Push::Overflow => dropped.push((id.clone(), true)),
            Push::Closed => dropped.push((id.clone(), false)),
        };
        match &msg.audience {
            Audience::Members { authenticated_only } => {
                for (id, m) in &self.members {
                    if rules::reaches(*authenticated_only, m.identity.authenticated) {
                        push(id, m);
                    }
                }
            }
            Audience::Socket { id: target } => {
                if let Some((id, m)) = self.members.get_key_value(target) {
                    push(id, m);
                }
            }
            Audience::Presence { except } => {
                for (id, m) in &self.members {
                    if m.presence && id != except {
                        push(id, m);
                    }
                }
            }
            Audience::User { row_id, dbo_id } => {
                let target = rules::EventTarget {
                    row_id: row_id.clone(),
                    dbo_id: *dbo_id,
                };
                for (id, m) in &self.members {
                    if rules::event_reaches(Some(&target), &m.identity) {
                        push(id, m);
                    }
                }
            }
        }
        crate::metrics::delivered(queued);
        for (id, overflowed) in dropped {
            if overflowed {
                crate::metrics::dropped("slow_consumer");
                if let Some(m) = self.members.get(&id) {
                    m.conn.do_send(SlowConsumer);
                }
            }
            self.remove_member(&id, ctx);
        }
    }

    fn presence_update(&self, joined: bool, member: &Member, id: &Arc<str>) -> Broadcast {
        Broadcast {
            json: protocol::presence_update_json(self.channel(), joined, &member.client),
            audience: Audience::Presence { except: id.clone() },
            history_cap: 0,
            origin: None,
        }
    }

    /// Remove a member; others with presence (on every node) get the `leave`.
    fn remove_member(&mut self, id: &Arc<str>, ctx: &mut Context<Self>) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        // Held in order with this channel's other engine work, and finished before
        // the actor may stop, so the other nodes always hear of the leave.
        let engine = self.engine.clone();
        let key = self.key.clone();
        let forget = engine
            .clustered()
            .then(|| engine.member_left(&key, id.clone()));
        let update = member
            .presence
            .then(|| self.presence_update(false, &member, id));
        let fut: BoxFuture<'static, Result<Option<Published>, EngineError>> =
            Box::pin(async move {
                if let Some(f) = forget {
                    f.await?;
                }
                match update {
                    Some(u) => Ok(Some(engine.publish(&key, u).await?)),
                    None => Ok(None),
                }
            });
        self.run(ctx, fut, |act, result, ctx| match result {
            Ok(Some(Published::Local(update))) => act.deliver(&update, ctx),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(channel = %act.key.channel, error = %e, "leave not announced")
            }
        });
        if self.members.is_empty() {
            self.registry.do_send(ChannelIdle {
                channel: self.key.channel.clone(),
                joins_seen: self.joins_seen,
            });
        }
        true
    }

    fn send_error(&self, member: &Member, denied: Denied) {
        let text = denied.to_string();
        crate::metrics::error_sent(&text);
        member
            .outbox
            .push(protocol::error_frame(Some(self.channel()), &text));
    }

    fn local_presence(&self) -> Vec<SharedJson> {
        self.members
            .values()
            .filter(|m| m.presence)
            .map(|m| m.client.clone())
            .collect()
    }

    /// Everything a join needs from the engine, in order: record the member, announce
    /// it, read history and presence.
    fn join_effects(
        &self,
        member: Option<MemberRecord>,
        announce: Option<Broadcast>,
        wants_history: bool,
        wants_presence: bool,
    ) -> BoxFuture<'static, Result<JoinEffects, EngineError>> {
        let engine = self.engine.clone();
        let key = self.key.clone();
        let clustered = engine.clustered();
        Box::pin(async move {
            if let (true, Some(m)) = (clustered, member) {
                engine.member_joined(&key, m).await?;
            }
            let announced = match announce {
                Some(b) => Some(engine.publish(&key, b).await?),
                None => None,
            };
            let history = if wants_history {
                engine.history(&key).await?
            } else {
                Vec::new()
            };
            let presence = if wants_presence && clustered {
                Some(engine.presence(&key).await?)
            } else {
                None
            };
            Ok(JoinEffects {
                announced,
                history,
                presence,
            })
        })
    }
}

struct JoinEffects {
    announced: Option<Published>,
    history: Vec<HistoryEntry>,
    /// Presence across the cluster; `None` when this node's members are all there is.
    presence: Option<Vec<SharedJson>>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub member: Member,
    pub request: JoinRequest,
    /// Forwarded by the registry (counted for the channel's lifecycle); a repeated
    /// join comes straight from the member's connection.
    pub via_registry: bool,
}

impl Handler<Join> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if msg.via_registry {
            self.joins_seen += 1;
        }
        let id: Arc<str> = Arc::from(msg.member.identity.socket_id.as_str());
        let wants_presence = msg.request.presence && self.presence_on();
        let wants_history = msg.request.history && self.rule.settings.message_history > 0;
        let (record, announce) = if self.members.contains_key(&id) {
            // Idempotent: the SDK joins twice. Re-ack (and presence_full when asked),
            // but no new presence entry and no broadcast.
            (None, None)
        } else {
            crate::metrics::joined();
            let mut member = msg.member;
            member.presence = wants_presence;
            let record = MemberRecord {
                socket_id: id.clone(),
                presence: wants_presence,
                authenticated: member.identity.authenticated,
                client: member.client.clone(),
            };
            let announce = wants_presence.then(|| self.presence_update(true, &member, &id));
            self.members.insert(id.clone(), member);
            (Some(record), announce)
        };
        let fut = self.join_effects(record, announce, wants_history, wants_presence);
        self.run(ctx, fut, move |act, result, ctx| {
            let effects = match result {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(channel = %act.key.channel, error = %e, "join failed");
                    if let Some(m) = act.members.get(&id).cloned() {
                        act.send_error(&m, Denied::Unavailable);
                        m.conn.do_send(Unjoined {
                            channel: act.key.channel.to_string(),
                        });
                        act.members.remove(&id);
                        if act.members.is_empty() {
                            act.registry.do_send(ChannelIdle {
                                channel: act.key.channel.clone(),
                                joins_seen: act.joins_seen,
                            });
                        }
                    }
                    return;
                }
            };
            if let Some(Published::Local(update)) = &effects.announced {
                act.deliver(update, ctx);
            }
            let Some(member) = act.members.get(&id) else {
                return;
            };
            let authenticated = member.identity.authenticated;
            member.outbox.push(protocol::history_frame(
                "join",
                act.channel(),
                Some(&member.client),
                effects
                    .history
                    .iter()
                    .filter(|e| rules::reaches(e.authenticated_only, authenticated))
                    .map(|e| e.json.as_ref()),
            ));
            if wants_presence {
                let list = effects.presence.unwrap_or_else(|| act.local_presence());
                member.outbox.push(protocol::presence_full_frame(
                    act.channel(),
                    list.iter().map(|c| c.as_ref()),
                ));
            }
        });
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
        for id in revoked {
            if let Some(m) = self.members.get(&id).cloned() {
                self.send_error(&m, Denied::AccessRevoked);
                m.outbox.push(protocol::leave_frame(&channel));
                m.conn.do_send(Unjoined {
                    channel: channel.to_string(),
                });
            }
            self.remove_member(&id, ctx);
        }
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
            ctx.stop();
        }
    }
}

/// A broadcast to deliver to local members: from the bus (cluster) or a local event.
impl Handler<Deliver> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.deliver(&msg.0, ctx);
    }
}
