//! Property tests: rule matching, permission decisions, channel names and the frame
//! parser, each checked against a small reference model written here from docs/protocol.md
//! (sections 2-4). The models never call the code under test to compute an expectation;
//! they only build its inputs (`ChannelRule`, `Identity`) and compare its answers.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use switchboard::auth::Identity;
use switchboard::config::{ChannelRule, MessagingFlags};
use switchboard::protocol::{parse_inbound, Action};
use switchboard::rules::{
    check_direct_message, check_join, check_public_message, event_reaches, reaches,
    validate_channel_name, validate_pattern, Denied, EventTarget, RuleSet,
};

const CASES: u32 = 512;

// =================================================================== rule matching

/// A rule as the reference sees it: its pattern and whether it is nested.
#[derive(Debug, Clone)]
struct RuleSpec {
    pattern: String,
    nested: bool,
}

/// How the reference matches a name to one rule (docs/protocol.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// The pattern is the name.
    Exact,
    /// A prefix the name extends by at least one character: `p*`, or `x/` for a nested
    /// `x`; carries the prefix length.
    Prefix(usize),
}

fn match_of(rule: &RuleSpec, name: &str) -> Option<Match> {
    match rule.pattern.strip_suffix('*') {
        Some(prefix) => (name.len() > prefix.len() && name.starts_with(prefix))
            .then_some(Match::Prefix(prefix.len())),
        None if rule.pattern == name => Some(Match::Exact),
        None if rule.nested => {
            let prefix = format!("{}/", rule.pattern);
            (name.len() > prefix.len() && name.starts_with(&prefix))
                .then_some(Match::Prefix(prefix.len()))
        }
        None => None,
    }
}

/// The index of the governing rule: an exact rule wins; else the longest prefix; the
/// first rule written wins a tie.
fn reference_find(rules: &[RuleSpec], name: &str) -> Option<usize> {
    let mut best: Option<(usize, Match)> = None;
    for (i, rule) in rules.iter().enumerate() {
        let Some(m) = match_of(rule, name) else {
            continue;
        };
        let better = match (best.map(|b| b.1), m) {
            (None, _) => true,
            (Some(Match::Exact), _) => false,
            (Some(Match::Prefix(_)), Match::Exact) => true,
            (Some(Match::Prefix(old)), Match::Prefix(new)) => new > old,
        };
        if better {
            best = Some((i, m));
        }
    }
    best.map(|b| b.0)
}

/// Whether some name longer than `prefix` and starting with it has a rule. Such a name
/// exists exactly when one of these witnesses is one: every exact pattern, every
/// rule prefix plus a character, and `prefix` plus a character.
fn reference_covers(rules: &[RuleSpec], prefix: &str) -> bool {
    let mut witnesses = vec![format!("{prefix}a")];
    for r in rules {
        match r.pattern.strip_suffix('*') {
            Some(p) => witnesses.push(format!("{p}a")),
            None => {
                witnesses.push(r.pattern.clone());
                witnesses.push(format!("{}/a", r.pattern));
            }
        }
    }
    witnesses.iter().any(|w| {
        w.len() > prefix.len() && w.starts_with(prefix) && reference_find(rules, w).is_some()
    })
}

/// Names over a small alphabet, so that rules and names collide often.
fn small_name(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(vec!['a', 'b', '/', ':', 'é']), 0..=max)
        .prop_map(|cs| cs.into_iter().collect())
}

/// Rule bodies: often over just `a` and `/`, so that a nested `x` and a wildcard `x/*`
/// (the one way two distinct rules share a prefix) turn up together.
fn rule_body() -> impl Strategy<Value = String> {
    prop_oneof![
        small_name(5),
        prop::collection::vec(select(vec!['a', '/']), 0..=3)
            .prop_map(|cs| cs.into_iter().collect()),
    ]
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (rule_body(), any::<bool>(), any::<bool>()).prop_filter_map(
        "an exact pattern needs a character",
        |(body, wildcard, nested)| {
            if wildcard {
                Some(RuleSpec {
                    pattern: format!("{body}*"),
                    nested,
                })
            } else if body.is_empty() {
                None
            } else {
                Some(RuleSpec {
                    pattern: body,
                    nested,
                })
            }
        },
    )
}

