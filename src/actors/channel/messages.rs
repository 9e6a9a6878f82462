//! Client messages and history requests in a channel: public messages to the
//! members (or the authenticated ones), direct messages to one socket on any node,
//! and history replies that leave out what the asker could not have received live.

use super::*;

/// A client message that passed the sender-side checks, rate limit and trigger.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientMessage {
    pub sender: Arc<str>,
    pub payload: Box<RawValue>,
    pub requested_authenticated: bool,
    pub target: Option<String>,
}

impl ChannelActor {
    fn public_message(&mut self, sender: &Member, msg: ClientMessage, ctx: &mut Context<Self>) {
        let authenticated_only = match rules::check_public_message(
            &self.rule,
            &sender.identity,
            msg.requested_authenticated,
        ) {
            Ok(a) => a,
            Err(denied) => return self.send_error(sender, denied),
        };
        let broadcast = Broadcast {
            json: protocol::message_json(
                self.channel(),
                authenticated_only,
                None,
                &sender.client,
                &msg.payload,
            ),
            audience: Audience::Members { authenticated_only },
            history_cap: self.rule.settings.message_history,
            origin: Some(msg.sender),
        };
        self.publish(broadcast, ctx);
    }

    /// A direct message once the target's authentication is known (None: not a member).
    fn direct_message(
        &mut self,
        sender: &Member,
        msg: ClientMessage,
        target_authenticated: Option<bool>,
        ctx: &mut Context<Self>,
    ) {
        let target = msg.target.clone().unwrap_or_default();
        if let Err(denied) =
            rules::check_direct_message(&self.rule, &sender.identity, target_authenticated)
        {
            return self.send_error(sender, denied);
        }
        let broadcast = Broadcast {
            json: protocol::message_json(
                self.channel(),
                msg.requested_authenticated,
                Some(&target),
                &sender.client,
                &msg.payload,
            ),
            audience: Audience::Socket {
                id: Arc::from(target.as_str()),
            },
            history_cap: 0,
            origin: Some(msg.sender),
        };
        self.publish(broadcast, ctx);
    }
}

impl Handler<ClientMessage> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: ClientMessage, ctx: &mut Context<Self>) {
        let Some(sender) = self.members.get(&msg.sender).cloned() else {
            return; // it left (or was dropped) while the message was on its way
        };
        let Some(target) = msg.target.as_deref() else {
            return self.public_message(&sender, msg, ctx);
        };
        if let Some(local) = self.members.get(target) {
            let authenticated = local.identity.authenticated;
            return self.direct_message(&sender, msg, Some(authenticated), ctx);
        }
        if !self.engine.clustered() {
            return self.direct_message(&sender, msg, None, ctx);
        }
        // The target may be a member on another node.
        let fut = self.engine.find_member(&self.key, Arc::from(target));
        self.run(ctx, fut, move |act, result, ctx| match result {
            Ok(found) => act.direct_message(&sender, msg, found, ctx),
            Err(_) => act.send_error(&sender, Denied::Unavailable),
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

    fn handle(&mut self, msg: HistoryRequest, ctx: &mut Context<Self>) {
        let fut: BoxFuture<'static, Result<Vec<HistoryEntry>, EngineError>> =
            if self.rule.settings.message_history == 0 {
                crate::cluster::done(Vec::new())
            } else {
                self.engine.history(&self.key)
            };
        self.run(ctx, fut, move |act, result, _| {
            let Some(member) = act.members.get(&msg.socket_id) else {
                return;
            };
            let history = match result {
                Ok(h) => h,
                Err(_) => return act.send_error(member, Denied::Unavailable),
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
        });
    }
}
