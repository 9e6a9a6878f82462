//! The checks behind Switchboard's fuzz targets, one function per target. Each takes the
//! raw fuzz input, runs it through the code under test and panics when a result is not
//! sane (a panic inside the code under test is a finding too).
//!
//! This file is compiled twice: as the `switchboard_fuzz` library that the libFuzzer
//! targets in `fuzz_targets/` call, and as a module of `tests/fuzz_corpus.rs`
//! (`#[path = "../fuzz/src/lib.rs"]`), which replays every file of `fuzz/corpus/` in
//! CI. So it may use only crates the root package has too (switchboard, serde_json,
//! toml) and must not refer to `crate::`.
//!
//! Nothing here reads or writes files, opens sockets or depends on time, so a finding
//! always replays.

use serde_json::Value;
use switchboard::auth::Identity;
use switchboard::config::{ChannelRule, Config, ConfigError, MessagingFlags};
use switchboard::protocol::{self, Action};
use switchboard::rules::{self, Denied, EventTarget, RuleSet};
use switchboard::xano::xs;

// ------------------------------------------------------------------ frame_parser

/// `parse_inbound` (and `join_request` on joins) on one text frame: every refusal is an
/// `Invalid frame: …` naming the channel exactly when the frame gave one as a string,
/// every accepted frame says what its JSON says, and the error frame we would send back
/// is well-formed JSON.
pub fn frame_parser(data: &[u8]) {
    // The server turns binary and non-UTF-8 frames away before parsing; the lossy text
    // still makes a useful parser input.
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let json: Option<Value> = serde_json::from_str(text).ok();
    // What the frame itself says: the options in force (`options`, else the legacy
    // `commandOptions`, a null counting as absent) and their channel when it is a string.
    let object = json.as_ref().and_then(Value::as_object);
    let pick = |modern: &str, legacy: &str| -> Option<Value> {
        let o = object?;
        match o.get(modern) {
            Some(v) if !v.is_null() => Some(v.clone()),
            _ => o.get(legacy).filter(|v| !v.is_null()).cloned(),
        }
    };
    let options = pick("options", "commandOptions");
    let given_channel = options
        .as_ref()
        .and_then(|o| o.get("channel"))
        .and_then(Value::as_str)
        .map(str::to_string);

    match protocol::parse_inbound(text) {
        Ok(frame) => {
            let object = object.expect("an accepted frame is a JSON object");
            let action = pick("action", "command");
            let expected = match &frame.action {
                Action::Join => "join",
                Action::Leave => "leave",
                Action::Message => "message",
                Action::History => "history",
            };
            assert_eq!(action.as_ref().and_then(Value::as_str), Some(expected));
            assert_eq!(Some(&frame.channel), given_channel.as_ref());
            let options = options.unwrap_or(Value::Object(Default::default()));
            assert_eq!(Value::Object(frame.options.clone()), options);
            let payload: Value =
                serde_json::from_str(frame.payload.get()).expect("the payload is JSON");
            assert_eq!(
                &payload,
                object.get("payload").unwrap_or(&Value::Null),
                "the payload is kept as sent"
            );
            assert_eq!(
                frame.requested_authenticated(),
                frame.options.get("authenticated") == Some(&Value::Bool(true))
            );
            assert_eq!(
                frame.target_socket(),
                frame.options.get("socketId").and_then(Value::as_str)
            );
            if frame.action == Action::Join {
                match frame.join_request() {
                    Ok(req) => {
                        let flag = |k: &str| payload.get(k) == Some(&Value::Bool(true));
                        assert_eq!(req.history, flag("history"));
                        assert_eq!(req.presence, flag("presence"));
                    }
                    Err(e) => {
                        assert_eq!(e.channel.as_deref(), Some(frame.channel.as_str()));
                        check_invalid_frame(&e);
                    }
                }
            }
            // What delivering it would store and send: valid JSON that keeps the payload.
            let sender = protocol::shared_json(&Identity::anonymous("s".into()).client_json());
            let stored = protocol::message_json(
                &frame.channel,
                frame.requested_authenticated(),
                frame.target_socket(),
                &sender,
                &frame.payload,
            );
            let stored: Value = serde_json::from_slice(&stored).expect("stored message is JSON");
            assert_eq!(stored["payload"], payload);
            assert_eq!(
                stored["options"]["channel"].as_str(),
                Some(frame.channel.as_str())
            );
        }
        Err(e) => {
            check_invalid_frame(&e);
            match (&json, object) {
                // Not JSON, or JSON but not an object: nothing names a channel.
                (None, _) | (Some(_), None) => assert_eq!(e.channel, None),
                // An object with a key given twice is refused before its options are read
                // ("not a JSON object"), so its error names no channel.
                (Some(_), Some(_)) if e.what == "not a JSON object" => {
                    assert_eq!(e.channel, None)
                }
                (Some(_), Some(_)) => assert_eq!(e.channel, given_channel),
            }
        }
    }
}