/// Up to 8 rules with distinct patterns (the config loader refuses a repeated pattern).
fn rule_specs() -> impl Strategy<Value = Vec<RuleSpec>> {
    prop::collection::vec(rule_spec(), 0..8).prop_map(|specs| {
        let mut out: Vec<RuleSpec> = Vec::new();
        for s in specs {
            if !out.iter().any(|o| o.pattern == s.pattern) {
                out.push(s);
            }
        }
        out
    })
}

fn to_rules(specs: &[RuleSpec]) -> Vec<ChannelRule> {
    specs
        .iter()
        .map(|s| {
            let mut r = ChannelRule::new(&s.pattern);
            r.settings.nested_channels = s.nested;
            r
        })
        .collect()
}

/// Random names plus names around every rule's pattern.
fn names_for(specs: &[RuleSpec], random: Vec<String>) -> Vec<String> {
    let mut names = random;
    for s in specs {
        let body = s.pattern.trim_end_matches('*');
        for n in [
            body.to_string(),
            format!("{body}a"),
            format!("{body}/"),
            format!("{body}/a"),
            format!("{body}/a/b"),
        ] {
            names.push(n);
        }
    }
    names
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn find_picks_the_rule_the_reference_picks(
        specs in rule_specs(),
        random in prop::collection::vec(small_name(8), 0..12),
    ) {
        let rules = to_rules(&specs);
        let set = RuleSet::new(&rules);
        for name in names_for(&specs, random) {
            let found = set.find(&name).map(|r| r.pattern.clone());
            let expected = reference_find(&specs, &name).map(|i| specs[i].pattern.clone());
            prop_assert_eq!(found, expected, "find({:?}) with rules {:?}", name, specs);
        }
    }

    #[test]
    fn covers_prefix_agrees_with_the_reference(
        specs in rule_specs(),
        random in prop::collection::vec(small_name(6), 0..8),
    ) {
        let set = RuleSet::new(&to_rules(&specs));
        let mut prefixes = Vec::new();
        for name in names_for(&specs, random) {
            for (cut, _) in name.char_indices() {
                prefixes.push(name[..cut].to_string());
            }
            prefixes.push(name);
        }
        for prefix in prefixes {
            prop_assert_eq!(
                set.covers_prefix(&prefix),
                reference_covers(&specs, &prefix),
                "covers_prefix({:?}) with rules {:?}", prefix, specs
            );
        }
    }
}

/// The tie rules, spelled out: exact beats a longer wildcard, a nested rule's `x/` ties
/// with a wildcard `x/*` and the first written wins, a wildcard needs one more character.
#[test]
fn matching_ties_and_edges() {
    let nested = |p: &str| RuleSpec {
        pattern: p.into(),
        nested: true,
    };
    let plain = |p: &str| RuleSpec {
        pattern: p.into(),
        nested: false,
    };
    for (specs, name, expected) in [
        (vec![plain("x/*"), nested("x")], "x/a", Some("x/*")),
        (vec![nested("x"), plain("x/*")], "x/a", Some("x")),
        (vec![plain("a*"), plain("a/b")], "a/b", Some("a/b")),
        (vec![plain("a/*"), plain("a/b*")], "a/bc", Some("a/b*")),
        (vec![plain("a/*"), plain("a/b*")], "a/b", Some("a/*")),
        (vec![plain("a/*")], "a/", None),
        (vec![nested("a")], "a/", None),
        (vec![nested("a")], "ab", None),
        (vec![plain("*")], "q", Some("*")),
        (vec![plain("*")], "", None),
    ] {
        let reference = reference_find(&specs, name).map(|i| specs[i].pattern.as_str());
        assert_eq!(reference, expected, "reference {name:?} {specs:?}");
        let set = RuleSet::new(&to_rules(&specs));
        assert_eq!(
            set.find(name).map(|r| r.pattern.as_str()),
            expected,
            "{name:?} {specs:?}"
        );
    }
}

// =================================================================== channel names

/// Unicode's White_Space property, listed (docs/protocol.md: "no … whitespace").
const WHITE_SPACE: &[char] = &[
    '\u{9}', '\u{a}', '\u{b}', '\u{c}', '\u{d}', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
    '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}', '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}',
    '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
];

