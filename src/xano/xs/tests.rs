//! Tests of the XanoScript grammar: every error names file, line and column (`src/xano/xs.rs`).

use super::*;
use proptest::arbitrary::any;
use proptest::prelude::*;

const FIXTURE: &str = include_str!("../../../tests/fixtures/xano/channels.xs");

fn flags(active: bool, auth: bool) -> MessagingFlags {
    MessagingFlags { active, auth }
}

fn settings(
    anon: bool,
    nested: bool,
    history: usize,
    auth: bool,
    presence: bool,
) -> ChannelSettings {
    ChannelSettings {
        anonymous_clients: anon,
        nested_channels: nested,
        message_history: history,
        auth_channel: auth,
        presence,
    }
}

fn rule(
    pattern: &str,
    description: &str,
    public: MessagingFlags,
    private: MessagingFlags,
    settings: ChannelSettings,
) -> ChannelRule {
    ChannelRule {
        description: description.into(),
        public_messaging: public,
        private_messaging: private,
        settings,
        ..ChannelRule::new(pattern)
    }
}

/// The three blocks of Xano's XanoScript realtime documentation, as Xano publishes them.
fn xano_doc_rules() -> Vec<ChannelRule> {
    vec![
        rule(
            "room:*",
            "Chat room channels",
            flags(true, true),
            flags(true, true),
            settings(false, false, 100, true, true),
        ),
        rule(
            "announcements",
            "System-wide announcements",
            flags(true, false),
            flags(false, false),
            settings(true, false, 25, false, false),
        ),
        rule(
            "user:*",
            "User notification channels",
            flags(false, false),
            flags(true, true),
            settings(false, false, 50, true, false),
        ),
    ]
}

fn parse(text: &str) -> Vec<ChannelRule> {
    parse_str(text, "t.xs")
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|r| r.rule)
        .collect()
}

fn one(text: &str) -> ChannelRule {
    let mut rules = parse(text);
    assert_eq!(rules.len(), 1, "{text}");
    rules.remove(0)
}

#[test]
fn the_xano_documentation_file_reads_unchanged() {
    let parsed = parse_str(FIXTURE, "channels.xs").unwrap();
    let rules: Vec<_> = parsed.iter().map(|r| r.rule.clone()).collect();
    assert_eq!(rules, xano_doc_rules());
    let origins: Vec<_> = parsed.iter().map(XsRule::origin).collect();
    assert_eq!(
        origins,
        ["channels.xs:5:1", "channels.xs:22:1", "channels.xs:39:1"]
    );
}

#[test]
fn each_documentation_block_alone() {
    let blocks: Vec<&str> = FIXTURE
        .split("\nrealtime_channel")
        .skip(1)
        .map(|b| b.split("\n}\n").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3);
    for (block, expected) in blocks.iter().zip(xano_doc_rules()) {
        let text = format!("realtime_channel{block}\n}}\n");
        assert_eq!(one(&text), expected, "{text}");
    }
}

