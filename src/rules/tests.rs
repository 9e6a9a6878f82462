//! Table tests of channel matching and every permission decision (`src/rules.rs`).

use super::*;
use crate::model::{ChannelSettings, MessagingFlags};
use serde_json::json;

fn anon() -> Identity {
    Identity::anonymous("s-anon".into())
}

fn user(id: i64, roles: &[&str]) -> Identity {
    Identity {
        socket_id: format!("s-{id}"),
        authenticated: true,
        dbo_id: 7,
        row_id: json!(id),
        extras: json!({}),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    }
}

fn rule(pattern: &str) -> ChannelRule {
    ChannelRule::new(pattern)
}

#[test]
fn channel_names() {
    let long = "a".repeat(256);
    let max = "a".repeat(255);
    for (name, ok) in [
        ("chat/lobby", true),
        ("room:1", true),
        ("ünïcode", true),
        (max.as_str(), true),
        ("", false),
        (long.as_str(), false),
        ("has space", false),
        ("tab\there", false),
        ("nl\n", false),
        ("chat/*", false),
        ("a*b", false),
    ] {
        assert_eq!(validate_channel_name(name).is_ok(), ok, "{name:?}");
    }
}

#[test]
fn patterns() {
    for (p, ok) in [
        ("chat/*", true),
        ("room:*", true),
        ("announcements", true),
        ("*", true),
        ("a*b", false),
        ("**", false),
        ("", false),
        ("a b*", false),
    ] {
        assert_eq!(validate_pattern(p).is_ok(), ok, "{p:?}");
    }
}

#[test]
fn matching_prefers_exact_then_longest_prefix() {
    let mut nested = rule("forum");
    nested.settings.nested_channels = true;
    let set = RuleSet::new(&[
        rule("chat/*"),
        rule("chat/vip/*"),
        rule("chat/special"),
        rule("room:*"),
        rule("announcements"),
        nested,
    ]);
    for (name, expected) in [
        ("chat/lobby", Some("chat/*")),
        ("chat/vip/1", Some("chat/vip/*")),
        ("chat/vip/", Some("chat/*")),
        ("chat/special", Some("chat/special")),
        ("chat/", None),
        ("chat", None),
        ("room:42", Some("room:*")),
        ("room:", None),
        ("announcements", Some("announcements")),
        ("announcements/x", None),
        ("forum", Some("forum")),
        ("forum/a/b", Some("forum")),
        ("forum/", None),
        ("forumx", None),
        ("other", None),
    ] {
        assert_eq!(
            set.find(name).map(|r| r.pattern.as_str()),
            expected,
            "{name}"
        );
    }
}

#[test]
fn pattern_events_need_a_covering_rule() {
    let set = RuleSet::new(&[rule("chat/*"), rule("news/today")]);
    for (prefix, ok) in [
        ("chat/", true),
        ("chat/room", true),
        ("ch", true),
        ("news/", true),
        ("news/today", false),
        ("other/", false),
    ] {
        assert_eq!(set.covers_prefix(prefix), ok, "{prefix}");
    }
}

#[test]
fn last_segments() {
    for (name, seg) in [
        ("user:42", "42"),
        ("user/42", "42"),
        ("a/b:c", "c"),
        ("plain", "plain"),
    ] {
        assert_eq!(last_segment(name), seg);
    }
}

#[test]
fn join_decisions() {
    let open = ChannelRule {
        settings: ChannelSettings {
            anonymous_clients: true,
            ..Default::default()
        },
        ..rule("chat/*")
    };
    let members = rule("members/*");
    let inactive = ChannelRule {
        active: false,
        ..open.clone()
    };
    let admins = ChannelRule {
        join_roles: vec!["admin".into()],
        ..members.clone()
    };
    let owned = ChannelRule {
        owner_segment: true,
        ..members.clone()
    };
    let anon_owned = ChannelRule {
        owner_segment: true,
        ..open.clone()
    };
    use Denied::*;
    let cases: Vec<(&ChannelRule, Identity, &str, Result<(), Denied>)> = vec![
        (&open, anon(), "chat/a", Ok(())),
        (&open, user(1, &[]), "chat/a", Ok(())),
        (&inactive, user(1, &[]), "chat/a", Err(ChannelNotFound)),
        (&inactive, anon(), "chat/a", Err(ChannelNotFound)),
        (&members, anon(), "members/a", Err(AnonymousNotAllowed)),
        (&members, user(1, &[]), "members/a", Ok(())),
        (&admins, user(1, &[]), "members/a", Err(JoinNotAllowed)),
        (&admins, user(1, &["admin"]), "members/a", Ok(())),
        (&admins, anon(), "members/a", Err(AnonymousNotAllowed)),
        (&owned, user(42, &[]), "user:42", Ok(())),
        (&owned, user(43, &[]), "user:42", Err(JoinNotAllowed)),
        (&anon_owned, anon(), "user:0", Err(JoinNotAllowed)),
    ];
    for (rule, who, channel, expected) in cases {
        assert_eq!(
            check_join(rule, &who, channel),
            expected,
            "{} {channel}",
            who.socket_id
        );
    }
}