/// Control characters (general category Cc): C0, DEL and C1.
fn reference_is_control(c: char) -> bool {
    let n = c as u32;
    n < 0x20 || (0x7f..=0x9f).contains(&n)
}

fn reference_name_ok(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c != '*' && !reference_is_control(c) && !WHITE_SPACE.contains(&c))
}

/// A pattern: a name, or a prefix (maybe empty) and one final `*`; 1 to 255 bytes.
fn reference_pattern_ok(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(body) => {
            pattern.len() <= 255
                && body
                    .chars()
                    .all(|c| c != '*' && !reference_is_control(c) && !WHITE_SPACE.contains(&c))
        }
        None => reference_name_ok(pattern),
    }
}

/// Characters that matter for names: 1- to 4-byte UTF-8, `*`, every kind of space,
/// controls, and look-alikes that are neither (zero-width space, BOM, soft hyphen).
fn name_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => select(vec!['a', 'z', '0', '/', ':', '-', '_', '.', 'é', '日', '😀']),
        2 => select(vec!['*', ' ', '\t', '\n', '\r', '\u{0}', '\u{1f}', '\u{7f}', '\u{85}',
            '\u{9f}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{2028}', '\u{2029}',
            '\u{202f}', '\u{205f}', '\u{3000}', '\u{200b}', '\u{feff}', '\u{ad}', '\u{a1}']),
        1 => any::<char>(),
    ]
}

/// Names around the 255-byte limit: a run of `a` and a few interesting characters.
fn channel_name() -> impl Strategy<Value = String> {
    (
        prop_oneof![0usize..8, 240usize..260],
        prop::collection::vec(name_char(), 0..5),
        any::<bool>(),
    )
        .prop_map(|(run, chars, chars_first)| {
            let run = "a".repeat(run);
            let chars: String = chars.into_iter().collect();
            if chars_first {
                chars + &run
            } else {
                run + &chars
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 4))]

    #[test]
    fn channel_names_agree_with_the_reference(name in channel_name()) {
        prop_assert_eq!(validate_channel_name(&name).is_ok(), reference_name_ok(&name), "{:?}", name);
        prop_assert_eq!(validate_pattern(&name).is_ok(), reference_pattern_ok(&name), "pattern {:?}", name);
        let wildcard = format!("{name}*");
        prop_assert_eq!(
            validate_pattern(&wildcard).is_ok(),
            reference_pattern_ok(&wildcard),
            "pattern {:?}", wildcard
        );
    }
}

#[test]
fn channel_name_edges() {
    let max = "a".repeat(255);
    let over = "a".repeat(256);
    let two_byte_over = format!("{}é", "a".repeat(254));
    for (name, ok) in [
        ("", false),
        (max.as_str(), true),
        (over.as_str(), false),
        (two_byte_over.as_str(), false),
        ("a\u{200b}b", true),
        ("a\u{feff}", true),
        ("a\u{85}", false),
        ("a\u{a0}", false),
        ("a\u{3000}", false),
        ("chat/*", false),
    ] {
        assert_eq!(reference_name_ok(name), ok, "reference {name:?}");
        assert_eq!(validate_channel_name(name).is_ok(), ok, "{name:?}");
    }
    assert!(reference_pattern_ok("*") && validate_pattern("*").is_ok());
    assert!(!reference_pattern_ok("**") && validate_pattern("**").is_err());
    assert!(!reference_pattern_ok("") && validate_pattern("").is_err());
}

// =================================================================== permissions

/// The four kinds of socket of the authorization matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    /// The user the channel names (row 42, auth table 7).
    User,
    /// Another authenticated user (row 43, auth table 7).
    Other,
    /// An authenticated user holding the roles `admin` and `writer` (row 7, table 9).
    RoleHolder,
}