#[test]
fn missing_attributes_take_the_protocol_defaults() {
    assert_eq!(one(r#"realtime_channel "x" {}"#), ChannelRule::new("x"));
    assert_eq!(
        one("realtime_channel \"x\" {\n  settings = {}\n  public_messaging = {}\n}\n"),
        ChannelRule::new("x")
    );
    let r = one("realtime_channel \"x\" {\n  settings = { presence: true }\n}");
    assert_eq!(r.settings, settings(false, false, 0, false, true));
    assert!(r.active);
    assert_eq!(r.description, "");
    let r = one("realtime_channel \"x\" {\n  active = false\n}");
    assert!(!r.active);
}

#[test]
fn layout_comments_commas_and_order() {
    let expected = rule(
        "room:*",
        "Chat // not a comment",
        flags(true, true),
        flags(true, false),
        settings(false, true, 250, true, true),
    );
    for text in [
            // Any order, comments after values and on their own lines, trailing commas.
            "// head\nrealtime_channel \"room:*\" { // opens\n  settings = {\n    presence: true, // who is here\n    // history\n    message_history: 250,\n    auth_channel: true,\n    nested_channels: true,\n  }\n  private_messaging = { auth: false, active: true, }\n  public_messaging = { auth: true, active: true }\n  description = \"Chat // not a comment\"\n} // done\n// tail",
            // Everything on one line, commas between attributes.
            "realtime_channel \"room:*\" { description = \"Chat // not a comment\", public_messaging = { active: true, auth: true }, private_messaging = { active: true }, settings = { nested_channels: true, message_history: 250, auth_channel: true, presence: true }, }",
            // Object entries separated by line breaks only; blank lines; tabs; CRLF.
            "\r\n\r\nrealtime_channel\t\"room:*\"\r\n{\r\n\tdescription = \"Chat // not a comment\"\r\n\r\n\tpublic_messaging = {\r\n\t\tactive: true\r\n\t\tauth: true\r\n\t}\r\n\tprivate_messaging = { active: true }\r\n\tsettings = {\r\n\t\tnested_channels: true\r\n\t\tmessage_history: 250\r\n\t\tauth_channel: true\r\n\t\tpresence: true\r\n\t}\r\n}\r\n",
            // A byte order mark, a line break after `=`, a comment between blocks' parts.
            "\u{feff}realtime_channel \"room:*\" // the rooms\n{\n  description =\n    \"Chat // not a comment\"\n  public_messaging = { active: true, auth: true }\n  private_messaging = { active: true, auth: false }\n  settings = { nested_channels: true, message_history: 250, auth_channel: true, presence: true }\n}",
        ] {
            assert_eq!(one(text), expected, "{text}");
        }
}

#[test]
fn several_blocks_and_empty_files() {
    assert!(parse("").is_empty());
    assert!(parse("// only comments\n\n// here\n").is_empty());
    let rules = parse("realtime_channel \"a\" {} realtime_channel \"b\" {\n}\n\nrealtime_channel \"c\" { active = false }");
    let patterns: Vec<_> = rules.iter().map(|r| r.pattern.as_str()).collect();
    assert_eq!(patterns, ["a", "b", "c"]);
    assert!(!rules[2].active);
}

#[test]
fn strings_and_escapes() {
    let r = one(r#"realtime_channel "a\"b\\c" { description = "tab\there\nline \u00e9 \/ ü 中" }"#);
    assert_eq!(r.pattern, "a\"b\\c");
    assert_eq!(r.description, "tab\there\nline é / ü 中");
}

/// (text, line, column, message)
const ERRORS: &[(&str, usize, usize, &str)] = &[
        // ---- syntax
        ("realtime_chanel \"x\" {}", 1, 1, "expected `realtime_channel`, found `realtime_chanel`"),
        ("\n\n  channel \"x\" {}", 3, 3, "expected `realtime_channel`, found `channel`"),
        ("realtime_channel \"x\" {}\n}", 2, 1, "expected `realtime_channel`, found `}`"),
        ("realtime_channel x {}", 1, 18, "expected the channel pattern as a \"string\", found `x`"),
        ("realtime_channel", 1, 17, "expected the channel pattern as a \"string\", found the end of the file"),
        ("realtime_channel \"x {}", 1, 23, "expected a closing `\"` before the end of the line, found the end of the file"),
        ("realtime_channel \"x\n\" {}", 1, 20, "expected a closing `\"` before the end of the line, found a line break"),
        ("realtime_channel \"x\"\n  active = true\n}", 2, 3, "expected `{`, found `active`"),
        ("realtime_channel \"x\" {\n  active true\n}", 2, 10, "expected `=`, found `true`"),
        ("realtime_channel \"x\" {\n  active: true\n}", 2, 9, "expected `=`, found `:`"),
        ("realtime_channel \"x\" {\n  settings = { presence = true }\n}", 2, 25, "expected `:`, found `=`"),
        ("realtime_channel \"x\" {\n  active = yes\n}", 2, 12, "expected a value (true, false, a number, a \"string\" or { … }), found `yes`"),
        ("realtime_channel \"x\" {\n  active =\n}", 3, 1, "expected a value (true, false, a number, a \"string\" or { … }), found `}`"),
        ("realtime_channel \"x\" {\n  active = [true]\n}", 2, 12, "expected a value (true, false, a number, a \"string\" or { … }), found `[`"),
        ("realtime_channel \"x\" {\n  active = true false\n}", 2, 17, "expected `,`, a line break or `}`, found `false`"),
        ("realtime_channel \"x\" {\n  active = true\n", 3, 1, "expected an attribute name or `}`, found the end of the file"),
        ("realtime_channel \"x\" {\n  active = true,,\n}", 2, 17, "expected an attribute name or `}`, found `,`"),
        ("realtime_channel \"x\" {\n  \"active\" = true\n}", 2, 3, "expected an attribute name or `}`, found `\"`"),
        ("realtime_channel \"x\" {\n  settings = { presence: true,, }\n}", 2, 31, "expected a key or `}`, found `,`"),
        ("realtime_channel \"x\" {\n  settings = { presence: true\n", 3, 1, "expected a key or `}`, found the end of the file"),
        ("realtime_channel \"x\" {\n  settings = { presence: { a: true } }\n}", 2, 26, "expected a value (true, false, a number or a \"string\"), found `{`"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 1.5 }\n}", 2, 34, "expected `,`, a line break or `}`, found `.`"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 99999999999999999999 }\n}", 2, 33, "expected an integer, found `99999999999999999999`"),
        ("realtime_channel \"x\" {\n  description = \"a\\qb\"\n}", 2, 20, "expected an escape after `\\`: \\\" \\\\ \\/ \\n \\r \\t or \\uXXXX, found `q`"),
        ("realtime_channel \"x\" {\n  description = \"\\u12\"\n}", 2, 20, "expected four hex digits of a Unicode scalar value after `\\u`, found `12`"),
        ("realtime_channel \"x\" {\n  description = \"\\ud800\"\n}", 2, 20, "expected four hex digits of a Unicode scalar value after `\\u`, found `d800`"),
        ("realtime_channel \"x\" { // no end", 1, 33, "expected an attribute name or `}`, found the end of the file"),
        // ---- meaning
        ("realtime_channel \"x\" {\n  colour = true\n}", 2, 3, "unknown key `colour` in realtime_channel (expected one of: description, active, public_messaging, private_messaging, settings)"),
        ("realtime_channel \"x\" {\n  join_roles = \"admin\"\n}", 2, 3, "unknown key `join_roles` in realtime_channel"),
        ("realtime_channel \"x\" {\n  settings = { presence: true, history: 25 }\n}", 2, 32, "unknown key `history` in settings (expected one of: anonymous_clients, nested_channels, message_history, auth_channel, presence)"),
        ("realtime_channel \"x\" {\n  public_messaging = { active: true, authenticated: true }\n}", 2, 38, "unknown key `authenticated` in public_messaging (expected one of: active, auth)"),
        ("realtime_channel \"x\" {\n  private_messaging = { enabled: true }\n}", 2, 25, "unknown key `enabled` in private_messaging"),
        ("realtime_channel \"x\" {\n  active = true\n  active = false\n}", 3, 3, "`active` is set twice (first at 2:3)"),
        ("realtime_channel \"x\" {\n  settings = { presence: true,\n    presence: false }\n}", 3, 5, "`presence` is set twice (first at 2:16)"),
        ("realtime_channel \"x\" {\n  active = \"yes\"\n}", 2, 12, "`active` must be true or false"),
        ("realtime_channel \"x\" {\n  active = 1\n}", 2, 12, "`active` must be true or false"),
        ("realtime_channel \"x\" {\n  settings = { presence: 1 }\n}", 2, 26, "`presence` must be true or false"),
        ("realtime_channel \"x\" {\n  public_messaging = { auth: \"no\" }\n}", 2, 30, "`auth` must be true or false"),
        ("realtime_channel \"x\" {\n  description = true\n}", 2, 17, "`description` must be a \"string\""),
        ("realtime_channel \"x\" {\n  settings = true\n}", 2, 14, "`settings` must be an object { … }"),
        ("realtime_channel \"x\" {\n  public_messaging = \"on\"\n}", 2, 22, "`public_messaging` must be an object { … }"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 30 }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"x\" {\n  settings = { message_history: -25 }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"x\" {\n  settings = { message_history: \"100\" }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"x\" {\n  settings = { message_history: 1001 }\n}", 2, 33, "`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        ("realtime_channel \"a*b\" {}", 1, 18, "invalid channel pattern \"a*b\": `*` may only end a pattern"),
        ("realtime_channel \"\" {}", 1, 18, "invalid channel pattern \"\": must be 1 to 255 bytes"),
        ("realtime_channel \"a b\" {}", 1, 18, "invalid channel pattern \"a b\": must not contain whitespace"),
        // Errors in a later block point into that block; columns count characters.
        ("realtime_channel \"ok\" {}\n\n// ünïcödé\nrealtime_channel \"é\" { colour = 1 }", 4, 24, "unknown key `colour`"),
    ];

