//! One registry per app: channel name -> live channel actor. It creates a channel
//! actor on the first join, stops it once it is empty and no join is on its way,
//! and fans backend events out to every live channel a pattern names.

use super::channel::{ChannelActor, Join, Member, Shutdown};
use crate::cluster::{Audience, Broadcast, ChannelKey, Deliver, Engine, EngineError, Published};
use crate::config::ChannelRule;
use crate::protocol::JoinRequest;
use crate::rules::{EventTarget, RuleSet};
use actix::prelude::*;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

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
    stopping: Vec<Addr<ChannelActor>>,
}

impl RegistryActor {
    pub fn new(app: Arc<str>, rules: Arc<RuleSet>, engine: Arc<dyn Engine>) -> Self {
        Self {
            app,
            rules,
            engine,
            channels: HashMap::new(),
            stopping: Vec::new(),
        }
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
        let name: Arc<str> = Arc::from(msg.channel.as_str());
        let live = self.channels.entry(name.clone()).or_insert_with(|| {
            let channel = ChannelActor::new(
                ChannelKey {
                    app: self.app.clone(),
                    channel: name,
                },
                msg.rule,
                ctx.address(),
                self.engine.clone(),
            );
            crate::metrics::channels_live(1.0);
            Live {
                addr: channel.start(),
                joins_sent: 0,
            }
        });
        live.joins_sent += 1;
        live.addr.do_send(Join {
            member: msg.member,
            request: msg.request,
            via_registry: true,
        });
        MessageResult(live.addr.clone())
    }
}

/// From a channel that became empty.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelIdle {
    pub channel: Arc<str>,
    pub joins_seen: u64,
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
                    self.stopping.retain(|a| a.connected());
                }
                self.stopping.push(live.addr.clone());
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
    /// Deliver to this node's members only, bypassing the engine (every node got
    /// the same envelope from Redis and delivers to its own members).
    pub local_only: bool,
}

impl Handler<PublishEvent> for RegistryActor {
    type Result = ResponseActFuture<Self, Result<usize, EngineError>>;

    fn handle(&mut self, msg: PublishEvent, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let app = self.app.clone();
        let rules = self.rules.clone();
        let prefix = msg.channel.strip_suffix('*').map(str::to_string);
        let local_names: Vec<String> = match &prefix {
            Some(p) => self
                .channels
                .keys()
                .filter(|name| name.len() > p.len() && name.starts_with(p.as_str()))
                .map(|name| name.to_string())
                .collect(),
            None => Vec::new(),
        };
        let fut = async move {
            let names = match &prefix {
                Some(p) if !msg.local_only => {
                    engine.live_channels(&app, p).await?.unwrap_or(local_names)
                }
                Some(_) => local_names,
                None => vec![msg.channel.clone()],
            };
            let mut published = 0;
            let mut deliver_here = Vec::new();
            for name in names {
                let Some(rule) = rules.find(&name) else {
                    continue;
                };
                let broadcast = Broadcast {
                    json: (msg.encode)(&name),
                    audience: msg
                        .target
                        .clone()
                        .map(Audience::user)
                        .unwrap_or_else(Audience::everyone),
                    history_cap: if rule.history_events {
                        rule.settings.message_history
                    } else {
                        0
                    },
                    origin: None,
                };
                published += 1;
                if msg.local_only {
                    deliver_here.push((name, broadcast));
                    continue;
                }
                let key = ChannelKey::new(&app, &name);
                if let Published::Local(b) = engine.publish(&key, broadcast).await? {
                    deliver_here.push((name, b));
                }
            }
            Ok((published, deliver_here))
        };
        Box::pin(fut.into_actor(self).map(|result, act, _| {
            let (published, deliver_here) = result?;
            for (name, broadcast) in deliver_here {
                if let Some(live) = act.channels.get(name.as_str()) {
                    live.addr.do_send(Deliver(broadcast));
                }
            }
            Ok(published)
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
            .map(|(name, live)| (name.to_string(), live.addr.send(super::channel::Snapshot)))
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
                .do_send(super::channel::UpdateRule(self.rules.find(name).cloned()));
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
        self.stopping.retain(|a| a.connected());
        self.channels.len() + self.stopping.len()
    }
}