impl Who {
    fn authenticated(self) -> bool {
        self != Who::Anonymous
    }
    fn row(self) -> Option<&'static str> {
        match self {
            Who::Anonymous => None,
            Who::User => Some("42"),
            Who::Other => Some("43"),
            Who::RoleHolder => Some("7"),
        }
    }
    fn table(self) -> Option<i64> {
        match self {
            Who::Anonymous => None,
            Who::User | Who::Other => Some(7),
            Who::RoleHolder => Some(9),
        }
    }
    fn roles(self) -> &'static [&'static str] {
        match self {
            Who::RoleHolder => &["admin", "writer"],
            _ => &[],
        }
    }
    /// The identity the server would build from a token; `row_as_string` makes the
    /// token's row id the JSON string "42" rather than the number 42.
    fn identity(self, row_as_string: bool) -> Identity {
        let Some(row) = self.row() else {
            return Identity::anonymous("anon".into());
        };
        Identity {
            socket_id: format!("{self:?}"),
            authenticated: true,
            dbo_id: self.table().unwrap(),
            row_id: if row_as_string {
                json!(row)
            } else {
                json!(row.parse::<i64>().unwrap())
            },
            extras: json!({}),
            roles: self.roles().iter().map(|r| r.to_string()).collect(),
        }
    }
}

fn who() -> impl Strategy<Value = Who> {
    select(vec![Who::Anonymous, Who::User, Who::Other, Who::RoleHolder])
}

/// Every flag of a rule that a decision reads.
#[derive(Debug, Clone)]
struct Flags {
    active: bool,
    anonymous_clients: bool,
    auth_channel: bool,
    public: (bool, bool),
    private: (bool, bool),
    owner_segment: bool,
    join_roles: Vec<&'static str>,
    publish_roles: Vec<&'static str>,
}

fn roles() -> impl Strategy<Value = Vec<&'static str>> {
    select(vec![
        vec![],
        vec!["admin"],
        vec!["ops"],
        vec!["ops", "writer"],
    ])
}

fn flags() -> impl Strategy<Value = Flags> {
    (any::<[bool; 8]>(), roles(), roles()).prop_map(|(b, join_roles, publish_roles)| Flags {
        active: b[0],
        anonymous_clients: b[1],
        auth_channel: b[2],
        public: (b[3], b[4]),
        private: (b[5], b[6]),
        owner_segment: b[7],
        join_roles,
        publish_roles,
    })
}

impl Flags {
    fn rule(&self, pattern: &str) -> ChannelRule {
        let mut r = ChannelRule::new(pattern);
        r.active = self.active;
        r.settings.anonymous_clients = self.anonymous_clients;
        r.settings.auth_channel = self.auth_channel;
        r.public_messaging = MessagingFlags {
            active: self.public.0,
            auth: self.public.1,
        };
        r.private_messaging = MessagingFlags {
            active: self.private.0,
            auth: self.private.1,
        };
        r.owner_segment = self.owner_segment;
        r.join_roles = self.join_roles.iter().map(|s| s.to_string()).collect();
        r.publish_roles = self.publish_roles.iter().map(|s| s.to_string()).collect();
        r
    }
}

/// The first failing check's error, in the order the checks are listed.
fn first_failing(checks: &[(bool, Denied)]) -> Result<(), Denied> {
    match checks.iter().find(|(fails, _)| *fails) {
        Some((_, denied)) => Err(*denied),
        None => Ok(()),
    }
}

fn holds_one_of(who: Who, roles: &[&str]) -> bool {
    roles.is_empty() || who.roles().iter().any(|r| roles.contains(r))
}

/// The text after the final `/` or `:` of a channel name.
fn owner_part(channel: &str) -> &str {
    match channel
        .char_indices()
        .rev()
        .find(|(_, c)| *c == '/' || *c == ':')
    {
        Some((i, _)) => &channel[i + 1..],
        None => channel,
    }
}

/// docs/protocol.md section 3, join checks 2-4 (the rule given is the one that matched).
fn expected_join(f: &Flags, who: Who, channel: &str) -> Result<(), Denied> {
    first_failing(&[
        (!f.active, Denied::ChannelNotFound),
        (
            !who.authenticated() && !f.anonymous_clients,
            Denied::AnonymousNotAllowed,
        ),
        (!holds_one_of(who, &f.join_roles), Denied::JoinNotAllowed),
        (
            // The owner is an authenticated socket whose row id is the last segment.
            f.owner_segment && who.row() != Some(owner_part(channel)),
            Denied::JoinNotAllowed,
        ),
    ])
}

