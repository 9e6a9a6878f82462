//! One actor per live channel: its members, presence and audiences. Every outgoing
//! frame is encoded once here and the same bytes are pushed to each recipient's outbox.

use super::connection::{ConnectionActor, SlowConsumer};
use super::registry::{ChannelIdle, RegistryActor};
use crate::auth::Identity;
use crate::cluster::{Audience, Broadcast, ChannelKey, Engine, HistoryEntry, Published};
use crate::config::ChannelRule;
use crate::outbox::{Outbox, Push};
use crate::protocol::{self, JoinRequest, SharedJson};
use crate::rules::{self, Denied, EventTarget};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;

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

    /// Hand a broadcast to the engine; deliver now when it says so.
    fn publish(&mut self, msg: Broadcast, ctx: &mut Context<Self>) {
        let mut fut = self.engine.publish(&self.key, msg);
        match (&mut fut).now_or_never() {
            Some(result) => self.published(result, ctx),
            None => {
                ctx.wait(
                    fut.into_actor(self)
                        .map(|result, act, ctx| act.published(result, ctx)),
                );
            }
        }
    }

    fn published(
        &mut self,
        result: Result<Published, crate::cluster::EngineError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(Published::Local(msg)) => self.deliver(&msg, ctx),
            Ok(Published::Remote) => {}
            Err(e) => tracing::warn!(channel = %self.key.channel, error = %e, "publish failed"),
        }
    }

    /// Push one encoded frame to every local member in the audience.
    pub fn deliver(&mut self, msg: &Broadcast, ctx: &mut Context<Self>) {
        let frame = protocol::text_frame(&msg.json);
        let mut dropped = Vec::new();
        let mut push = |id: &Arc<str>, m: &Member| match m.outbox.push(frame.clone()) {
            Push::Queued => {}
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
            Audience::Socket(target) => {
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
            Audience::User(target) => {
                for (id, m) in &self.members {
                    if rules::event_reaches(Some(target), &m.identity) {
                        push(id, m);
                    }
                }
            }
        }
        for (id, overflowed) in dropped {
            if let Some(m) = self.members.get(&id) {
                if overflowed {
                    m.conn.do_send(SlowConsumer);
                }
            }
            self.remove_member(&id, ctx);
        }
    }

    /// Remove a member; others with presence get the `leave`.
    fn remove_member(&mut self, id: &Arc<str>, ctx: &mut Context<Self>) -> bool {
        let Some(member) = self.members.remove(id) else {
            return false;
        };
        if member.presence && self.presence_on() {
            let msg = Broadcast {
                json: protocol::presence_update_json(self.channel(), false, &member.client),
                audience: Audience::Presence { except: id.clone() },
                history_cap: 0,
                sender: None,
            };
            self.publish(msg, ctx);
        }
        if self.members.is_empty() {
            self.registry.do_send(ChannelIdle {
                channel: self.key.channel.clone(),
                joins_seen: self.joins_seen,
            });
        }
        true
    }

    fn send_error(&self, member: &Member, denied: Denied) {
        member.outbox.push(protocol::error_frame(
            Some(self.channel()),
            &denied.to_string(),
        ));
    }

    fn presence_full(&self) -> protocol::Frame {
        protocol::presence_full_frame(
            self.channel(),
            self.members
                .values()
                .filter(|m| m.presence)
                .map(|m| m.client.as_ref()),
        )
    }

    /// The join ack (with history when asked for and kept), then `presence_full`.
    fn acknowledge_join(&mut self, id: Arc<str>, request: JoinRequest, ctx: &mut Context<Self>) {
        let wants_history = request.history && self.rule.settings.message_history > 0;
        let send_presence = request.presence && self.presence_on();
        let finish = move |act: &mut Self, history: Vec<HistoryEntry>| {
            let Some(member) = act.members.get(&id) else {
                return;
            };
            let authenticated = member.identity.authenticated;
            let ack = protocol::history_frame(
                "join",
                act.channel(),
                Some(&member.client),
                history
                    .iter()
                    .filter(|e| rules::reaches(e.authenticated_only, authenticated))
                    .map(|e| e.json.as_ref()),
            );
            member.outbox.push(ack);
            if send_presence {
                member.outbox.push(act.presence_full());
            }
        };
        if !wants_history {
            finish(self, Vec::new());
            return;
        }
        let mut fut = self.engine.history(&self.key);
        match (&mut fut).now_or_never() {
            Some(result) => finish(self, result.unwrap_or_default()),
            None => {
                ctx.wait(
                    fut.into_actor(self)
                        .map(move |result, act, _| finish(act, result.unwrap_or_default())),
                );
            }
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub member: Member,
    pub request: JoinRequest,
}

impl Handler<Join> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        self.joins_seen += 1;
        let id: Arc<str> = Arc::from(msg.member.identity.socket_id.as_str());
        let wants_presence = msg.request.presence && self.presence_on();
        if let Some(existing) = self.members.get_mut(&id) {
            // Idempotent: the SDK joins twice. Re-ack, no new entry, no broadcast.
            existing.presence |= wants_presence;
        } else {
            let mut member = msg.member;
            member.presence = wants_presence;
            let client = member.client.clone();
            self.members.insert(id.clone(), member);
            if wants_presence {
                let update = Broadcast {
                    json: protocol::presence_update_json(self.channel(), true, &client),
                    audience: Audience::Presence { except: id.clone() },
                    history_cap: 0,
                    sender: None,
                };
                self.publish(update, ctx);
            }
        }
        self.acknowledge_join(id, msg.request, ctx);
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

/// A client message that passed the sender-side checks, rate limit and trigger.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientMessage {
    pub sender: Arc<str>,
    pub payload: Box<RawValue>,
    pub requested_authenticated: bool,
    pub target: Option<String>,
}

impl Handler<ClientMessage> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: ClientMessage, ctx: &mut Context<Self>) {
        let Some(sender) = self.members.get(&msg.sender).cloned() else {
            return; // it left (or was dropped) while the message was on its way
        };
        let broadcast = match &msg.target {
            None => {
                match rules::check_public_message(
                    &self.rule,
                    &sender.identity,
                    msg.requested_authenticated,
                ) {
                    Ok(authenticated_only) => Broadcast {
                        json: protocol::message_json(
                            self.channel(),
                            authenticated_only,
                            None,
                            &sender.client,
                            &msg.payload,
                        ),
                        audience: Audience::Members { authenticated_only },
                        history_cap: self.rule.settings.message_history,
                        sender: Some(sender.client.clone()),
                    },
                    Err(denied) => return self.send_error(&sender, denied),
                }
            }
            Some(target) => {
                let target_member = self.members.get(target.as_str());
                let target_auth = target_member.map(|m| m.identity.authenticated);
                if let Err(denied) =
                    rules::check_direct_message(&self.rule, &sender.identity, target_auth)
                {
                    return self.send_error(&sender, denied);
                }
                Broadcast {
                    json: protocol::message_json(
                        self.channel(),
                        msg.requested_authenticated,
                        Some(target),
                        &sender.client,
                        &msg.payload,
                    ),
                    audience: Audience::Socket(Arc::from(target.as_str())),
                    history_cap: 0,
                    sender: Some(sender.client.clone()),
                }
            }
        };
        self.publish(broadcast, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct HistoryRequest {
    pub socket_id: Arc<str>,
}

impl Handler<HistoryRequest> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: HistoryRequest, ctx: &mut Context<Self>) {
        let reply = move |act: &mut Self, history: Vec<HistoryEntry>| {
            let Some(member) = act.members.get(&msg.socket_id) else {
                return;
            };
            let authenticated = member.identity.authenticated;
            member.outbox.push(protocol::history_frame(
                "history",
                act.channel(),
                None,
                history
                    .iter()
                    .filter(|e| rules::reaches(e.authenticated_only, authenticated))
                    .map(|e| e.json.as_ref()),
            ));
        };
        if self.rule.settings.message_history == 0 {
            return reply(self, Vec::new());
        }
        let mut fut = self.engine.history(&self.key);
        match (&mut fut).now_or_never() {
            Some(result) => reply(self, result.unwrap_or_default()),
            None => {
                ctx.wait(
                    fut.into_actor(self)
                        .map(move |result, act, _| reply(act, result.unwrap_or_default())),
                );
            }
        }
    }
}

/// A backend event for this channel.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Event {
    pub json: Bytes,
    pub target: Option<EventTarget>,
}

impl Handler<Event> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Event, ctx: &mut Context<Self>) {
        let history_cap = if self.rule.history_events {
            self.rule.settings.message_history
        } else {
            0
        };
        let audience = match msg.target {
            Some(t) => Audience::User(t),
            None => Audience::Members {
                authenticated_only: false,
            },
        };
        self.publish(
            Broadcast {
                json: msg.json,
                audience,
                history_cap,
                sender: None,
            },
            ctx,
        );
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

/// A broadcast that came back from the bus (cluster engines).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Broadcast);

impl Handler<Deliver> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        self.deliver(&msg.0, ctx);
    }
}
