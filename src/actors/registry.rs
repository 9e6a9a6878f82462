//! One registry per app: channel name -> live channel actor. It creates a channel
//! actor on the first join (or for a backend event), stops it once it is empty and
//! no join is on its way, and resolves backend events (a name, or every live
//! channel under a prefix) to the channel actors that publish them: the registry
//! never publishes itself, so each channel has one writer.

use super::channel::{
    ChannelActor, ChannelEvent, ChannelLimits, Join, Member, Revoke, Shutdown, Snapshot, UpdateRule,
};
use super::notices::ChannelIdle;
use crate::cluster::{Audience, Broadcast, ChannelKey, Engine, EngineError, SocketTarget};
use crate::config::ChannelRule;
use crate::protocol::JoinRequest;
use crate::rules::{EventTarget, RuleSet};
use actix::prelude::*;
use bytes::Bytes;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

struct Live {
    addr: Addr<ChannelActor>,
    /// Joins forwarded to this actor; compared with what it has seen before stopping it.
    joins_sent: u64,
}

pub struct RegistryActor {
    app: Arc<str>,
    rules: Arc<RuleSet>,
    engine: Arc<dyn Engine>,
    channels: HashMap<Arc<str>, Live>,
    /// Channels told to stop that may still be finishing engine work (a `leave` for
    /// the other nodes); a graceful shutdown waits for them.
    /// The last of each channel (a new actor for the channel waits for it, which
    /// waited for its own predecessor).
    stopping: HashMap<Arc<str>, Addr<ChannelActor>>,
    limits: ChannelLimits,
}

impl RegistryActor {
    pub fn new(
        app: Arc<str>,
        rules: Arc<RuleSet>,
        engine: Arc<dyn Engine>,
        limits: ChannelLimits,
    ) -> Self {
        Self {
            app,
            rules,
            engine,
            channels: HashMap::new(),
            stopping: HashMap::new(),
            limits,
        }
    }

    /// The channel's live actor, started when there is none.
    fn live(&mut self, name: &str, rule: &Arc<ChannelRule>, ctx: &mut Context<Self>) -> &mut Live {
        let key = ChannelKey {
            app: self.app.clone(),
            channel: Arc::from(name),
        };
        let (engine, limits, stopping) = (&self.engine, self.limits, &self.stopping);
        self.channels.entry(key.channel.clone()).or_insert_with(|| {
            // The channel's previous actor may still be finishing engine work (a
            // member's leave): the new one starts after it, or a rejoining socket's
            // record could be written before the old leave removes it.
            let predecessor = stopping
                .get(&key.channel)
                .filter(|addr| addr.connected())
                .cloned();
            let channel = ChannelActor::new(
                key,
                rule.clone(),
                ctx.address().recipient(),
                engine.clone(),
                limits,
            )
            .after(predecessor);
            crate::metrics::channels_live(1.0);
            Live {
                addr: channel.start(),
                joins_sent: 0,
            }
        })
    }

    /// Hand an event to each named channel that has a rule; answers how many there
    /// were and, for published ones, when the engine took each.
    fn forward(
        &mut self,
        names: Vec<String>,
        msg: &PublishEvent,
        ctx: &mut Context<Self>,
    ) -> Forwarded {
        let mut forwarded = Forwarded::default();
        for name in names {
            let Some(rule) = self.rules.find(&name).cloned() else {
                continue;
            };
            let broadcast = Broadcast {
                json: (msg.encode)(&name),
                audience: msg
                    .target
                    .clone()
                    .map(Audience::user)
                    .unwrap_or_else(Audience::everyone),
                history_cap: 0,
                origin: None,
                seq: None,
            };
            forwarded.count += 1;
            if msg.local_only {
                // Only this node's members: a channel not live here has none.
                if let Some(live) = self.channels.get(name.as_str()) {
                    live.addr.do_send(ChannelEvent {
                        broadcast,
                        local_only: true,
                        done: None,
                    });
                }
                continue;
            }
            let (done, taken) = oneshot::channel();
            self.live(&name, &rule, ctx).addr.do_send(ChannelEvent {
                broadcast,
                local_only: false,
                done: Some(done),
            });
            forwarded.taken.push(taken);
        }
        forwarded
    }
}

#[derive(Default)]
struct Forwarded {
    count: usize,
    taken: Vec<oneshot::Receiver<Result<(), EngineError>>>,
}

impl Forwarded {
    async fn settle(self) -> Result<usize, EngineError> {
        for taken in self.taken {
            taken
                .await
                .map_err(|_| EngineError::Unavailable("channel stopped".into()))??;
        }
        Ok(self.count)
    }
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Joins and events for a busy app queue here; don't let the default cap stall senders.
        ctx.set_mailbox_capacity(100_000);
    }
}

/// Join a socket to a channel; answers the channel actor the connection then talks to.
#[derive(Message)]
#[rtype(result = "Addr<ChannelActor>")]
pub struct JoinChannel {
    pub channel: String,
    pub rule: Arc<ChannelRule>,
    pub member: Member,
    pub request: JoinRequest,
}

impl Handler<JoinChannel> for RegistryActor {
    type Result = MessageResult<JoinChannel>;

