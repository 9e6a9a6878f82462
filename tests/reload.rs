//! Live reload of the real binary: SIGHUP and POST /admin/reload apply new rules
//! without dropping a socket; revoked members are told; a broken file is refused.

mod common;
use common::*;
use serde_json::json;
use std::io::Write;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ADMIN: &str = "reload-admin-token";

fn config(open_anonymous: bool) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1
admin_token = "{ADMIN}"

[limits]
messages_per_minute = 0

[[apps]]
name = "Test"
hash = "test"
api_key = "test-api-key"

[apps.jwt]
algorithm = "HS256"
secret = "{SECRET}"

[[apps.channels]]
pattern = "open/*"
public_messaging = {{ active = true }}
settings = {{ anonymous_clients = {open_anonymous}, presence = true }}

{extra}
"#,
        extra = if open_anonymous {
            ""
        } else {
            "[[apps.channels]]\npattern = \"new/*\"\nsettings = { anonymous_clients = true }\n"
        }
    )
}

struct Node {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(path: &std::path::Path) -> Node {
    let log = path.with_extension("log");
    let mut cmd = process::broker_command(path, &log);
    cmd.env("RUST_LOG", "info,switchboard=debug");
    let (child, addr) = process::spawn_listening(cmd, &log).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(addr, "/healthz").await.0 != 200 {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Node { child, addr }
}

fn write(path: &std::path::Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[tokio::test]
async fn sighup_applies_new_rules_and_revokes_without_dropping_sockets() {
    let dir = std::env::temp_dir().join(format!("sb-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchboard.toml");
    write(&path, &config(true));
    let node = start(&path).await;
    let url = format!("ws://{}/rt/test", node.addr);

    let mut anon = Client::connect(&url, None).await;
    let mut member = Client::connect(&url, Some(&user_token(1))).await;
    let (ack, _) = anon.join_presence("open/x").await;
    let anon_id = socket_id(&ack);
    member.join_presence("open/x").await;
    anon.expect("presence_update").await;
    // Before the reload `new/*` has no rule.
    anon.send(json!({"action":"join","options":{"channel":"new/x"},"payload":null}))
        .await;
    anon.expect_error("Channel not found").await;

    // The new file: anonymous clients leave open/*, and new/* appears.
    write(&path, &config(false));
    let status = Command::new("kill")
        .args(["-HUP", &node.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let revoked = anon.expect_error("Channel access revoked").await;
    assert_eq!(revoked["options"]["channel"], "open/x");
    let left = anon.expect("leave").await;
    assert_eq!(left["options"]["channel"], "open/x");
    let update = member.expect("presence_update").await;
    assert_eq!(update["payload"]["action"], "leave");
    assert_eq!(update["payload"]["presence"]["socketId"], anon_id.as_str());

    // Nobody was disconnected, and the new rules decide later actions.
    anon.join("new/x", false, false).await;
    anon.message("open/x", json!("late")).await;
    anon.expect_error("Not joined to this channel").await;
    member.message("open/x", json!("still here")).await;
    assert_eq!(member.expect("message").await["payload"], "still here");

    // A broken file is refused whole; the running rules stay.
    write(&path, "[[apps]\nthis is not toml");
    let (status, body) = http_request(node.addr, "POST", "/admin/reload", Some(ADMIN), "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("TOML"), "{body}");
    anon.send(json!({"action":"join","options":{"channel":"open/y"},"payload":null}))
        .await;
    anon.expect_error("Anonymous clients cannot join this channel.")
        .await;
    anon.join("new/y", false, false).await;

    // The admin endpoint wants its token; a good file reloads through it too.
    let (status, _) = http_request(node.addr, "POST", "/admin/reload", Some("wrong"), "").await;
    assert_eq!(status, 401);
    write(&path, &config(true));
    let (status, body) = http_request(node.addr, "POST", "/admin/reload", Some(ADMIN), "").await;
    assert_eq!(status, 200, "{body}");
    // new/* is gone again: both of its channels are revoked (error, then leave, each).
    let mut revoked = Vec::new();
    for _ in 0..2 {
        let e = anon.expect_error("Channel access revoked").await;
        let l = anon.expect("leave").await;
        assert_eq!(e["options"]["channel"], l["options"]["channel"]);
        revoked.push(e["options"]["channel"].as_str().unwrap().to_string());
    }
    revoked.sort();
    assert_eq!(revoked, ["new/x", "new/y"]);
    anon.join("open/z", false, false).await;

    let (_, metrics) = http_get(node.addr, "/metrics").await;
    assert!(
        metrics.contains("switchboard_reloads_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = node;
}