#[test]
fn every_error_names_file_line_column_and_what_was_expected() {
    let mut wrong = Vec::new();
    for &(text, line, column, message) in ERRORS {
        let err = parse_str(text, "dir/f.xs").expect_err(text);
        let shown = err.to_string();
        if (err.line, err.column) != (line, column)
            || !err.message.starts_with(message)
            || err.file != "dir/f.xs"
            || !shown.starts_with(&format!("dir/f.xs:{line}:{column}: {message}"))
        {
            wrong.push(format!(
                "{text:?}\n  expected {line}:{column}: {message}\n  got      {shown}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn files_and_directories() {
    let dir = std::env::temp_dir().join(format!("switchboard-xs-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("b.xs"), "realtime_channel \"b\" {}").unwrap();
    std::fs::write(
        dir.join("a.xs"),
        "realtime_channel \"a1\" {}\nrealtime_channel \"a2\" {}",
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not XanoScript").unwrap();
    std::fs::write(dir.join("sub/c.xs"), "realtime_channel \"c\" {}").unwrap();
    let rules = parse_dir(&dir).unwrap();
    let got: Vec<_> = rules
        .iter()
        .map(|r| (r.rule.pattern.as_str(), r.line))
        .collect();
    assert_eq!(got, [("a1", 1), ("a2", 2), ("b", 1)]);
    assert_eq!(
        rules[2].origin(),
        format!("{}:1:1", dir.join("b.xs").display())
    );

    std::fs::write(dir.join("c.xs"), "realtime_channel \"c\" {\n  bad = 1\n}").unwrap();
    let err = parse_dir(&dir).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "{}:2:3: unknown key `bad`",
            dir.join("c.xs").display()
        )),
        "{err}"
    );
    let err = parse_dir(&dir.join("missing")).unwrap_err();
    assert!(err.starts_with("cannot read"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writer_output_reads_back_and_matches_the_documentation_layout() {
    let (text, notes) = write_xs(&xano_doc_rules());
    assert!(notes.is_empty());
    assert_eq!(parse(&text), xano_doc_rules());
    // The documentation's blocks, without the file's comments, are exactly what we write.
    let body: String = FIXTURE
        .lines()
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(text.trim(), body.trim());
}

#[test]
fn writer_notes_what_xanoscript_cannot_say() {
    let mut r = ChannelRule::new("user:*");
    r.owner_segment = true;
    r.join_roles = vec!["admin".into()];
    r.settings.message_history = 5;
    let (text, notes) = write_xs(&[r]);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("join_roles = [\"admin\"], owner_segment = true"),
        "{notes:?}"
    );
    assert!(
        notes[1].contains("message_history 5 is not a Xano size; written as 25"),
        "{notes:?}"
    );
    let back = one(&text);
    assert_eq!(back.settings.message_history, 25);
    assert!(!back.owner_segment);
    assert!(
        text.starts_with("// \"user:*\": Switchboard-only"),
        "{text}"
    );
}

fn arb_flags() -> impl Strategy<Value = MessagingFlags> {
    (any::<bool>(), any::<bool>()).prop_map(|(active, auth)| MessagingFlags { active, auth })
}

fn arb_rule() -> impl Strategy<Value = ChannelRule> {
    (
        "[a-zA-Z0-9:/_.\"\\\\#éü中-]{1,24}\\*?",
        prop_oneof![
            any::<String>(),
            "[\\x00-\\x1f\\x7f-\\x9f\"\\\\/ a-zé{}:=,]{0,24}"
        ],
        any::<bool>(),
        arb_flags(),
        arb_flags(),
        (
            any::<bool>(),
            any::<bool>(),
            prop::sample::select(HISTORY_SIZES.to_vec()),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                pattern,
                description,
                active,
                public,
                private,
                (anon, nested, history, auth, presence),
            )| {
                ChannelRule {
                    description,
                    active,
                    public_messaging: public,
                    private_messaging: private,
                    settings: settings(anon, nested, history, auth, presence),
                    ..ChannelRule::new(&pattern)
                }
            },
        )
}

fn arb_rules() -> impl Strategy<Value = Vec<ChannelRule>> {
    prop::collection::vec(arb_rule(), 0..6).prop_map(|rules| {
        let mut seen = std::collections::HashSet::new();
        rules
            .into_iter()
            .filter(|r| seen.insert(r.pattern.clone()))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// rules → XanoScript → rules, and → TOML (`switchboard import`'s output) → the
    /// config loader → XanoScript again: every step gives the same rules and text.
    #[test]
    fn rules_round_trip_through_xanoscript_and_toml(rules in arb_rules()) {
        let (xs, notes) = write_xs(&rules);
        prop_assert!(notes.is_empty());
        let back: Vec<ChannelRule> = parse_str(&xs, "p.xs")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xs}")))?
            .into_iter()
            .map(|r| r.rule)
            .collect();
        prop_assert_eq!(&back, &rules);

        let toml = format!(
            "[[apps]]\nname = \"a\"\nhash = \"a\"\napi_key = \"0123456789\"\njwt = {{ secret = \"0123456789abcdef0123456789abcdef\" }}\n\n{}",
            super::super::to_toml(&back)
        );
        // `from_toml` is the loader of `crate::config` (an inherent method of the model type).
        let config = crate::model::Config::from_toml(&toml)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{toml}")))?;
        prop_assert_eq!(&config.apps[0].channels, &rules);
        let (again, _) = write_xs(&config.apps[0].channels);
        prop_assert_eq!(again, xs);
    }

    /// Whatever the input, the parser answers (rules or a positioned error), never panics.
    #[test]
    fn arbitrary_text_never_panics(text in "(realtime_channel|\"|\\{|\\}|=|:|,|\n|//| |[a-z_]{1,8}|[0-9]{1,3}|\\\\)*") {
        if let Err(e) = parse_str(&text, "f.xs") {
            prop_assert!(e.line >= 1 && e.column >= 1);
        }
    }
}
