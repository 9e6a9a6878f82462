//! The JSON that Xano's Metadata API returns for a workspace's realtime settings
//! (`GET /workspace/{id}/realtime`), read as an app's hash, on/off switch and rules.
//!
//! Field mapping (Metadata API → rule): `enabled` → `active`; `anonymous_clients`,
//! `presence` → `settings.*`; `client_public_messaging` / `…_authenticated_only` →
//! `public_messaging.active` / `.auth`; `client_private_messaging` / `…_authenticated_only`
//! → `private_messaging.active` / `.auth`; `client_authenticated_messaging` →
//! `settings.auth_channel`; `wildcard` → `settings.nested_channels`; `history` →
//! `settings.message_history`. Fields Xano adds that carry no rule (`id`, timestamps…) are
//! ignored; a missing or `null` field takes docs/protocol.md's default.

use super::xs::HISTORY_SIZES;
use crate::model::{ChannelRule, ChannelSettings, MessagingFlags};
use serde::Deserialize;
use std::path::Path;

/// An export, read.
#[derive(Debug, Clone, PartialEq)]
pub struct XanoExport {
    /// `false`: the app refuses every join with `Channel not found`.
    pub enabled: bool,
    /// The workspace's connection hash, when the export has one.
    pub hash: Option<String>,
    /// One rule per channel, in the export's order (`channels[k]` is `rules[k]`).
    pub rules: Vec<ChannelRule>,
}

#[derive(Deserialize)]
struct Doc {
    enabled: Option<bool>,
    hash: Option<String>,
    #[serde(default)]
    channels: Option<Vec<Channel>>,
}

#[derive(Deserialize)]
struct Channel {
    pattern: String,
    enabled: Option<bool>,
    description: Option<String>,
    anonymous_clients: Option<bool>,
    presence: Option<bool>,
    client_public_messaging: Option<bool>,
    client_public_messaging_authenticated_only: Option<bool>,
    client_authenticated_messaging: Option<bool>,
    client_private_messaging: Option<bool>,
    client_private_messaging_authenticated_only: Option<bool>,
    wildcard: Option<bool>,
    history: Option<u64>,
}

/// Read an export's text; `file` names it in errors (`file: channels[1].history: …`).
pub fn parse_export(text: &str, file: &str) -> Result<XanoExport, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let doc: Doc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path == "?" {
            format!("{file}: {}", e.into_inner())
        } else {
            format!("{file}: {path}: {}", e.into_inner())
        }
    })?;
    let mut rules = Vec::new();
    for (k, c) in doc.channels.unwrap_or_default().into_iter().enumerate() {
        let at = |field: &str| format!("{file}: channels[{k}].{field}");
        crate::rules::validate_pattern(&c.pattern)
            .map_err(|why| format!("{}: {why}", at("pattern")))?;
        let history = c.history.unwrap_or(0);
        if !HISTORY_SIZES.iter().any(|&h| h as u64 == history) {
            return Err(format!(
                "{}: must be one of 0, 25, 50, 100, 250, 1000 (got {history})",
                at("history")
            ));
        }
        let flag = |v: Option<bool>| v.unwrap_or(false);
        let mut rule = ChannelRule::new(&c.pattern);
        rule.description = c.description.unwrap_or_default();
        rule.active = c.enabled.unwrap_or(true);
        rule.public_messaging = MessagingFlags {
            active: flag(c.client_public_messaging),
            auth: flag(c.client_public_messaging_authenticated_only),
        };
        rule.private_messaging = MessagingFlags {
            active: flag(c.client_private_messaging),
            auth: flag(c.client_private_messaging_authenticated_only),
        };
        rule.settings = ChannelSettings {
            anonymous_clients: flag(c.anonymous_clients),
            nested_channels: flag(c.wildcard),
            message_history: history as usize,
            auth_channel: flag(c.client_authenticated_messaging),
            presence: flag(c.presence),
        };
        rules.push(rule);
    }
    Ok(XanoExport {
        enabled: doc.enabled.unwrap_or(true),
        hash: doc.hash.filter(|h| !h.is_empty()),
        rules,
    })
}

/// Read an export file.
pub fn read_export(path: &Path) -> Result<XanoExport, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_export(&text, &path.display().to_string())
}

/// Where channel `k` of an export comes from, for messages.
pub fn origin(file: &str, k: usize) -> String {
    format!("{file}: channels[{k}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/xano/realtime-export.json");

    #[test]
    fn the_xano_export_reads_unchanged() {
        let e = parse_export(FIXTURE, "realtime-export.json").unwrap();
        assert!(e.enabled);
        assert_eq!(e.hash.as_deref(), Some("Dl3HlakmBZDhezv6yml7hliTM20"));
        let chat = ChannelRule {
            description: "Anonymous chat rooms under chat/".into(),
            public_messaging: MessagingFlags {
                active: true,
                auth: false,
            },
            private_messaging: MessagingFlags {
                active: true,
                auth: false,
            },
            settings: ChannelSettings {
                anonymous_clients: true,
                nested_channels: true,
                message_history: 25,
                auth_channel: false,
                presence: true,
            },
            ..ChannelRule::new("chat")
        };
        let support = ChannelRule {
            description: "Members-only support chat with direct messages".into(),
            public_messaging: MessagingFlags {
                active: true,
                auth: true,
            },
            private_messaging: MessagingFlags {
                active: true,
                auth: true,
            },
            settings: ChannelSettings {
                anonymous_clients: false,
                nested_channels: false,
                message_history: 100,
                auth_channel: true,
                presence: true,
            },
            ..ChannelRule::new("support")
        };
        let archive = ChannelRule {
            description: "Switched off".into(),
            active: false,
            settings: ChannelSettings {
                anonymous_clients: true,
                ..Default::default()
            },
            ..ChannelRule::new("archive")
        };
        assert_eq!(e.rules, vec![chat, support, archive]);
    }

    #[test]
    fn missing_and_null_fields_take_the_defaults() {
        let e = parse_export(
            r#"{"channels":[{"pattern":"a","description":null,"presence":null,"id":9,"created_at":1}]}"#,
            "e.json",
        )
        .unwrap();
        assert!(e.enabled);
        assert_eq!(e.hash, None);
        assert_eq!(e.rules, vec![ChannelRule::new("a")]);
        let e = parse_export(r#"{"enabled":false,"hash":""}"#, "e.json").unwrap();
        assert!(!e.enabled);
        assert_eq!(e.hash, None);
        assert!(e.rules.is_empty());
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        for (text, expected) in [
            (
                r#"{"channels":[{"pattern":"a"},{"pattern":"b","history":30}]}"#,
                "e.json: channels[1].history: must be one of 0, 25, 50, 100, 250, 1000 (got 30)",
            ),
            (
                r#"{"channels":[{"pattern":"a","presence":"yes"}]}"#,
                "e.json: channels[0].presence: invalid type: string \"yes\", expected a boolean",
            ),
            (
                r#"{"channels":[{"enabled":true}]}"#,
                "e.json: channels[0]: missing field `pattern`",
            ),
            (
                r#"{"channels":[{"pattern":"a*b"}]}"#,
                "e.json: channels[0].pattern: `*` may only end a pattern",
            ),
            (r#"{"hash": 5}"#, "e.json: hash: invalid type: integer `5`"),
            ("{", "e.json: EOF while parsing an object"),
        ] {
            let err = parse_export(text, "e.json").unwrap_err();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }
}
