//! Channel names, rule matching and every permission decision of docs/protocol.md
//! section 3, as plain functions. Each is called once, by the actor that owns the
//! decision, with the rule current at that moment; actors never decide themselves.

use crate::auth::Identity;
use crate::model::ChannelRule;
use std::collections::HashMap;
use std::sync::Arc;

/// Why an action was refused; `Display` is the exact text of the `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("Invalid channel name")]
    InvalidName,
    #[error("Channel not found")]
    ChannelNotFound,
    #[error("Anonymous clients cannot join this channel.")]
    AnonymousNotAllowed,
    #[error("Not allowed to join this channel")]
    JoinNotAllowed,
    #[error("Join rejected")]
    JoinRejected,
    #[error("Too many channels")]
    TooManyChannels,
    #[error("Not joined to this channel")]
    NotJoined,
    #[error("Public messaging is not allowed on this channel")]
    PublicNotAllowed,
    #[error("Private messaging is not allowed on this channel")]
    PrivateNotAllowed,
    #[error("Authentication required to send messages on this channel")]
    AuthRequired,
    #[error("Not allowed to publish on this channel")]
    PublishNotAllowed,
    #[error("Recipient not found in this channel")]
    RecipientNotFound,
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("Message rejected")]
    MessageRejected,
    #[error("Service unavailable")]
    Unavailable,
    #[error("Channel access revoked")]
    AccessRevoked,
}

/// A concrete channel name: 1 to 255 bytes, no control characters, whitespace or `*`.
pub fn validate_channel_name(name: &str) -> Result<(), Denied> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '*');
    if ok {
        Ok(())
    } else {
        Err(Denied::InvalidName)
    }
}

/// A rule pattern: a valid name, or a prefix followed by one final `*`.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.contains('*') {
        return Err("`*` may only end a pattern".into());
    }
    if pattern.is_empty() || pattern.len() > 255 {
        return Err("must be 1 to 255 bytes".into());
    }
    if body.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

/// An app's rules, indexed for lookup: exact names first, then the longest prefix.
#[derive(Debug, Default)]
pub struct RuleSet {
    exact: HashMap<String, Arc<ChannelRule>>,
    /// (prefix, rule), longest prefix first; a name matches when it is longer than the prefix.
    prefixes: Vec<(String, Arc<ChannelRule>)>,
}

impl RuleSet {
    pub fn new(rules: &[ChannelRule]) -> Self {
        let mut set = RuleSet::default();
        for rule in rules {
            let rule = Arc::new(rule.clone());
            if let Some(prefix) = rule.pattern.strip_suffix('*') {
                set.prefixes.push((prefix.to_string(), rule));
            } else {
                if rule.settings.nested_channels {
                    set.prefixes
                        .push((format!("{}/", rule.pattern), rule.clone()));
                }
                set.exact.insert(rule.pattern.clone(), rule);
            }
        }
        // Stable: among equal prefixes the rule written first wins.
        set.prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        set
    }

    /// The rule governing a concrete channel name.
    pub fn find(&self, channel: &str) -> Option<&Arc<ChannelRule>> {
        if let Some(rule) = self.exact.get(channel) {
            return Some(rule);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| channel.len() > p.len() && channel.starts_with(p.as_str()))
            .map(|(_, r)| r)
    }

    /// Whether some channel starting with `prefix` (and longer than it) could have a rule:
    /// decides whether a pattern event (`chat/*`) names anything at all.
    pub fn covers_prefix(&self, prefix: &str) -> bool {
        self.exact
            .keys()
            .any(|name| name.len() > prefix.len() && name.starts_with(prefix))
            || self
                .prefixes
                .iter()
                .any(|(p, _)| p.starts_with(prefix) || prefix.starts_with(p.as_str()))
    }
}

/// The segment after the last `/` or `:`.
pub fn last_segment(channel: &str) -> &str {
    channel
        .rfind(['/', ':'])
        .map(|i| &channel[i + 1..])
        .unwrap_or(channel)
}

fn holds_any_role(who: &Identity, roles: &[String]) -> bool {
    roles.is_empty() || who.roles.iter().any(|r| roles.contains(r))
}