/// A public message: refused, or allowed with its audience (true: authenticated only).
fn expected_public(f: &Flags, sender: Who, requested: bool) -> Result<bool, Denied> {
    first_failing(&[
        (!f.public.0, Denied::PublicNotAllowed),
        (f.public.1 && !sender.authenticated(), Denied::AuthRequired),
        (
            !holds_one_of(sender, &f.publish_roles),
            Denied::PublishNotAllowed,
        ),
    ])
    .map(|()| requested || (sender.authenticated() && f.auth_channel))
}

/// A direct message; `target`: None when the target socket is not in the channel, else
/// whether it is authenticated. The contract lists the sender's checks (private
/// messaging on, authentication, and the publish-roles extension) before the target's.
fn expected_direct(f: &Flags, sender: Who, target: Option<bool>) -> Result<(), Denied> {
    first_failing(&[
        (!f.private.0, Denied::PrivateNotAllowed),
        (f.private.1 && !sender.authenticated(), Denied::AuthRequired),
        (
            !holds_one_of(sender, &f.publish_roles),
            Denied::PublishNotAllowed,
        ),
        (target.is_none(), Denied::RecipientNotFound),
        (f.private.1 && target == Some(false), Denied::AuthRequired),
    ])
}

/// An event aimed at (row, table): only that user's authenticated sockets get it.
fn expected_event(target: Option<(&str, Option<i64>)>, member: Who) -> bool {
    match target {
        None => true,
        Some((row, table)) => {
            member.row() == Some(row) && (table.is_none() || table == member.table())
        }
    }
}

