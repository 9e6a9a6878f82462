//! What a client frame does: join (checks, trigger, then the registry), leave,
//! message (the sender's checks, rate limit and trigger, then the channel) and
//! history. The connection owns the sender's decisions and makes each once, with
//! the app's current rule; the channel owns the recipient's.

use super::*;
use crate::actors::channel::{Addressed, ClientMessage, HistoryRequest, Join};
use crate::actors::registry::JoinChannel;
use crate::protocol::{ClientFrame, JoinRequest, MessageTo};
use crate::rules;
use crate::triggers::{self, Verdict};
use serde_json::value::RawValue;

impl ConnectionActor {
    pub(super) fn handle_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let parsed = ClientFrame::parse(text);
        let verdict = match &mut self.frame_rate {
            Some(rate) => rate.check(),
            None => FrameVerdict::Take,
        };
        if verdict != FrameVerdict::Take {
            crate::metrics::dropped("frame_rate");
        }
        if verdict == FrameVerdict::Close {
            return self.close_with(close::POLICY, "frame rate abuse", ctx);
        }
        let frame = match parsed {
            Ok(f) => f,
            Err(invalid) => {
                return self.send_error(invalid.channel.as_deref(), &invalid.message(), ctx)
            }
        };
        if verdict == FrameVerdict::Refuse {
            let channel = frame.channel().to_string();
            return self.deny(&channel, Denied::RateLimited, ctx);
        }
        match frame {
            ClientFrame::Join {
                channel,
                request,
                options,
                payload,
            } => self.join(channel, request, options, payload, ctx),
            ClientFrame::Leave { channel } => self.leave(&channel, ctx),
            ClientFrame::Message {
                channel,
                to,
                options,
                payload,
            } => self.message(channel, to, options, payload, ctx),
            ClientFrame::History { channel } => match self.joined.get(&channel) {
                Some(j) => j.addr.do_send(HistoryRequest {
                    socket_id: self.socket_id.clone(),
                }),
                None => self.deny(&channel, Denied::NotJoined, ctx),
            },
        }
    }

    /// Ask the channel's trigger (when it has one) before `then`; later frames of this
    /// socket wait for the verdict, so a message sent right after a join is not
    /// refused as "not joined".
    fn after_trigger(
        &mut self,
        rule: &ChannelRule,
        body: Option<serde_json::Value>,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, Verdict, &mut Context<Self>) + 'static,
    ) {
        let (Some(url), Some(body)) = (rule.trigger_url.clone(), body) else {
            return then(self, Verdict::Allow, ctx);
        };
        let timeout = Duration::from_millis(rule.trigger_timeout_ms);
        let api_key = self.app.settings().config.api_key.clone();
        ctx.wait(
            async move { triggers::call(&url, &api_key, timeout, body).await }
                .into_actor(self)
                .map(move |verdict, act, ctx| then(act, verdict, ctx)),
        );
    }

    /// What a trigger is shown of a frame; built only for rules that have one.
    fn trigger_body(
        &self,
        rule: &ChannelRule,
        action: &str,
        channel: &str,
        options: &RawValue,
        payload: &RawValue,
    ) -> Option<serde_json::Value> {
        rule.trigger_url.as_ref()?;
        Some(serde_json::json!({
            "action": action,
            "channel": channel,
            "client": self.identity.client_json(),
            "options": options,
            "payload": payload,
        }))
    }

    fn join(
        &mut self,
        channel: String,
        request: JoinRequest,
        options: Box<RawValue>,
        payload: Box<RawValue>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(d) = rules::validate_channel_name(&channel) {
            return self.deny(&channel, d, ctx);
        }
        let Some(rule) = self.app.settings().rules.find(&channel).cloned() else {
            return self.deny(&channel, Denied::ChannelNotFound, ctx);
        };
        if let Err(d) = rules::check_join(&rule, &self.identity, &channel) {
            return self.deny(&channel, d, ctx);
        }
        if let Some(j) = self.joined.get(&channel) {
            // A repeated join goes straight to the channel (in order with this
            // socket's other frames there), which re-acks it; no trigger, no count.
            let member = self.member();
            j.addr.do_send(Join {
                member,
                request,
                via_registry: false,
            });
            return;
        }
        let body = self.trigger_body(&rule, "join", &channel, &options, &payload);
        let rule_kept = rule.clone();
        let name = channel.clone();
        self.after_trigger(&rule, body, ctx, move |act, verdict, ctx| match verdict {
            Verdict::Deny => act.deny(&name, Denied::JoinRejected, ctx),
            _ => act.finish_join(name, rule_kept, request, ctx),
        });
    }

    fn finish_join(
        &mut self,
        channel: String,
        rule: Arc<ChannelRule>,
        request: JoinRequest,
        ctx: &mut Context<Self>,
    ) {
        if self.joined.len() >= self.state.limits.max_channels_per_socket {
            return self.deny(&channel, Denied::TooManyChannels, ctx);
        }
        let join = JoinChannel {
            channel: channel.clone(),
            rule: rule.clone(),
            member: self.member(),
            request,
        };
        ctx.wait(
            self.app.registry.send(join).into_actor(self).map(
                move |result, act, ctx| match result {
                    Ok(addr) => {
                        act.joined.insert(channel, Joined { addr, rule });
                    }
                    Err(_) => act.send_error(Some(&channel), "Service unavailable", ctx),
                },
            ),
        );
    }

    fn member(&self) -> Member {
        Member {
            identity: self.identity.clone(),
            client: self.client.clone(),
            outbox: self.outbox.clone(),
            conn: self.notices.clone(),
            presence: false,
            joined_after: 0,
        }
    }

    fn leave(&mut self, channel: &str, ctx: &mut Context<Self>) {
        if let Some(j) = self.joined.remove(channel) {
            j.addr.do_send(Leave {
                socket_id: self.socket_id.clone(),
            });
            self.send(protocol::leave_frame(channel), ctx);
            self.forget_channels_if_none();
        }
    }

    /// A socket that left its last channel keeps no table for them: thousands of
    /// sockets idling between channels would otherwise each keep their largest one.
    pub(super) fn forget_channels_if_none(&mut self) {
        if self.joined.is_empty() {
            self.joined = HashMap::new();
        }
    }

    /// The sender's decision for a message: whom it may address.
    fn address(&self, rule: &ChannelRule, to: MessageTo) -> Result<Addressed, Denied> {
        match to {
            MessageTo::Members { authenticated } => {
                rules::check_public_message(rule, &self.identity, authenticated)
                    .map(|authenticated_only| Addressed::Members { authenticated_only })
            }
            MessageTo::Socket { id, authenticated } => {
                rules::check_direct_sender(rule, &self.identity).map(|()| Addressed::Socket {
                    id: Arc::from(id),
                    flagged_authenticated: authenticated,
                })
            }
        }
    }

    fn message(
        &mut self,
        channel: String,
        to: MessageTo,
        options: Box<RawValue>,
        payload: Box<RawValue>,
        ctx: &mut Context<Self>,
    ) {
        crate::metrics::message_in();
        let Some(joined) = self.joined.get(&channel) else {
            return self.deny(&channel, Denied::NotJoined, ctx);
        };
        // The current rule: a reload may have changed it since the join.
        let addr = joined.addr.clone();
        let rule = self
            .app
            .settings()
            .rules
            .find(&channel)
            .cloned()
            .unwrap_or_else(|| joined.rule.clone());
        let to = match self.address(&rule, to) {
            Ok(to) => to,
            Err(d) => return self.deny(&channel, d, ctx),
        };
        if let Some(limiter) = &self.limiter {
            if limiter.check().is_err() {
                crate::metrics::dropped("rate_limit");
                return self.deny(&channel, Denied::RateLimited, ctx);
            }
        }
        let sender = self.socket_id.clone();
        let body = self.trigger_body(&rule, "message", &channel, &options, &payload);
        let name = channel.clone();
        self.after_trigger(&rule, body, ctx, move |act, verdict, ctx| {
            let payload: Box<RawValue> = match verdict {
                Verdict::Deny => return act.deny(&name, Denied::MessageRejected, ctx),
                Verdict::Allow => payload,
                Verdict::Replace(p) => p,
            };
            addr.do_send(ClientMessage {
                sender,
                payload,
                to,
            });
        });
    }
}
