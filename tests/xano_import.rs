//! Moving from Xano: a server whose rules come from Xano's own material — the XanoScript
//! `realtime_channel` blocks of Xano's documentation (`channels_dir`) and a Metadata API
//! realtime export (`xano_export`) — behaves over real sockets as those flags say; and the
//! `import`, `export-xs` and `check-config` commands of the real binary.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The hash in `realtime-export.json`, which the export's app takes as its own.
const EXPORT_HASH: &str = "Dl3HlakmBZDhezv6yml7hliTM20";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xano")
}

/// Three apps: `xs` (the documentation's blocks in `channels/`), the export's app (no hash
/// of its own), and `off` (the export with `"enabled": false`).
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1

[limits]
messages_per_minute = 0

[[apps]]
name = "From XanoScript"
hash = "xs"
api_key = "test-api-key"
jwt = { secret = "test-secret-0123456789abcdef0123456789" }
channels_dir = "channels"

[[apps]]
name = "From the export"
api_key = "test-api-key"
jwt = { secret = "test-secret-0123456789abcdef0123456789" }
xano_export = "export.json"

[[apps]]
name = "Switched off"
hash = "off"
api_key = "test-api-key"
jwt = { secret = "test-secret-0123456789abcdef0123456789" }
xano_export = "off.json"
"#;

/// A config file in a fresh directory next to copies of the fixtures, as a team would lay
/// it out; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("switchboard-xano-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("channels")).unwrap();
        std::fs::copy(
            fixtures().join("channels.xs"),
            dir.join("channels/channels.xs"),
        )
        .unwrap();
        let export = std::fs::read_to_string(fixtures().join("realtime-export.json")).unwrap();
        std::fs::write(dir.join("export.json"), &export).unwrap();
        let mut off: Value = serde_json::from_str(&export).unwrap();
        off["enabled"] = json!(false);
        std::fs::write(dir.join("off.json"), off.to_string()).unwrap();
        std::fs::write(dir.join("switchboard.toml"), CONFIG).unwrap();
        Scratch { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("switchboard.toml")
    }

    fn start(&self) -> TestServer {
        let config = switchboard::Config::load(Some(&self.config_path())).expect("config loads");
        TestServer::with_loaded_config(config)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn anon(server: &TestServer, hash: &str) -> Client {
    Client::connect(&server.url(hash), None).await
}

async fn user(server: &TestServer, hash: &str, id: i64) -> Client {
    Client::connect(&server.url(hash), Some(&user_token(id))).await
}

async fn join_refused(c: &mut Client, channel: &str, message: &str) {
    c.send(json!({"action":"join","options":{"channel":channel},"payload":{"history":false,"presence":false}}))
        .await;
    let err = c.expect_error(message).await;
    assert_eq!(err["options"]["channel"], channel, "{err}");
}

async fn direct(c: &mut Client, channel: &str, to: &str, payload: Value) {
    c.send(
        json!({"action":"message","options":{"channel":channel,"socketId":to},"payload":payload}),
    )
    .await;
}

async fn history(c: &mut Client, channel: &str) -> Vec<Value> {
    c.send(json!({"action":"history","options":{"channel":channel},"payload":null}))
        .await;
    let reply = c.expect("history").await;
    reply["payload"]["history"].as_array().unwrap().clone()
}

/// Send `n` public messages `{"n": i}` and read their echoes.
async fn fill(c: &mut Client, channel: &str, n: usize) {
    for i in 0..n {
        c.message(channel, json!({ "n": i })).await;
    }
    for i in 0..n {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], json!({ "n": i }));
    }
}

fn numbers(entries: &[Value]) -> Vec<u64> {
    entries
        .iter()
        .map(|e| e["payload"]["n"].as_u64().unwrap())
        .collect()
}

// ---------------------------------------------------------------- XanoScript files