fn channel_for_owner() -> impl Strategy<Value = String> {
    (
        select(vec!["user:", "user/", "team/a:", "feed:x/", ""]),
        select(vec!["42", "43", "7", "0", "x", "042", ""]),
    )
        .prop_map(|(head, tail)| format!("{head}{tail}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 2))]

    #[test]
    fn joins_follow_the_contract(
        f in flags(),
        who in who(),
        row_as_string in any::<bool>(),
        channel in channel_for_owner(),
    ) {
        let rule = f.rule("x*");
        let id = who.identity(row_as_string);
        prop_assert_eq!(check_join(&rule, &id, &channel), expected_join(&f, who, &channel),
            "{:?} {:?} {:?}", f, who, channel);
    }

    #[test]
    fn messages_follow_the_contract(
        f in flags(),
        sender in who(),
        member in who(),
        row_as_string in any::<bool>(),
        requested in any::<bool>(),
        target in select(vec![None, Some(false), Some(true)]),
    ) {
        let rule = f.rule("x*");
        let id = sender.identity(row_as_string);
        let public = check_public_message(&rule, &id, requested);
        prop_assert_eq!(public, expected_public(&f, sender, requested), "public {:?} {:?}", f, sender);
        // Who receives it: live and from history alike (`reaches`).
        if let Ok(authenticated_only) = public {
            let delivered = reaches(authenticated_only, member.authenticated());
            let expected = !authenticated_only || member != Who::Anonymous;
            prop_assert_eq!(delivered, expected);
        }
        prop_assert_eq!(
            check_direct_message(&rule, &id, target),
            expected_direct(&f, sender, target),
            "direct {:?} {:?} {:?}", f, sender, target
        );
    }

    #[test]
    fn events_reach_their_user_only(
        member in who(),
        row_as_string in any::<bool>(),
        target in select(vec![
            None,
            Some(("42", None)),
            Some(("42", Some(7))),
            Some(("42", Some(9))),
            Some(("43", None)),
            Some(("7", Some(9))),
            Some(("0", None)),
            Some(("", None)),
        ]),
    ) {
        let id = member.identity(row_as_string);
        let t = target.map(|(row, table)| EventTarget { row_id: row.into(), dbo_id: table });
        prop_assert_eq!(event_reaches(t.as_ref(), &id), expected_event(target, member),
            "{:?} to {:?}", target, member);
    }
}

/// The reference tables themselves on the cases docs/protocol.md spells out.
#[test]
fn reference_tables_say_what_the_contract_says() {
    let open = Flags {
        active: true,
        anonymous_clients: true,
        auth_channel: false,
        public: (true, false),
        private: (true, false),
        owner_segment: false,
        join_roles: vec![],
        publish_roles: vec![],
    };
    assert_eq!(expected_join(&open, Who::Anonymous, "c"), Ok(()));
    let inactive = Flags {
        active: false,
        anonymous_clients: false,
        ..open.clone()
    };
    // An inactive rule answers "Channel not found" before anything else.
    assert_eq!(
        expected_join(&inactive, Who::Anonymous, "c"),
        Err(Denied::ChannelNotFound)
    );
    let owned = Flags {
        owner_segment: true,
        ..open.clone()
    };
    assert_eq!(expected_join(&owned, Who::User, "user:42"), Ok(()));
    assert_eq!(
        expected_join(&owned, Who::Other, "user:42"),
        Err(Denied::JoinNotAllowed)
    );
    // Anonymous sockets have row id 0 but own nothing.
    assert_eq!(
        expected_join(&owned, Who::Anonymous, "user:0"),
        Err(Denied::JoinNotAllowed)
    );
    let auth_channel = Flags {
        auth_channel: true,
        ..open.clone()
    };
    assert_eq!(expected_public(&auth_channel, Who::User, false), Ok(true));
    assert_eq!(
        expected_public(&auth_channel, Who::Anonymous, false),
        Ok(false)
    );
    let private_auth = Flags {
        private: (true, true),
        ..open
    };
    assert_eq!(
        expected_direct(&private_auth, Who::User, Some(false)),
        Err(Denied::AuthRequired)
    );
    assert_eq!(
        expected_direct(&private_auth, Who::User, None),
        Err(Denied::RecipientNotFound)
    );
    assert!(!expected_event(Some(("0", None)), Who::Anonymous));
}

// =================================================================== frame parser

/// One JSON value for a frame field, or the field left out.
fn field(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![1 => Just(None), 4 => select(values).prop_map(Some)]
}

fn action_value() -> impl Strategy<Value = Option<Value>> {
    field(vec![
        json!("join"),
        json!("leave"),
        json!("message"),
        json!("history"),
        json!("join"),
        json!("message"),
        json!("dance"),
        json!("JOIN"),
        json!(""),
        json!("join "),
        Value::Null,
        json!(1),
        json!(true),
        json!(["join"]),
        json!({"join": true}),
    ])
}

fn options_value() -> impl Strategy<Value = Option<Value>> {
    let channel = field(vec![
        json!("c"),
        json!("chat/lobby"),
        json!("ünï"),
        json!(""),
        Value::Null,
        json!(5),
        json!(false),
        json!({"c": 1}),
    ]);
    let authenticated = field(vec![
        json!(true),
        json!(false),
        Value::Null,
        json!("true"),
        json!(1),
    ]);
    let socket_id = field(vec![
        json!("s1"),
        json!(""),
        Value::Null,
        json!(3),
        json!(true),
    ]);
    let extra = field(vec![json!(1), json!("x"), json!([null])]);
    prop_oneof![
        6 => (channel, authenticated, socket_id, extra).prop_map(|(c, a, s, x)| {
            let mut m = Map::new();
            for (k, v) in [("channel", c), ("authenticated", a), ("socketId", s), ("extra", x)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Some(Value::Object(m))
        }),
        1 => field(vec![Value::Null, json!([]), json!("c"), json!(0), json!(true)]),
    ]
}

fn payload_value() -> impl Strategy<Value = Option<Value>> {
    let flag = || {
        field(vec![
            json!(true),
            json!(false),
            Value::Null,
            json!("y"),
            json!(1),
            json!({}),
        ])
    };
    prop_oneof![
        3 => (flag(), flag(), any::<bool>()).prop_map(|(h, p, extra)| {
            let mut m = Map::new();
            if let Some(h) = h {
                m.insert("history".into(), h);
            }
            if let Some(p) = p {
                m.insert("presence".into(), p);
            }
            if extra {
                m.insert("text".into(), json!("hi \u{2028} \"quoted\""));
            }
            Some(Value::Object(m))
        }),
        2 => field(vec![Value::Null, json!([1, 2]), json!("text"), json!(-1.5e3), json!(true)]),
    ]
}

/// A frame as its fields, in the order they are written.
#[derive(Debug, Clone)]
struct FrameSpec {
    fields: Vec<(&'static str, Value)>,
    /// Whitespace written around every token.
    space: &'static str,
}

impl FrameSpec {
    fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn text(&self) -> String {
        let s = self.space;
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{s}{}{s}:{s}{}{s}", json!(k), v))
            .collect();
        format!("{s}{{{}}}{s}", parts.join(","))
    }
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        action_value(),
        prop_oneof![4 => Just(None), 1 => action_value()],
        options_value(),
        prop_oneof![4 => Just(None), 1 => options_value()],
        payload_value(),
        field(vec![json!({"socketId": "forged"}), json!(null)]),
        select(vec!["", " ", "\n\t "]),
    )
        .prop_flat_map(
            |(action, command, options, command_options, payload, client, space)| {
                let mut fields = Vec::new();
                for (k, v) in [
                    ("action", action),
                    ("command", command),
                    ("options", options),
                    ("commandOptions", command_options),
                    ("payload", payload),
                    ("client", client),
                ] {
                    if let Some(v) = v {
                        fields.push((k, v));
                    }
                }
                Just(fields)
                    .prop_shuffle()
                    .prop_map(move |fields| FrameSpec { fields, space })
            },
        )
}

/// What the parser should make of a frame.
#[derive(Debug, PartialEq)]
enum Expected {
    Accepted {
        action: Action,
        channel: String,
    },
    /// Refused; carries the channel the error frame names.
    Refused(Option<String>),
}

/// docs/protocol.md section 2: `{action, options, payload}`, or the legacy `{command,
/// commandOptions, payload}`; a field set to null counts as left out, and the current
/// name wins over the legacy one. The error names the channel when `options.channel`
/// was a string.
fn expected_frame(spec: &FrameSpec) -> Expected {
    let pick = |modern: &str, legacy: &str| -> Option<Value> {
        [modern, legacy]
            .iter()
            .filter_map(|k| spec.get(k))
            .find(|v| !v.is_null())
            .cloned()
    };
    let options = pick("options", "commandOptions");
    let channel = match &options {
        Some(Value::Object(o)) => o.get("channel").cloned(),
        _ => None,
    };
    let known_channel = channel.as_ref().and_then(Value::as_str).map(str::to_string);
    let refused = Expected::Refused(known_channel.clone());
    if !matches!(options, None | Some(Value::Object(_))) {
        return refused;
    }
    if !matches!(channel, None | Some(Value::Null) | Some(Value::String(_))) {
        return refused;
    }
    let action = match pick("action", "command") {
        Some(Value::String(s)) if s == "join" => Action::Join,
        Some(Value::String(s)) if s == "leave" => Action::Leave,
        Some(Value::String(s)) if s == "message" => Action::Message,
        Some(Value::String(s)) if s == "history" => Action::History,
        _ => return refused,
    };
    let Some(channel) = known_channel else {
        return refused;
    };
    if action == Action::Message {
        let o = options.as_ref().and_then(Value::as_object).unwrap();
        let bool_or_absent = matches!(
            o.get("authenticated"),
            None | Some(Value::Null | Value::Bool(_))
        );
        let string_or_absent = matches!(
            o.get("socketId"),
            None | Some(Value::Null | Value::String(_))
        );
        if !bool_or_absent || !string_or_absent {
            return Expected::Refused(Some(channel));
        }
    }
    Expected::Accepted { action, channel }
}

/// A join's payload: null or an object whose `history` / `presence` are booleans, null
/// or absent. Some((history, presence)) when acceptable.
fn expected_join_request(payload: Option<&Value>) -> Option<(bool, bool)> {
    let flag = |o: &Map<String, Value>, k: &str| match o.get(k) {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    };
    match payload {
        None | Some(Value::Null) => Some((false, false)),
        Some(Value::Object(o)) => Some((flag(o, "history")?, flag(o, "presence")?)),
        Some(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES * 4))]

    #[test]
    fn the_frame_parser_accepts_exactly_the_well_formed_frames(spec in frame_spec()) {
        let text = spec.text();
        let expected = expected_frame(&spec);
        match (parse_inbound(&text), expected) {
            (Ok(frame), Expected::Accepted { action, channel }) => {
                prop_assert_eq!(frame.action, action, "{}", text);
                prop_assert_eq!(&frame.channel, &channel, "{}", text);
                let payload: Value = serde_json::from_str(frame.payload.get()).unwrap();
                prop_assert_eq!(&payload, spec.get("payload").unwrap_or(&Value::Null), "{}", text);
                if action == Action::Join {
                    let got = frame.join_request().map(|r| (r.history, r.presence));
                    match expected_join_request(spec.get("payload")) {
                        Some(flags) => prop_assert_eq!(got.unwrap(), flags, "{}", text),
                        None => {
                            let e = got.unwrap_err();
                            prop_assert!(e.message().starts_with("Invalid frame: "));
                            prop_assert_eq!(e.channel, Some(channel), "{}", text);
                        }
                    }
                }
                if action == Action::Message {
                    let o = frame.options.clone();
                    prop_assert_eq!(frame.requested_authenticated(), o.get("authenticated") == Some(&json!(true)));
                    prop_assert_eq!(frame.target_socket(), o.get("socketId").and_then(Value::as_str));
                }
            }
            (Err(e), Expected::Refused(channel)) => {
                prop_assert!(e.message().starts_with("Invalid frame: "), "{}", e.message());
                prop_assert_eq!(e.channel, channel, "{}", text);
            }
            (got, expected) => {
                let got = got.map(|f| (f.action, f.channel)).map_err(|e| (e.what, e.channel));
                prop_assert!(false, "{} -> {:?}, expected {:?}", text, got, expected);
            }
        }
    }

    #[test]
    fn anything_that_is_not_an_object_is_refused_without_a_channel(
        text in prop_oneof![
            any::<String>(),
            Just("[]".to_string()),
            Just("null".to_string()),
            Just("\"join\"".to_string()),
            Just("12".to_string()),
            "\\{\"action\":\"join\",\"options\":\\{\"channel\":\"c\"\\}".prop_map(|s| s),
        ]
    ) {
        let is_object = serde_json::from_str::<Value>(&text).map(|v| v.is_object()).unwrap_or(false);
        if !is_object {
            let e = parse_inbound(&text).unwrap_err();
            prop_assert!(e.message().starts_with("Invalid frame: "));
            prop_assert_eq!(e.channel, None);
        }
    }
}

/// Frames the SDK sends today and sent before 1.0.28, spelled out.
#[test]
fn sdk_and_legacy_frames() {
    for (text, action, channel) in [
        (
            r#"{"action":"join","options":{"channel":"room:42"},"payload":{"history":true,"presence":true}}"#,
            Action::Join,
            "room:42",
        ),
        (
            r#"{"action":"message","options":{"authenticated":true,"channel":"c"},"payload":{"t":1}}"#,
            Action::Message,
            "c",
        ),
        (
            r#"{"command":"history","commandOptions":{"channel":"c"},"payload":null}"#,
            Action::History,
            "c",
        ),
        (
            r#"{"action":null,"command":"leave","options":null,"commandOptions":{"channel":"c"}}"#,
            Action::Leave,
            "c",
        ),
    ] {
        let frame = parse_inbound(text).unwrap();
        assert_eq!((frame.action, frame.channel.as_str()), (action, channel));
    }
}

/// A frame that repeats a top-level field is refused as a whole (with "Invalid frame: not
/// a JSON object" and no channel), so no second reader could take the other copy.
#[test]
fn repeated_fields_are_refused() {
    for text in [
        r#"{"action":"join","action":"leave","options":{"channel":"c"}}"#,
        r#"{"action":"join","options":{"channel":"c"},"options":{"channel":"d"}}"#,
        r#"{"action":"message","options":{"channel":"c"},"payload":1,"payload":2}"#,
    ] {
        let e = parse_inbound(text).unwrap_err();
        assert!(e.message().starts_with("Invalid frame: "), "{text}");
        assert_eq!(e.channel, None, "{text}");
    }
}
