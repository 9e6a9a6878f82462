//! Joining a channel: record the member with the engine, announce it to members
//! with presence, and answer with the history and presence it asked for.

use super::*;
use crate::cluster::{EngineResult, HistoryEntry, MemberRecord};
use crate::protocol::JoinRequest;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub member: Member,
    pub request: JoinRequest,
    /// Forwarded by the registry (counted for the channel's lifecycle); a repeated
    /// join comes straight from the member's connection.
    pub via_registry: bool,
}

/// What a join needs from the engine, gathered in one future so that it runs in
/// order with the channel's other engine work.
struct JoinEffects {
    history: Vec<HistoryEntry>,
    presence: Vec<SharedJson>,
}

struct JoinWork {
    subscribe: Option<EngineResult<()>>,
    record: Option<MemberRecord>,
    announce: Option<Broadcast>,
    wants_history: bool,
    wants_presence: bool,
}

impl ChannelActor {
    fn join_effects(&self, work: JoinWork) -> BoxFuture<'static, Result<JoinEffects, EngineError>> {
        let engine = self.engine.clone();
        let key = self.key.clone();
        Box::pin(async move {
            if let Some(subscribed) = work.subscribe {
                // The engine keeps the subscription and makes it again on reconnect.
                if let Err(e) = subscribed.await {
                    tracing::warn!(channel = %key.channel, error = %e, "subscribe failed; retried on reconnect");
                }
            }
            if let Some(m) = work.record {
                engine.member_joined(&key, m).await?;
            }
            if let Some(b) = work.announce {
                engine.publish(&key, b).await?;
            }
            let history = if work.wants_history {
                engine.history(&key).await?
            } else {
                Vec::new()
            };
            let presence = if work.wants_presence {
                engine.presence(&key).await?
            } else {
                Vec::new()
            };
            Ok(JoinEffects { history, presence })
        })
    }

    /// The engine refused the join: tell the socket and forget it.
    fn join_failed(&mut self, id: &Arc<str>, error: EngineError) {
        tracing::warn!(channel = %self.key.channel, error = %error, "join failed");
        if let Some(m) = self.members.remove(id) {
            self.send_error(&m, Denied::Unavailable);
            m.conn.do_send(MemberNotice::Unjoined {
                channel: self.key.channel.clone(),
            });
            self.report_if_idle();
        }
    }

    /// The join ack (with the history this member may see), then `presence_full`.
    fn answer_join(&self, id: &Arc<str>, effects: JoinEffects, wants_presence: bool) {
        let Some(member) = self.members.get(id) else {
            return;
        };
        member.outbox.push(protocol::history_frame_within(
            "join",
            self.channel(),
            Some(&member.client),
            self.visible_history(id, member, &effects.history),
            self.limits.reply_bytes,
        ));
        if wants_presence {
            let (frame, listed) = protocol::presence_full_frame_within(
                self.channel(),
                effects.presence.iter().map(|c| c.as_ref()),
                self.limits.reply_bytes,
            );
            if listed < effects.presence.len() {
                tracing::warn!(
                    channel = %self.key.channel,
                    members = effects.presence.len(),
                    listed,
                    "presence_full cut to limits.max_reply_bytes"
                );
            }
            member.outbox.push(frame);
        }
    }
}

impl Handler<Join> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        if msg.via_registry {
            self.joins_seen += 1;
        }
        // Subscribe before the first join is answered, so nothing published after
        // the join ack can be missed on this node.
        let subscribe = (!self.subscribed).then(|| {
            self.subscribed = true;
            self.engine
                .subscribe(&self.key, ctx.address().recipient::<Deliver>())
        });
        let id: Arc<str> = Arc::from(msg.member.identity.socket_id.as_str());
        let settings = &self.rule.settings;
        let wants_presence = msg.request.presence && settings.presence;
        let wants_history = msg.request.history && settings.message_history > 0;
        let (record, announce) = if self.members.contains_key(&id) {
            // Idempotent: the SDK joins twice. Re-ack (and presence_full when asked),
            // but no new presence entry and no broadcast.
            (None, None)
        } else {
            crate::metrics::joined();
            let mut member = msg.member;
            member.presence = wants_presence;
            member.joined_after = self.engine.watermark();
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
        let fut = self.join_effects(JoinWork {
            subscribe,
            record,
            announce,
            wants_history,
            wants_presence,
        });
        self.run(ctx, fut, move |act, result, ctx| match result {
            Ok(effects) => {
                act.answer_join(&id, effects, wants_presence);
                act.check_overflow(&id, ctx);
            }
            Err(e) => act.join_failed(&id, e),
        });
    }
}