#[tokio::test]
async fn xanoscript_rules_decide_anonymous_joins() {
    let scratch = Scratch::new("anon");
    let server = scratch.start();
    let mut a = anon(&server, "xs").await;
    join_refused(
        &mut a,
        "room:1",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    join_refused(
        &mut a,
        "user:1",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    join_refused(&mut a, "elsewhere", "Channel not found").await;
    // `room:*` without nested_channels covers `room:1` only by its `*`; `announcements` is exact.
    join_refused(&mut a, "announcements/x", "Channel not found").await;
    let ack = a.join("announcements", true, false).await;
    assert_eq!(ack["payload"], json!({"history": []}));
    // public_messaging { active: true, auth: false }: anonymous senders are fine.
    a.message("announcements", json!("hello")).await;
    let m = a.expect("message").await;
    assert_eq!(m["payload"], "hello");
    assert_eq!(m["options"]["authenticated"], false);
    // private_messaging { active: false }.
    direct(&mut a, "announcements", "nobody", json!(1)).await;
    a.expect_error("Private messaging is not allowed on this channel")
        .await;
}

#[tokio::test]
async fn xanoscript_room_carries_member_chat_presence_and_direct_messages() {
    let scratch = Scratch::new("room");
    let server = scratch.start();
    let mut a = user(&server, "xs", 1).await;
    let mut b = user(&server, "xs", 2).await;
    let (ack_a, _) = a.join_presence("room:1").await;
    let (ack_b, full_b) = b.join_presence("room:1").await;
    let (a_id, b_id) = (socket_id(&ack_a), socket_id(&ack_b));
    assert_eq!(full_b["payload"]["presence"].as_array().unwrap().len(), 2);
    let update = a.expect("presence_update").await;
    assert_eq!(update["payload"]["presence"]["socketId"], b_id.as_str());

    // auth_channel: true → messages of authenticated senders reach authenticated members.
    a.message("room:1", json!({"text": "hi"})).await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], json!({"text": "hi"}));
        assert_eq!(m["options"]["authenticated"], true);
        assert_eq!(m["client"]["socketId"], a_id.as_str());
    }

    direct(&mut a, "room:1", &b_id, json!({"dm": 1})).await;
    let m = b.expect("message").await;
    assert_eq!(m["payload"], json!({"dm": 1}));
    assert_eq!(m["options"]["socketId"], b_id.as_str());
    assert_eq!(m["client"]["socketId"], a_id.as_str());
    a.expect_nothing("room:1").await;

    // user:* — private messaging only.
    a.join("user:1", false, false).await;
    a.message("user:1", json!("x")).await;
    a.expect_error("Public messaging is not allowed on this channel")
        .await;
}

#[tokio::test]
async fn xanoscript_history_sizes() {
    let scratch = Scratch::new("history");
    let server = scratch.start();
    let mut a = user(&server, "xs", 1).await;
    a.join("room:7", false, false).await;
    fill(&mut a, "room:7", 105).await;
    let kept = history(&mut a, "room:7").await;
    assert_eq!(numbers(&kept), (5..105).collect::<Vec<_>>());

    let mut c = anon(&server, "xs").await;
    c.join("announcements", false, false).await;
    fill(&mut c, "announcements", 30).await;
    let kept = history(&mut c, "announcements").await;
    assert_eq!(numbers(&kept), (5..30).collect::<Vec<_>>());
    let ack = c.join("announcements", true, false).await;
    assert_eq!(ack["payload"]["history"].as_array().unwrap().len(), 25);
}

// ---------------------------------------------------------------- the Xano export

#[tokio::test]
async fn export_nested_anonymous_chat() {
    let scratch = Scratch::new("chat");
    let server = scratch.start();
    // The app has no hash of its own: the export's is its connection hash.
    let mut a = anon(&server, EXPORT_HASH).await;
    let mut b = anon(&server, EXPORT_HASH).await;
    // wildcard: true on "chat" covers chat and chat/<anything>.
    a.join("chat", false, false).await;
    a.join("chat/a/b", false, false).await;
    let (ack_a, _) = a.join_presence("chat/lobby").await;
    let (ack_b, _) = b.join_presence("chat/lobby").await;
    let b_id = socket_id(&ack_b);
    a.expect("presence_update").await;
    a.message("chat/lobby", json!("hey")).await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], "hey");
        assert_eq!(m["options"]["authenticated"], false);
    }
    // Direct messages between anonymous sockets (…_authenticated_only: false).
    direct(&mut a, "chat/lobby", &b_id, json!("psst")).await;
    let m = b.expect("message").await;
    assert_eq!(m["payload"], "psst");
    assert_eq!(m["client"]["socketId"], socket_id(&ack_a).as_str());

    fill(&mut b, "chat/lobby", 30).await;
    a.drain_until_barrier("chat/lobby").await;
    let kept = history(&mut a, "chat/lobby").await;
    assert_eq!(kept.len(), 25);
    assert_eq!(kept.last().unwrap()["payload"], json!({"n": 29}));
}

#[tokio::test]
async fn export_members_only_support_and_switched_off_channel() {
    let scratch = Scratch::new("support");
    let server = scratch.start();
    let mut stranger = anon(&server, EXPORT_HASH).await;
    join_refused(
        &mut stranger,
        "support",
        "Anonymous clients cannot join this channel.",
    )
    .await;
    // "archive" is switched off ("enabled": false): for everyone, as if it did not exist.
    join_refused(&mut stranger, "archive", "Channel not found").await;
    // No wildcard on "support".
    join_refused(&mut stranger, "support/x", "Channel not found").await;

    let mut a = user(&server, EXPORT_HASH, 1).await;
    let mut b = user(&server, EXPORT_HASH, 2).await;
    join_refused(&mut a, "archive", "Channel not found").await;
    let (ack_a, _) = a.join_presence("support").await;
    let (ack_b, _) = b.join_presence("support").await;
    a.expect("presence_update").await;
    b.message("support", json!("help")).await;
    for c in [&mut a, &mut b] {
        let m = c.expect("message").await;
        assert_eq!(m["payload"], "help");
        // client_authenticated_messaging → auth_channel.
        assert_eq!(m["options"]["authenticated"], true);
    }
    direct(&mut a, "support", &socket_id(&ack_b), json!("dm")).await;
    let m = b.expect("message").await;
    assert_eq!(m["payload"], "dm");
    assert_eq!(m["client"]["socketId"], socket_id(&ack_a).as_str());
    fill(&mut a, "support", 3).await;
    b.drain_until_barrier("support").await;
    assert_eq!(history(&mut b, "support").await.len(), 4);
}

