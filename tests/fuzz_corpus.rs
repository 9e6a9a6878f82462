//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through exactly the
//! checks the cargo-fuzz targets run (`fuzz/src/lib.rs`, compiled in here as a module), so
//! CI keeps every seed and every input the fuzzer once found interesting passing without
//! needing cargo-fuzz, nightly or libFuzzer. `scripts/fuzz.sh` does the fuzzing itself.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every file of one target's corpus through its check; all failures reported together.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let files = corpus(target);
    assert!(
        files.len() >= 10,
        "fuzz/corpus/{target} has only {} files",
        files.len()
    );
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {why}", file.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} corpus files fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    files.len()
}

#[test]
fn every_target_has_a_corpus_and_a_check() {
    let dirs: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    for (name, _) in checks::TARGETS {
        assert!(dirs.iter().any(|d| d == name), "no fuzz/corpus/{name}");
        let target =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs"));
        assert!(target.is_file(), "no {}", target.display());
    }
    for dir in &dirs {
        assert!(
            checks::TARGETS.iter().any(|(name, _)| name == dir),
            "fuzz/corpus/{dir} belongs to no target"
        );
    }
}

#[test]
fn frame_parser_corpus() {
    replay("frame_parser", checks::frame_parser);
    // The frames the real SDK sends (generated with its realtimeBuildActionUtil) all parse.
    for file in corpus("frame_parser") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("sdk-") || name.starts_with("legacy-") {
            let text = std::fs::read_to_string(&file).unwrap();
            let frame = switchboard::protocol::parse_inbound(&text)
                .unwrap_or_else(|e| panic!("{name}: {}", e.message()));
            if frame.action == switchboard::protocol::Action::Join {
                frame.join_request().unwrap();
            }
        }
    }
}

#[test]
fn config_loader_corpus() {
    replay("config_loader", checks::config_loader);
    // The repository's own configurations are in the corpus and load.
    for file in corpus("config_loader") {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("repo-") || name.starts_with("jwt-") {
            let text = std::fs::read_to_string(&file).unwrap();
            switchboard::Config::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn rule_matcher_corpus() {
    replay("rule_matcher", checks::rule_matcher);
}

#[test]
fn xanoscript_corpus() {
    replay("xanoscript", checks::xanoscript);
    let fixture = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/xanoscript/repo-channels.xs"),
    )
    .unwrap();
    assert_eq!(
        switchboard::xano::xs::parse_str(&fixture, "x")
            .unwrap()
            .len(),
        3
    );
}

/// The checks themselves catch what they should: a wrong answer is a panic, not a pass.
#[test]
fn checks_are_not_vacuous() {
    // A config input that names a file key is skipped, never loaded (no file is read).
    for input in [
        "[[apps]]\nxano_export = \"/dev/zero\"\n",
        "[[apps]]\n\"channels\\u005fdir\" = \"/\"\n",
        "#--env--\nSWITCHBOARD__APPS__0__XANO_EXPORT=/dev/zero\n",
        "#--env--\nSWITCHBOARD__APPS=[{\"xano\\u005fexport\"=\"/dev/zero\"}]\n",
    ] {
        assert!(checks::split_config_input(input).is_none(), "{input}");
    }
    let (text, vars) = checks::split_config_input("a = 1\n#--env--\nX=2\nnot a var\n").unwrap();
    assert_eq!(text, "a = 1\n");
    assert_eq!(vars, [("X".to_string(), "2".to_string())]);
    // The rule input format reads rules, flags and names.
    let (rules, names) =
        checks::parse_rule_input("chat/* anon pub join=admin\nbad*rule\n? chat/1\n");
    assert_eq!(rules.len(), 1);
    assert!(rules[0].settings.anonymous_clients && rules[0].public_messaging.active);
    assert_eq!(rules[0].join_roles, ["admin"]);
    assert_eq!(names, ["chat/1"]);
}
