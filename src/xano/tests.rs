//! Tests of loading Xano channel definitions into rules (`src/xano/mod.rs`).

use super::*;

const XS: &str = include_str!("../../tests/fixtures/xano/channels.xs");
const EXPORT: &str = include_str!("../../tests/fixtures/xano/realtime-export.json");

/// A fresh directory with the two fixtures: `channels/channels.xs` and `export.json`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-xano-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("channels")).unwrap();
    std::fs::write(dir.join("channels/channels.xs"), XS).unwrap();
    std::fs::write(dir.join("export.json"), EXPORT).unwrap();
    dir
}

fn app(extra: &str) -> String {
    format!(
            "[[apps]]\nname = \"a\"\napi_key = \"0123456789\"\njwt = {{ secret = \"0123456789abcdef0123456789abcdef\" }}\n{extra}\n"
        )
}

fn load(dir: &Path, toml: &str) -> Result<Config, String> {
    Config::from_toml_in(toml, std::iter::empty(), Some(dir)).map_err(|e| e.to_string())
}

fn patterns(c: &Config, i: usize) -> Vec<&str> {
    c.apps[i]
        .channels
        .iter()
        .map(|r| r.pattern.as_str())
        .collect()
}

#[test]
fn channels_dir_and_export_join_the_toml_rules() {
    let dir = scratch("join");
    let c = load(
            &dir,
            &app("hash = \"h\"\nchannels_dir = \"channels\"\nxano_export = \"export.json\"\n[[apps.channels]]\npattern = \"toml/*\"\n"),
        )
        .unwrap();
    assert_eq!(
        patterns(&c, 0),
        [
            "toml/*",
            "room:*",
            "announcements",
            "user:*",
            "chat",
            "support",
            "archive"
        ]
    );
    // The app's own hash wins over the export's; paths are left resolved.
    assert_eq!(c.apps[0].hash, "h");
    assert_eq!(
        c.apps[0].channels_dir.as_deref(),
        Some(dir.join("channels").as_path())
    );
    assert_eq!(
        c.apps[0].xano_export.as_deref(),
        Some(dir.join("export.json").as_path())
    );
    let rules = crate::rules::RuleSet::new(&c.apps[0].channels);
    assert_eq!(rules.find("chat/a/b").unwrap().pattern, "chat");
    assert_eq!(rules.find("room:1").unwrap().settings.message_history, 100);
    assert!(!rules.find("archive").unwrap().active);
    assert!(rules.find("support").unwrap().active);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_export_gives_the_hash_and_can_switch_the_app_off() {
    let dir = scratch("hash");
    let c = load(&dir, &app("xano_export = \"export.json\"")).unwrap();
    assert_eq!(c.apps[0].hash, "Dl3HlakmBZDhezv6yml7hliTM20");

    let off = EXPORT.replacen("\"enabled\": true", "\"enabled\": false", 1);
    assert_ne!(off, EXPORT);
    std::fs::write(dir.join("off.json"), off).unwrap();
    let c = load(
            &dir,
            &app("hash = \"off\"\nxano_export = \"off.json\"\nchannels_dir = \"channels\"\n[[apps.channels]]\npattern = \"toml\"\n"),
        )
        .unwrap();
    assert_eq!(c.apps[0].channels.len(), 7);
    assert!(c.apps[0].channels.iter().all(|r| !r.active));

    let err = load(&dir, &app("channels_dir = \"channels\"")).unwrap_err();
    assert_eq!(
        err,
        "`apps[0].hash`: must be set (in the app, or by the `hash` of its xano_export)"
    );
    std::fs::write(dir.join("nohash.json"), r#"{"channels":[]}"#).unwrap();
    let err = load(&dir, &app("xano_export = \"nohash.json\"")).unwrap_err();
    assert!(err.starts_with("`apps[0].hash`: must be set"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pattern_defined_twice_names_both_places() {
    let dir = scratch("dup");
    let xs_file = dir.join("channels/channels.xs").display().to_string();
    let export_file = dir.join("export.json").display().to_string();
    let err = load(
            &dir,
            &app("hash = \"h\"\nchannels_dir = \"channels\"\n[[apps.channels]]\npattern = \"x\"\n[[apps.channels]]\npattern = \"announcements\"\n"),
        )
        .unwrap_err();
    assert_eq!(
            err,
            format!("`apps[0].channels_dir`: pattern \"announcements\" is defined twice: at apps[0].channels[1] and at {xs_file}:22:1")
        );

    std::fs::write(
        dir.join("channels/more.xs"),
        "\n\nrealtime_channel \"user:*\" {}\n",
    )
    .unwrap();
    let err = load(&dir, &app("hash = \"h\"\nchannels_dir = \"channels\"")).unwrap_err();
    assert!(
        err.ends_with(&format!(
            "pattern \"user:*\" is defined twice: at {xs_file}:39:1 and at {}:3:1",
            dir.join("channels/more.xs").display()
        )),
        "{err}"
    );
    std::fs::remove_file(dir.join("channels/more.xs")).unwrap();

    std::fs::write(
        dir.join("channels/chat.xs"),
        "realtime_channel \"support\" {}\n",
    )
    .unwrap();
    let err = load(
        &dir,
        &app("channels_dir = \"channels\"\nxano_export = \"export.json\""),
    )
    .unwrap_err();
    assert_eq!(
            err,
            format!("`apps[0].xano_export`: pattern \"support\" is defined twice: at {}:1:1 and at {export_file}: channels[1]", dir.join("channels/chat.xs").display())
        );

    // Duplicates within the TOML keep their existing message.
    let err = load(&dir, &app("hash = \"h\"\n[[apps.channels]]\npattern = \"x\"\n[[apps.channels]]\npattern = \"x\"\n")).unwrap_err();
    assert_eq!(
        err,
        "`apps[0].channels[1].pattern`: duplicate pattern \"x\""
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_errors_name_the_key_and_the_place() {
    let dir = scratch("errors");
    std::fs::write(
        dir.join("channels/bad.xs"),
        "realtime_channel \"b\" {\n  settings = { message_history: 30 }\n}\n",
    )
    .unwrap();
    let err = load(&dir, &app("hash = \"h\"\nchannels_dir = \"channels\"")).unwrap_err();
    assert_eq!(
            err,
            format!("`apps[0].channels_dir`: {}:2:33: `message_history` must be one of 0, 25, 50, 100, 250, 1000", dir.join("channels/bad.xs").display())
        );
    let err = load(&dir, &app("hash = \"h\"\nchannels_dir = \"nowhere\"")).unwrap_err();
    assert!(
        err.starts_with("`apps[0].channels_dir`: cannot read"),
        "{err}"
    );
    let err = load(&dir, &app("hash = \"h\"\nxano_export = \"nowhere.json\"")).unwrap_err();
    assert!(
        err.starts_with("`apps[0].xano_export`: cannot read"),
        "{err}"
    );
    let err = load(&dir, &app("hash = \"h\"\nxano_exports = \"x.json\"")).unwrap_err();
    assert!(err.contains("unknown field `xano_exports`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_load_reads_paths_relative_to_the_file() {
    let dir = scratch("load");
    let path = dir.join("switchboard.toml");
    std::fs::write(
        &path,
        app("channels_dir = \"channels\"\nxano_export = \"export.json\""),
    )
    .unwrap();
    let c = Config::load(Some(&path)).unwrap();
    assert_eq!(c.apps[0].hash, "Dl3HlakmBZDhezv6yml7hliTM20");
    assert_eq!(c.apps[0].channels.len(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn import_prints_toml_that_loads_into_the_same_rules() {
    let dir = scratch("import");
    let from_dir = import(&dir.join("channels")).unwrap();
    let from_file = import(&dir.join("channels/channels.xs")).unwrap();
    let from_export = import(&dir.join("export.json")).unwrap();
    assert!(
        from_dir.starts_with("# 3 rules from 1 XanoScript file in "),
        "{from_dir}"
    );
    assert!(
        from_export.contains("# The app's connection hash: hash = \"Dl3HlakmBZDhezv6yml7hliTM20\""),
        "{from_export}"
    );
    assert!(from_file.contains("[[apps.channels]]\npattern = \"room:*\"\ndescription = \"Chat room channels\"\nactive = true\npublic_messaging = { active = true, auth = true }\nprivate_messaging = { active = true, auth = true }\nsettings = { anonymous_clients = false, nested_channels = false, message_history = 100, auth_channel = true, presence = true }\n"), "{from_file}");
    for (text, expected) in [
        (
            &from_dir,
            xs::parse_str(XS, "x")
                .unwrap()
                .into_iter()
                .map(|r| r.rule)
                .collect::<Vec<_>>(),
        ),
        (
            &from_file,
            xs::parse_str(XS, "x")
                .unwrap()
                .into_iter()
                .map(|r| r.rule)
                .collect(),
        ),
        (
            &from_export,
            export::parse_export(EXPORT, "e").unwrap().rules,
        ),
    ] {
        let c = load(&dir, &format!("{}\n{text}", app("hash = \"h\""))).unwrap();
        assert_eq!(c.apps[0].channels, expected, "{text}");
    }

    let off = EXPORT.replacen("\"enabled\": true", "\"enabled\": false", 1);
    std::fs::write(dir.join("off.json"), off).unwrap();
    let text = import(&dir.join("off.json")).unwrap();
    assert!(
        text.contains("(enabled: false): every rule is inactive"),
        "{text}"
    );
    let c = load(&dir, &format!("{}\n{text}", app("hash = \"h\""))).unwrap();
    assert!(c.apps[0].channels.iter().all(|r| !r.active));

    std::fs::write(
        dir.join("channels/again.xs"),
        "realtime_channel \"room:*\" {}",
    )
    .unwrap();
    let err = import(&dir.join("channels")).unwrap_err();
    assert!(
        err.starts_with("pattern \"room:*\" is defined twice: at "),
        "{err}"
    );
    assert!(import(&dir.join("nothing.xs"))
        .unwrap_err()
        .starts_with("cannot read"));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(import(&empty).unwrap_err().ends_with("no *.xs files"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn export_xs_writes_every_app() {
    let dir = scratch("exportxs");
    let c = load(
            &dir,
            &format!(
                "{}{}",
                app("hash = \"one\"\nchannels_dir = \"channels\""),
                app("name = \"b\"\nhash = \"two\"\n[[apps.channels]]\npattern = \"user:*\"\nowner_segment = true\nsettings = { message_history = 5 }")
                    .replacen("name = \"a\"\n", "", 1)
            ),
        )
        .unwrap();
    let (text, notes) = config_to_xs(&c);
    assert!(
        text.starts_with("// app \"a\" (hash \"one\"): 3 rules\n\nrealtime_channel \"room:*\" {"),
        "{text}"
    );
    assert!(
        text.contains("// app \"b\" (hash \"two\"): 1 rules\n"),
        "{text}"
    );
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("app \"two\": \"user:*\": Switchboard-only"),
        "{notes:?}"
    );
    let rules: Vec<_> = xs::parse_str(&text, "out.xs")
        .unwrap()
        .into_iter()
        .map(|r| r.rule)
        .collect();
    assert_eq!(&rules[..3], &c.apps[0].channels[..]);
    assert_eq!(rules[3].settings.message_history, 25);
    let _ = std::fs::remove_dir_all(&dir);
}