#[tokio::test]
async fn an_export_with_realtime_switched_off_refuses_every_join() {
    let scratch = Scratch::new("off");
    let server = scratch.start();
    let mut a = anon(&server, "off").await;
    for channel in ["chat", "chat/lobby", "archive"] {
        join_refused(&mut a, channel, "Channel not found").await;
    }
    let mut u = user(&server, "off", 1).await;
    join_refused(&mut u, "support", "Channel not found").await;
}

// ---------------------------------------------------------------- the commands

fn switchboard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run switchboard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `import` output pasted under an app loads into exactly the rules of its source.
fn load_imported(toml: &str) -> Vec<switchboard::config::ChannelRule> {
    let text = format!(
        "[[apps]]\nname = \"a\"\nhash = \"a\"\napi_key = \"test-api-key\"\njwt = {{ secret = \"{SECRET}\" }}\n{toml}"
    );
    switchboard::Config::from_toml(&text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .apps
        .remove(0)
        .channels
}

#[test]
fn import_prints_toml_rules_from_xanoscript_and_from_the_export() {
    let xs_rules: Vec<_> = switchboard::xano::xs::parse_file(&fixtures().join("channels.xs"))
        .unwrap()
        .into_iter()
        .map(|r| r.rule)
        .collect();
    let scratch = Scratch::new("cli-import");
    for source in [fixtures().join("channels.xs"), scratch.dir.join("channels")] {
        let (ok, out, err) = switchboard(&["import", source.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert_eq!(out.matches("[[apps.channels]]").count(), 3, "{out}");
        assert_eq!(load_imported(&out), xs_rules);
    }

    let (ok, out, err) = switchboard(&[
        "import",
        fixtures().join("realtime-export.json").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("hash = \"{EXPORT_HASH}\"")), "{out}");
    let rules = load_imported(&out);
    let patterns: Vec<_> = rules.iter().map(|r| r.pattern.as_str()).collect();
    assert_eq!(patterns, ["chat", "support", "archive"]);
    assert!(rules[0].settings.nested_channels && !rules[2].active);

    let (ok, out, err) = switchboard(&["import", scratch.dir.join("nope.xs").to_str().unwrap()]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn export_xs_and_check_config_cover_the_files() {
    let scratch = Scratch::new("cli-export");
    let config = scratch.config_path();
    let config = config.to_str().unwrap();
    let (ok, _, err) = switchboard(&["check-config", config]);
    assert!(ok, "{err}");
    assert!(err.contains("ok (3 apps)"), "{err}");

    let (ok, out, err) = switchboard(&["export-xs", config]);
    assert!(ok, "{err}");
    let loaded = switchboard::Config::load(Some(&scratch.config_path())).unwrap();
    let written: Vec<_> = switchboard::xano::xs::parse_str(&out, "out.xs")
        .unwrap_or_else(|e| panic!("{e}\n{out}"))
        .into_iter()
        .map(|r| r.rule)
        .collect();
    let all: Vec<_> = loaded
        .apps
        .iter()
        .flat_map(|a| a.channels.iter().cloned())
        .collect();
    assert_eq!(written, all);
    // The documentation's file comes back block for block.
    let original = std::fs::read_to_string(fixtures().join("channels.xs")).unwrap();
    let blocks: String = original
        .lines()
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(out.contains(blocks.trim()), "{out}");

    // A broken file: check-config names the key, the file, the line and the column.
    std::fs::write(
        scratch.dir.join("channels/zz.xs"),
        "realtime_channel \"late\" {\n  active = true\n  settings = { message_history: 10 }\n}\n",
    )
    .unwrap();
    let (ok, _, err) = switchboard(&["check-config", config]);
    assert!(!ok);
    let place = format!("{}:3:33", scratch.dir.join("channels/zz.xs").display());
    assert!(
        err.contains("`apps[0].channels_dir`") && err.contains(&place),
        "{err}"
    );
    assert!(
        err.contains("`message_history` must be one of 0, 25, 50, 100, 250, 1000"),
        "{err}"
    );

    // The same pattern in two places.
    std::fs::write(
        scratch.dir.join("channels/zz.xs"),
        "realtime_channel \"announcements\" {}\n",
    )
    .unwrap();
    let (ok, _, err) = switchboard(&["check-config", config]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "pattern \"announcements\" is defined twice: at {}:22:1 and at {}:1:1",
            scratch.dir.join("channels/channels.xs").display(),
            scratch.dir.join("channels/zz.xs").display()
        )),
        "{err}"
    );
}