/// An `InvalidFrame` reads "Invalid frame: <what>", is short, and encodes into a
/// well-formed error frame.
fn check_invalid_frame(e: &protocol::InvalidFrame) {
    let message = e.message();
    assert!(message.starts_with("Invalid frame: "), "{message}");
    assert!(!e.what.is_empty());
    assert!(
        e.what.len() <= 512,
        "an error quotes at most a short piece of the frame: {} bytes",
        e.what.len()
    );
    let frame = protocol::error_frame(e.channel.as_deref(), &message);
    let json = websocket_text(&frame);
    let value: Value = serde_json::from_slice(json).expect("error frames are JSON");
    assert_eq!(value["action"], "error");
    assert_eq!(value["payload"]["message"].as_str(), Some(message.as_str()));
    assert_eq!(value["options"]["channel"].as_str(), e.channel.as_deref());
}

/// The payload of an unmasked single WebSocket frame as `protocol::text_frame` builds it.
fn websocket_text(frame: &[u8]) -> &[u8] {
    assert_eq!(frame[0], 0x81, "a final text frame");
    let (len, start) = match frame[1] {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&frame[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        n => (n as usize, 2),
    };
    assert_eq!(frame.len(), start + len);
    &frame[start..]
}

// ------------------------------------------------------------------ config_loader

/// The line that starts environment overrides in a `config_loader` input: the TOML above
/// it, one `NAME=VALUE` per line below it (a TOML comment, so the whole input is TOML).
pub const ENV_MARKER: &str = "#--env--";

/// Keys that make the loader read files (`channels_dir`, `xano_export`): inputs that set
/// them are skipped, so a fuzz input can never read `/dev/zero` or the file system.
const FILE_KEYS: [&str; 2] = ["channels_dir", "xano_export"];

fn names_file_key(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(t) => t
            .iter()
            .any(|(k, v)| FILE_KEYS.contains(&k.as_str()) || names_file_key(v)),
        toml::Value::Array(a) => a.iter().any(names_file_key),
        _ => false,
    }
}

/// A `config_loader` input as TOML text and environment variables; None when it sets a
/// file key anywhere (in the TOML, an override's name or an override's TOML value), as
/// such an input is skipped.
pub fn split_config_input(input: &str) -> Option<(&str, Vec<(String, String)>)> {
    let (text, env) = match input.find(ENV_MARKER) {
        Some(at) => (&input[..at], &input[at + ENV_MARKER.len()..]),
        None => (input, ""),
    };
    let mut vars = Vec::new();
    for line in env.lines() {
        let Some((name, raw)) = line.split_once('=') else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if FILE_KEYS.iter().any(|k| lower.contains(k)) {
            return None;
        }
        // The loader types an override as the TOML value `v = <raw>` when it parses so:
        // an inline table could name a file key too.
        if let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            if names_file_key(&toml::Value::Table(t)) {
                return None;
            }
        }
        vars.push((name.to_string(), raw.to_string()));
    }
    if let Ok(value) = toml::from_str::<toml::Value>(text) {
        if names_file_key(&value) {
            return None;
        }
    }
    Some((text, vars))
}