    fn handle(&mut self, msg: JoinChannel, ctx: &mut Context<Self>) -> Self::Result {
        let live = self.live(&msg.channel, &msg.rule, ctx);
        live.joins_sent += 1;
        live.addr.do_send(Join {
            member: msg.member,
            request: msg.request,
            via_registry: true,
        });
        MessageResult(live.addr.clone())
    }
}

impl Handler<ChannelIdle> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: ChannelIdle, _: &mut Context<Self>) {
        if let Some(live) = self.channels.get(&msg.channel) {
            // A join sent after the channel reported idle keeps it alive.
            if live.joins_sent == msg.joins_seen {
                live.addr.do_send(Shutdown);
                // Forget stopped ones now and then, not on every idle channel: when
                // thousands of channels empty at once this stays linear.
                if self.stopping.len() >= 64 && self.stopping.len().is_power_of_two() {
                    self.stopping.retain(|_, a| a.connected());
                }
                self.stopping.insert(msg.channel.clone(), live.addr.clone());
                self.channels.remove(&msg.channel);
                crate::metrics::channels_live(-1.0);
            }
        }
    }
}

/// A backend event for one channel, or for every live channel under a prefix when
/// `channel` ends in `*`. Answers how many channels it was published to.
#[derive(Message)]
#[rtype(result = "Result<usize, EngineError>")]
pub struct PublishEvent {
    pub channel: String,
    /// Builds the event's JSON for a concrete channel name.
    pub encode: Arc<dyn Fn(&str) -> Bytes + Send + Sync>,
    pub target: Option<EventTarget>,
    /// Deliver to this node's members only, without publishing (every node got
    /// the same envelope from Redis and delivers to its own members).
    pub local_only: bool,
}

impl Handler<PublishEvent> for RegistryActor {
    type Result = ResponseActFuture<Self, Result<usize, EngineError>>;

    fn handle(&mut self, msg: PublishEvent, ctx: &mut Context<Self>) -> Self::Result {
        let Some(prefix) = msg.channel.strip_suffix('*').map(str::to_string) else {
            let forwarded = self.forward(vec![msg.channel.clone()], &msg, ctx);
            return Box::pin(actix::fut::wrap_future(forwarded.settle()));
        };
        if msg.local_only {
            let names = self
                .channels
                .keys()
                .filter(|name| name.len() > prefix.len() && name.starts_with(prefix.as_str()))
                .map(|name| name.to_string())
                .collect();
            let forwarded = self.forward(names, &msg, ctx);
            return Box::pin(actix::fut::wrap_future(forwarded.settle()));
        }
        let mut lookup = self.engine.live_channels(&self.app, &prefix);
        // Resolved at once by the in-memory engine: forward in this handler, in order
        // with the events and joins before it.
        if let Some(found) = (&mut lookup).now_or_never() {
            let forwarded = found.map(|names| self.forward(names, &msg, ctx));
            return Box::pin(actix::fut::wrap_future(
                async move { forwarded?.settle().await },
            ));
        }
        Box::pin(lookup.into_actor(self).then(move |found, act, ctx| {
            let forwarded = found.map(|names| act.forward(names, &msg, ctx));
            actix::fut::wrap_future(async move { forwarded?.settle().await })
        }))
    }
}

/// The live channels and their local member counts, for the admin view.
#[derive(Message)]
#[rtype(result = "Vec<ChannelStats>")]
pub struct ListChannels;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStats {
    pub name: String,
    pub members: usize,
    pub presence: usize,
}

impl Handler<ListChannels> for RegistryActor {
    type Result = ResponseFuture<Vec<ChannelStats>>;

    fn handle(&mut self, _: ListChannels, _: &mut Context<Self>) -> Self::Result {
        let asks: Vec<_> = self
            .channels
            .iter()
            .map(|(name, live)| (name.to_string(), live.addr.send(Snapshot)))
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(asks.len());
            for (name, ask) in asks {
                if let Ok((members, presence)) = ask.await {
                    out.push(ChannelStats {
                        name,
                        members,
                        presence,
                    });
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            out
        })
    }
}

/// From the server API: take `target`'s sockets out of a channel on this node;
/// answers how many were in it here.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Unsubscribe {
    pub channel: String,
    pub target: SocketTarget,
}

impl Handler<Unsubscribe> for RegistryActor {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        let asked = self
            .channels
            .get(msg.channel.as_str())
            .map(|live| live.addr.send(Revoke(msg.target)));
        Box::pin(async move {
            match asked {
                Some(answer) => answer.await.unwrap_or(0),
                None => 0,
            }
        })
    }
}

/// A reload changed the app's rules: every live channel re-checks its members.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateRules(pub Arc<RuleSet>);

impl Handler<UpdateRules> for RegistryActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateRules, _: &mut Context<Self>) {
        self.rules = msg.0;
        for (name, live) in &self.channels {
            live.addr
                .do_send(UpdateRule(self.rules.find(name).cloned()));
        }
    }
}

/// How many channel actors are live (for tests and metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveChannels;

impl Handler<LiveChannels> for RegistryActor {
    type Result = usize;

    fn handle(&mut self, _: LiveChannels, _: &mut Context<Self>) -> usize {
        self.stopping.retain(|_, a| a.connected());
        self.channels.len() + self.stopping.len()
    }
}
