//! One registry per app: channel name -> live channel actor. It creates a channel
//! actor on the first join, stops it once it is empty and no join is on its way,
//! and fans backend events out to every live channel a pattern names.

use super::channel::{ChannelActor, Event, Join, Member, Shutdown};
use crate::cluster::{Audience, Broadcast, ChannelKey, Engine};
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
}

impl RegistryActor {
    pub fn new(app: Arc<str>, rules: Arc<RuleSet>, engine: Arc<dyn Engine>) -> Self {
        Self {
            app,
            rules,
            engine,
            channels: HashMap::new(),
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
            Live {
                addr: channel.start(),
                joins_sent: 0,
            }
        });
        live.joins_sent += 1;
        live.addr.do_send(Join {
            member: msg.member,
            request: msg.request,
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
                self.channels.remove(&msg.channel);
            }
        }
    }
}

/// A backend event for one channel, or for every live channel under a prefix when
/// `channel` ends in `*`. Answers how many live channels it reached.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PublishEvent {
    pub channel: String,
    /// Builds the event's JSON for a concrete channel name.
    pub encode: Arc<dyn Fn(&str) -> Bytes + Send + Sync>,
    pub target: Option<EventTarget>,
}

impl Handler<PublishEvent> for RegistryActor {
    type Result = usize;

    fn handle(&mut self, msg: PublishEvent, ctx: &mut Context<Self>) -> usize {
        if let Some(prefix) = msg.channel.strip_suffix('*') {
            let mut reached = 0;
            for (name, live) in &self.channels {
                if name.len() > prefix.len() && name.starts_with(prefix) {
                    live.addr.do_send(Event {
                        json: (msg.encode)(name),
                        target: msg.target.clone(),
                    });
                    reached += 1;
                }
            }
            return reached;
        }
        let json = (msg.encode)(&msg.channel);
        if let Some(live) = self.channels.get(msg.channel.as_str()) {
            live.addr.do_send(Event {
                json,
                target: msg.target,
            });
            return 1;
        }
        // Nobody is here, but the rule may keep events in history.
        if let Some(rule) = self.rules.find(&msg.channel) {
            if rule.history_events && rule.settings.message_history > 0 {
                let key = ChannelKey::new(&self.app, &msg.channel);
                let audience = match msg.target {
                    Some(t) => Audience::User(t),
                    None => Audience::Members {
                        authenticated_only: false,
                    },
                };
                let broadcast = Broadcast {
                    json,
                    audience,
                    history_cap: rule.settings.message_history,
                    sender: None,
                };
                // Stored only: there is no local member to deliver to.
                let fut = self.engine.publish(&key, broadcast);
                ctx.spawn(fut.into_actor(self).map(|result, _, _| {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "event for history not stored");
                    }
                }));
            }
        }
        0
    }
}

/// How many channel actors are live (for tests and metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveChannels;

impl Handler<LiveChannels> for RegistryActor {
    type Result = usize;

    fn handle(&mut self, _: LiveChannels, _: &mut Context<Self>) -> usize {
        self.channels.len()
    }
}