/// `Config::from_toml_with_env` on TOML text plus `SWITCHBOARD__…` overrides: it returns
/// a config that validates, whose every app's rules index and verify, or an error that
/// says where.
pub fn config_loader(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Some((text, vars)) = split_config_input(input) else {
        return;
    };
    match Config::from_toml_with_env(text, vars) {
        Ok(config) => {
            config.validate().expect("a loaded config validates again");
            for app in &config.apps {
                assert!(!app.hash.is_empty() && !app.hash.contains('/'));
                assert!(app.api_key.len() >= 8);
                switchboard::auth::TokenVerifier::from_config(app)
                    .expect("a loaded app's JWT settings build a verifier");
                let set = RuleSet::new(&app.channels);
                for rule in &app.channels {
                    rules::validate_pattern(&rule.pattern).expect("loaded patterns are valid");
                    assert!(rule.settings.message_history <= 1000);
                    assert!(rule.trigger_timeout_ms > 0);
                    if !rule.pattern.ends_with('*') {
                        // An exact pattern governs its own name.
                        let found = set.find(&rule.pattern).expect("an exact rule matches");
                        assert_eq!(found.pattern, rule.pattern);
                    }
                }
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
            match &e {
                ConfigError::Invalid { why, .. } => assert!(!why.is_empty(), "{shown}"),
                ConfigError::Env { var, .. } => assert!(var.starts_with("SWITCHBOARD__")),
                ConfigError::Toml(_) | ConfigError::Read { .. } => {}
            }
            assert!(
                !matches!(e, ConfigError::Read { .. }),
                "no file is read: {shown}"
            );
        }
    }
}

// ------------------------------------------------------------------ rule_matcher

/// The identities every `rule_matcher` decision is taken for.
fn identities() -> Vec<Identity> {
    let user = |socket: &str, row_id: Value, dbo_id: i64, roles: &[&str]| Identity {
        socket_id: socket.into(),
        authenticated: true,
        dbo_id,
        row_id,
        extras: Value::Object(Default::default()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    vec![
        Identity::anonymous("anon".into()),
        user("user42", Value::from(42), 7, &[]),
        user("user42s", Value::from("42"), 8, &[]),
        user("other", Value::from(43), 7, &[]),
        user("holder", Value::from(7), 7, &["admin", "writer"]),
    ]
}

/// A `rule_matcher` input, as text: one rule a line (`pattern flag flag …`) and channel
/// names on lines starting with `? `. Flags: `inactive anon nested authch presence pub
/// pubauth priv privauth owner join=ROLE publish=ROLE`; unknown words are ignored. Rules
/// whose pattern is invalid or repeated are skipped, as the config loader refuses them.
pub fn parse_rule_input(text: &str) -> (Vec<ChannelRule>, Vec<String>) {
    let mut rules: Vec<ChannelRule> = Vec::new();
    let mut names = Vec::new();
    for line in text.split('\n') {
        if let Some(name) = line.strip_prefix("? ") {
            names.push(name.to_string());
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(pattern) = words.next() else {
            continue;
        };
        if rules::validate_pattern(pattern).is_err() || rules.iter().any(|r| r.pattern == pattern) {
            continue;
        }
        let mut rule = ChannelRule::new(pattern);
        for word in words {
            match word {
                "inactive" => rule.active = false,
                "anon" => rule.settings.anonymous_clients = true,
                "nested" => rule.settings.nested_channels = true,
                "authch" => rule.settings.auth_channel = true,
                "presence" => rule.settings.presence = true,
                "pub" => rule.public_messaging.active = true,
                "pubauth" => {
                    rule.public_messaging = MessagingFlags {
                        active: true,
                        auth: true,
                    }
                }
                "priv" => rule.private_messaging.active = true,
                "privauth" => {
                    rule.private_messaging = MessagingFlags {
                        active: true,
                        auth: true,
                    }
                }
                "owner" => rule.owner_segment = true,
                w => {
                    if let Some(role) = w.strip_prefix("join=") {
                        rule.join_roles.push(role.into());
                    } else if let Some(role) = w.strip_prefix("publish=") {
                        rule.publish_roles.push(role.into());
                    }
                }
            }
        }
        rules.push(rule);
    }
    (rules, names)
}

/// A straightforward reading of docs/protocol.md section 4, independent of `RuleSet`: the
/// exact rule, else the longest wildcard prefix (`p*`, or `x/` for a nested `x`) that
/// the name extends by at least one character, the first written among equals.
fn reference_find<'r>(rules: &'r [ChannelRule], name: &str) -> Option<&'r ChannelRule> {
    if let Some(exact) = rules.iter().find(|r| r.pattern == name) {
        return Some(exact);
    }
    let mut best: Option<(usize, &ChannelRule)> = None;
    for rule in rules {
        let prefix = match rule.pattern.strip_suffix('*') {
            Some(p) => p.to_string(),
            None if rule.settings.nested_channels => format!("{}/", rule.pattern),
            None => continue,
        };
        if name.len() > prefix.len()
            && name.starts_with(&prefix)
            && best.is_none_or(|(len, _)| prefix.len() > len)
        {
            best = Some((prefix.len(), rule));
        }
    }
    best.map(|(_, r)| r)
}

/// Differential checks of `RuleSet` and the permission functions against the reference
/// above and the rules of docs/protocol.md sections 3-4, for every name and identity.
pub fn rule_matcher(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (rule_list, mut names) = parse_rule_input(&text);
    let set = RuleSet::new(&rule_list);
    // Names derived from the rules: each pattern, its prefix, one character more.
    for r in &rule_list {
        let body = r.pattern.trim_end_matches('*');
        names.extend([
            body.to_string(),
            format!("{body}x"),
            format!("{body}/"),
            format!("{body}/x"),
        ]);
    }
    names.truncate(64);
    let who = identities();

    for name in &names {
        let valid = !name.is_empty()
            && name.len() <= 255
            && !name
                .chars()
                .any(|c| c == '*' || c.is_whitespace() || c.is_control());
        assert_eq!(
            rules::validate_channel_name(name).is_ok(),
            valid,
            "{name:?}"
        );

        let found = set.find(name);
        let expected = reference_find(&rule_list, name);
        assert_eq!(
            found.map(|r| r.pattern.as_str()),
            expected.map(|r| r.pattern.as_str()),
            "find({name:?})"
        );

        // covers_prefix must say yes whenever a longer name with this prefix has a rule.
        if found.is_some() {
            for (cut, _) in name.char_indices() {
                assert!(
                    set.covers_prefix(&name[..cut]),
                    "{name:?} has a rule but covers_prefix({:?}) is false",
                    &name[..cut]
                );
            }
        }

        let Some(rule) = found else { continue };
        for w in &who {
            let join = rules::check_join(rule, w, name);
            // The last segment, after the final `/` or `:` (section 4).
            let segment = name.rsplit(['/', ':']).next().unwrap_or(name);
            let owner_ok = w.authenticated && segment == w.row_id_key();
            let expected_join = if !rule.active {
                Err(Denied::ChannelNotFound)
            } else if !w.authenticated && !rule.settings.anonymous_clients {
                Err(Denied::AnonymousNotAllowed)
            } else if (!rule.join_roles.is_empty()
                && !w.roles.iter().any(|r| rule.join_roles.contains(r)))
                || (rule.owner_segment && !owner_ok)
            {
                // Section 4's ACLs: a join role, and owning the channel's last segment.
                Err(Denied::JoinNotAllowed)
            } else {
                Ok(())
            };
            assert_eq!(join, expected_join, "join {name:?} as {}", w.socket_id);

            let may_publish = rule.publish_roles.is_empty()
                || w.roles.iter().any(|r| rule.publish_roles.contains(r));
            for requested in [false, true] {
                let public = rules::check_public_message(rule, w, requested);
                let expected_public = if !rule.public_messaging.active {
                    Err(Denied::PublicNotAllowed)
                } else if rule.public_messaging.auth && !w.authenticated {
                    Err(Denied::AuthRequired)
                } else if !may_publish {
                    Err(Denied::PublishNotAllowed)
                } else {
                    Ok(requested || (w.authenticated && rule.settings.auth_channel))
                };
                assert_eq!(
                    public, expected_public,
                    "public on {name:?} by {}",
                    w.socket_id
                );
            }
            for target in [None, Some(false), Some(true)] {
                let direct = rules::check_direct_message(rule, w, target);
                let private = rule.private_messaging;
                let expected_direct = if !private.active {
                    Err(Denied::PrivateNotAllowed)
                } else if private.auth && !w.authenticated {
                    Err(Denied::AuthRequired)
                } else if !may_publish {
                    Err(Denied::PublishNotAllowed)
                } else if target.is_none() {
                    Err(Denied::RecipientNotFound)
                } else if private.auth && target == Some(false) {
                    Err(Denied::AuthRequired)
                } else {
                    Ok(())
                };
                assert_eq!(
                    direct, expected_direct,
                    "direct on {name:?} by {}",
                    w.socket_id
                );
            }
            // Events aimed at a user reach that user's authenticated sockets only.
            for (row_id, dbo_id) in [("42", None), ("42", Some(7)), ("0", None), ("7", Some(8))] {
                let target = EventTarget {
                    row_id: row_id.into(),
                    dbo_id,
                };
                let reached = rules::event_reaches(Some(&target), w);
                let expected = w.authenticated
                    && w.row_id_key() == row_id
                    && dbo_id.is_none_or(|d| d == w.dbo_id);
                assert_eq!(
                    reached, expected,
                    "event for {row_id} {dbo_id:?} to {}",
                    w.socket_id
                );
                assert!(rules::event_reaches(None, w));
            }
            assert!(rules::reaches(false, w.authenticated));
            assert_eq!(rules::reaches(true, w.authenticated), w.authenticated);
        }
    }
}

// ------------------------------------------------------------------ xanoscript

/// `xs::parse_str` on XanoScript text: errors point inside the text; parsed rules are
/// valid and survive `write_xs` → `parse_str` unchanged.
pub fn xanoscript(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match xs::parse_str(text, "fuzz.xs") {
        Ok(parsed) => {
            let rules: Vec<ChannelRule> = parsed.iter().map(|r| r.rule.clone()).collect();
            for r in &parsed {
                assert!(r.line >= 1 && r.column >= 1);
                assert!(r.origin().starts_with("fuzz.xs:"));
                rules::validate_pattern(&r.rule.pattern).expect("parsed patterns are valid");
                assert!(xs::HISTORY_SIZES.contains(&r.rule.settings.message_history));
            }
            let (written, notes) = xs::write_xs(&rules);
            assert!(
                notes.is_empty(),
                "XanoScript rules need no notes: {notes:?}"
            );
            let again: Vec<ChannelRule> = xs::parse_str(&written, "again.xs")
                .unwrap_or_else(|e| panic!("written XanoScript parses: {e}\n{written}"))
                .into_iter()
                .map(|r| r.rule)
                .collect();
            assert_eq!(again, rules, "write_xs round trip\n{written}");
        }
        Err(e) => {
            assert_eq!(e.file, "fuzz.xs");
            assert!(!e.message.is_empty());
            let lines = text.split('\n').count();
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(e.column >= 1);
            assert!(e.to_string().starts_with("fuzz.xs:"));
        }
    }
}

/// A target's check.
pub type Check = fn(&[u8]);

/// The four targets by name, for the corpus replay.
pub const TARGETS: [(&str, Check); 4] = [
    ("frame_parser", frame_parser),
    ("config_loader", config_loader),
    ("rule_matcher", rule_matcher),
    ("xanoscript", xanoscript),
];