#[test]
fn public_message_decisions() {
    let on = MessagingFlags {
        active: true,
        auth: false,
    };
    let auth_only = MessagingFlags {
        active: true,
        auth: true,
    };
    let base = rule("c");
    let public = ChannelRule {
        public_messaging: on,
        ..base.clone()
    };
    let public_auth = ChannelRule {
        public_messaging: auth_only,
        ..base.clone()
    };
    let auth_channel = ChannelRule {
        public_messaging: on,
        settings: ChannelSettings {
            auth_channel: true,
            ..Default::default()
        },
        ..base.clone()
    };
    let roles = ChannelRule {
        public_messaging: on,
        publish_roles: vec!["writer".into()],
        ..base.clone()
    };
    use Denied::*;
    // (rule, sender, requested authenticated, expected: Ok(authenticated-only audience))
    let cases: Vec<(&ChannelRule, Identity, bool, Result<bool, Denied>)> = vec![
        (&base, user(1, &[]), false, Err(PublicNotAllowed)),
        (&public, anon(), false, Ok(false)),
        (&public, anon(), true, Ok(true)),
        (&public, user(1, &[]), false, Ok(false)),
        (&public, user(1, &[]), true, Ok(true)),
        (&public_auth, anon(), false, Err(AuthRequired)),
        (&public_auth, user(1, &[]), false, Ok(false)),
        (&auth_channel, user(1, &[]), false, Ok(true)),
        (&auth_channel, anon(), false, Ok(false)),
        (&roles, user(1, &[]), false, Err(PublishNotAllowed)),
        (&roles, user(1, &["writer"]), false, Ok(false)),
    ];
    for (i, (rule, who, requested, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            check_public_message(rule, &who, requested),
            expected,
            "case {i}"
        );
    }
}

#[test]
fn direct_message_decisions() {
    let base = rule("c");
    let private = ChannelRule {
        private_messaging: MessagingFlags {
            active: true,
            auth: false,
        },
        ..base.clone()
    };
    let private_auth = ChannelRule {
        private_messaging: MessagingFlags {
            active: true,
            auth: true,
        },
        ..base.clone()
    };
    use Denied::*;
    let cases: Vec<(&ChannelRule, Identity, Option<bool>, Result<(), Denied>)> = vec![
        (&base, user(1, &[]), Some(true), Err(PrivateNotAllowed)),
        (&private, anon(), Some(false), Ok(())),
        (&private, anon(), None, Err(RecipientNotFound)),
        (&private_auth, anon(), Some(true), Err(AuthRequired)),
        (&private_auth, user(1, &[]), Some(false), Err(AuthRequired)),
        (&private_auth, user(1, &[]), Some(true), Ok(())),
        (&private_auth, user(1, &[]), None, Err(RecipientNotFound)),
    ];
    for (i, (rule, who, target, expected)) in cases.into_iter().enumerate() {
        assert_eq!(
            check_direct_message(rule, &who, target),
            expected,
            "case {i}"
        );
    }
}

#[test]
fn audiences() {
    assert!(reaches(false, false));
    assert!(reaches(false, true));
    assert!(!reaches(true, false));
    assert!(reaches(true, true));

    let t = EventTarget {
        row_id: "42".into(),
        dbo_id: None,
    };
    let t_table = EventTarget {
        row_id: "42".into(),
        dbo_id: Some(8),
    };
    assert!(event_reaches(None, &anon()));
    assert!(event_reaches(Some(&t), &user(42, &[])));
    assert!(!event_reaches(Some(&t), &user(41, &[])));
    assert!(!event_reaches(Some(&t_table), &user(42, &[])));
    let mut anon42 = anon();
    anon42.row_id = json!(42);
    assert!(!event_reaches(Some(&t), &anon42));
}

/// Issue 12, item 10: with `owner_table`, user 42 of another auth table does not own
/// `user:42`; without it, any table's user 42 does (apps with one auth table).
#[test]
fn owner_table_pins_the_auth_table_of_the_owner() {
    let mut pinned = rule("user:*");
    pinned.owner_segment = true;
    pinned.owner_table = Some(7);
    let mut other_table = user(42, &[]);
    other_table.dbo_id = 8;
    assert_eq!(check_join(&pinned, &user(42, &[]), "user:42"), Ok(()));
    assert_eq!(
        check_join(&pinned, &other_table, "user:42"),
        Err(Denied::JoinNotAllowed)
    );
    assert_eq!(
        check_join(&pinned, &user(43, &[]), "user:42"),
        Err(Denied::JoinNotAllowed)
    );
    let mut any_table = rule("user:*");
    any_table.owner_segment = true;
    assert_eq!(check_join(&any_table, &other_table, "user:42"), Ok(()));
}
