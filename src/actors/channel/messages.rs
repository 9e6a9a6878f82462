//! What a channel publishes besides presence: client messages (public, to the
//! members or the authenticated ones; direct, to one socket on any node), backend
//! events the registry forwards, and history replies that leave out what the asker
//! could not have received live.

use super::*;
use crate::cluster::{EngineError, HistoryEntry};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

/// Whom a client message is for, once its sender passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressed {
    /// Every member, or only the authenticated ones.
    Members { authenticated_only: bool },
    /// One socket; `flagged_authenticated` is echoed in the frame as sent.
    Socket {
        id: Arc<str>,
        flagged_authenticated: bool,
    },
}

/// A client message whose sender passed its checks, rate limit and trigger.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientMessage {
    pub sender: Arc<str>,
    pub payload: Box<RawValue>,
    pub to: Addressed,
}

impl ChannelActor {
    /// How much history to keep when storing `json`: the rule's size, unless the
    /// frame is too large to store (delivered live only).
    fn stored_cap(&self, json: &[u8]) -> usize {
        rules::history_cap(
            self.rule.settings.message_history,
            json.len(),
            self.limits.history_entry_bytes,
        )
    }

    fn public_message(
        &mut self,
        sender: &Member,
        msg: ClientMessage,
        authenticated_only: bool,
    ) -> Broadcast {
        let json = protocol::message_json(
            self.channel(),
            authenticated_only,
            None,
            &sender.client,
            &msg.payload,
        );
        Broadcast {
            history_cap: self.stored_cap(&json),
            json,
            audience: Audience::Members { authenticated_only },
            origin: Some(msg.sender),
            seq: None,
        }
    }

    /// A direct message once the target's authentication is known (None: not a member).
    fn direct_message(
        &mut self,
        sender: &Member,
        msg: ClientMessage,
        target_authenticated: Option<bool>,
        ctx: &mut Context<Self>,
    ) {
        let Addressed::Socket {
            id,
            flagged_authenticated,
        } = &msg.to
        else {
            return;
        };
        if let Err(denied) = rules::check_direct_recipient(&self.rule, target_authenticated) {
            return self.send_error(sender, denied);
        }
        let broadcast = Broadcast {
            json: protocol::message_json(
                self.channel(),
                *flagged_authenticated,
                Some(id),
                &sender.client,
                &msg.payload,
            ),
            audience: Audience::Socket { id: id.clone() },
            history_cap: 0,
            origin: Some(msg.sender.clone()),
            seq: None,
        };
        self.publish(broadcast, ctx, |_, _, _| {});
    }
}

impl Handler<ClientMessage> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: ClientMessage, ctx: &mut Context<Self>) {
        let Some(sender) = self.members.get(&msg.sender).cloned() else {
            return; // it left (or was dropped) while the message was on its way
        };
        let target = match &msg.to {
            Addressed::Members { authenticated_only } => {
                let authenticated_only = *authenticated_only;
                let broadcast = self.public_message(&sender, msg, authenticated_only);
                return self.publish(broadcast, ctx, |_, _, _| {});
            }
            Addressed::Socket { id, .. } => id.clone(),
        };
        // A local member answers at once; else the engine knows every node's members.
        if let Some(local) = self.members.get(&target) {
            let authenticated = local.identity.authenticated;
            return self.direct_message(&sender, msg, Some(authenticated), ctx);
        }
        let fut = self.engine.find_member(&self.key, target);
        self.run(ctx, fut, move |act, result, ctx| match result {
            Ok(found) => act.direct_message(&sender, msg, found, ctx),
            Err(_) => act.send_error(&sender, Denied::Unavailable),
        });
    }
}

/// A backend event for this channel, forwarded by the registry so that the channel
/// stays the only writer of its history. `local_only`: every node received it from
/// the engine already, deliver it to this node's members without publishing.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelEvent {
    pub broadcast: Broadcast,
    pub local_only: bool,
    /// Told whether the engine took it.
    pub done: Option<oneshot::Sender<Result<(), EngineError>>>,
}

impl Handler<ChannelEvent> for ChannelActor {
    type Result = ();

    fn handle(&mut self, mut msg: ChannelEvent, ctx: &mut Context<Self>) {
        // Stored only under a rule with `history_events`, and not when too large.
        if self.rule.history_events {
            msg.broadcast.history_cap = self.stored_cap(&msg.broadcast.json);
        }
        let done = msg.done;
        if msg.local_only {
            self.deliver(&msg.broadcast, ctx);
            if let Some(done) = done {
                let _ = done.send(Ok(()));
            }
            return;
        }
        self.publish(msg.broadcast, ctx, move |act, result, _| {
            if let Some(done) = done {
                let _ = done.send(result);
            }
            // Started for this event alone: the registry may stop it now.
            act.report_if_idle();
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct HistoryRequest {
    pub socket_id: Arc<str>,
}

impl Handler<HistoryRequest> for ChannelActor {
    type Result = ();

    /// Answered after every broadcast this channel published before the request:
    /// those are on their way back through the mailbox (`Deliver`), so the answer
    /// goes behind them. Clients (and tests) use a history request as a barrier.
    fn handle(&mut self, msg: HistoryRequest, ctx: &mut Context<Self>) {
        ctx.address().do_send(AnswerHistory {
            socket_id: msg.socket_id,
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct AnswerHistory {
    socket_id: Arc<str>,
}

impl Handler<AnswerHistory> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: AnswerHistory, ctx: &mut Context<Self>) {
        let fut: BoxFuture<'static, Result<Vec<HistoryEntry>, EngineError>> =
            if self.rule.settings.message_history == 0 {
                crate::cluster::done(Vec::new())
            } else {
                self.engine.history(&self.key)
            };
        self.run(ctx, fut, move |act, result, ctx| {
            let Some(member) = act.members.get(&msg.socket_id) else {
                return;
            };
            match result {
                Ok(history) => {
                    member.outbox.push(protocol::history_frame_within(
                        "history",
                        act.channel(),
                        None,
                        act.visible_history(&msg.socket_id, member, &history),
                        act.limits.reply_bytes,
                    ));
                }
                Err(_) => act.send_error(member, Denied::Unavailable),
            }
            act.check_overflow(&msg.socket_id, ctx);
        });
    }
}