/// Whether `who` owns `channel` under an `owner_segment` rule: authenticated, its
/// `row_id` is the channel's last segment, and, when the rule names an
/// `owner_table`, its `dbo_id` is that table (so user 42 of one auth table does not
/// own `user:42` of another).
pub fn owns(rule: &ChannelRule, who: &Identity, channel: &str) -> bool {
    who.authenticated
        && last_segment(channel) == who.row_id_key()
        && rule.owner_table.is_none_or(|table| table == who.dbo_id)
}

/// Join checks 2-4 of docs/protocol.md section 3 (name validity, the trigger and the channel
/// count are checked by the caller around this).
pub fn check_join(rule: &ChannelRule, who: &Identity, channel: &str) -> Result<(), Denied> {
    if !rule.active {
        return Err(Denied::ChannelNotFound);
    }
    if !who.authenticated && !rule.settings.anonymous_clients {
        return Err(Denied::AnonymousNotAllowed);
    }
    if !holds_any_role(who, &rule.join_roles) {
        return Err(Denied::JoinNotAllowed);
    }
    if rule.owner_segment && !owns(rule, who, channel) {
        return Err(Denied::JoinNotAllowed);
    }
    Ok(())
}

/// A public message: allowed or not, and whether only authenticated members receive it.
pub fn check_public_message(
    rule: &ChannelRule,
    sender: &Identity,
    requested_authenticated: bool,
) -> Result<bool, Denied> {
    if !rule.public_messaging.active {
        return Err(Denied::PublicNotAllowed);
    }
    if rule.public_messaging.auth && !sender.authenticated {
        return Err(Denied::AuthRequired);
    }
    if !holds_any_role(sender, &rule.publish_roles) {
        return Err(Denied::PublishNotAllowed);
    }
    Ok(requested_authenticated || (sender.authenticated && rule.settings.auth_channel))
}

/// A direct message, the sender's half: decided by the sender's connection.
pub fn check_direct_sender(rule: &ChannelRule, sender: &Identity) -> Result<(), Denied> {
    if !rule.private_messaging.active {
        return Err(Denied::PrivateNotAllowed);
    }
    if rule.private_messaging.auth && !sender.authenticated {
        return Err(Denied::AuthRequired);
    }
    if !holds_any_role(sender, &rule.publish_roles) {
        return Err(Denied::PublishNotAllowed);
    }
    Ok(())
}

/// A direct message, the recipient's half: decided by the channel, which knows its
/// members (None: the target socket is not a member of the channel).
pub fn check_direct_recipient(
    rule: &ChannelRule,
    target_authenticated: Option<bool>,
) -> Result<(), Denied> {
    match target_authenticated {
        None => Err(Denied::RecipientNotFound),
        Some(false) if rule.private_messaging.auth => Err(Denied::AuthRequired),
        Some(_) => Ok(()),
    }
}

/// A direct message to `target` as a whole: the sender's half, then the recipient's.
pub fn check_direct_message(
    rule: &ChannelRule,
    sender: &Identity,
    target_authenticated: Option<bool>,
) -> Result<(), Denied> {
    check_direct_sender(rule, sender)?;
    check_direct_recipient(rule, target_authenticated)
}

/// How many entries a channel keeps after storing this broadcast: the rule's
/// history size, or 0 (not stored, delivered live only) when the frame is larger
/// than `limits.max_history_entry_bytes`.
pub fn history_cap(rule_cap: usize, frame_bytes: usize, max_entry_bytes: usize) -> usize {
    if frame_bytes > max_entry_bytes {
        0
    } else {
        rule_cap
    }
}

/// Whether a member receives a frame meant for authenticated members only (live or from history).
pub fn reaches(authenticated_only: bool, member_authenticated: bool) -> bool {
    !authenticated_only || member_authenticated
}

/// The user an event is aimed at (`auth_id`, optionally within `auth_table`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventTarget {
    pub row_id: String,
    pub dbo_id: Option<i64>,
}

/// Whether a member receives an event; `None` targets every member.
pub fn event_reaches(target: Option<&EventTarget>, member: &Identity) -> bool {
    match target {
        None => true,
        Some(t) => {
            member.authenticated
                && member.row_id_key() == t.row_id
                && t.dbo_id.is_none_or(|d| d == member.dbo_id)
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests;
