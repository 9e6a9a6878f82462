//! A session lasts as long as its token (docs/protocol.md section 1): at `exp` (plus
//! the connect leeway) the socket is closed with 4000 and the SDK reconnects with the
//! token it holds; `expired_token = "keep"` keeps hosted Xano's behaviour;
//! `jwt.require_exp`, `jwt.issuer` and `jwt.audience` refuse tokens at connect; a
//! reload that removes an app closes its sockets with 4401.

mod common;
use common::*;
use serde_json::json;
use std::io::Write;
use std::time::{Duration, Instant};

fn config(app_extra: &str, jwt_extra: &str) -> String {
    let rule = r#"
[[apps.channels]]
pattern = "members/*"
public_messaging = { active = true }
settings = { anonymous_clients = false }
"#;
    test_app_config("", app_extra, jwt_extra, rule)
}

/// A token for user `sub` whose `exp` is `exp_in_s` from now (may be negative: the
/// connect leeway of 5 s still accepts it).
fn token_expiring(sub: i64, exp_in_s: i64) -> String {
    token(json!({"sub": sub, "exp": now() + exp_in_s}))
}

#[tokio::test]
async fn an_expiring_token_closes_its_socket_with_4000_at_exp() {
    let server = TestServer::with_config(&config("", ""));
    // exp 4 s ago: accepted at connect (5 s leeway), the session ends in about 1 s.
    let started = Instant::now();
    let mut c = server.client_with_token(&token_expiring(42, -4)).await;
    c.join("members/a", false, false).await;
    assert_eq!(c.expect_close().await, 4000);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A token without exp keeps its socket, and a long one is not cut short.
    let mut forever = server.client_with_token(&token(json!({"sub": 7}))).await;
    let mut long = server.client_with_token(&token_expiring(8, 3600)).await;
    forever.join("members/b", false, false).await;
    long.join("members/b", false, false).await;
    forever.message("members/b", json!("hi")).await;
    assert_eq!(long.expect("message").await["payload"], "hi");
}

#[tokio::test]
async fn keep_mode_leaves_an_expired_session_authenticated() {
    let server = TestServer::with_config(&config(r#"expired_token = "keep""#, ""));
    let mut c = server.client_with_token(&token_expiring(42, -4)).await;
    c.join("members/a", false, false).await;
    // Past the moment "reconnect" would have closed it (exp + 5 s leeway).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.message("members/a", json!("still me")).await;
    let echo = c.expect("message").await;
    assert_eq!(echo["client"]["permissions"]["row_id"], 42);
}

#[tokio::test]
async fn require_exp_issuer_and_audience_refuse_tokens_at_connect() {
    let server = TestServer::with_config(&config(
        "",
        r#"require_exp = true
issuer = "https://auth.example.com"
audience = "realtime""#,
    ));
    let good =
        json!({"sub": 1, "exp": now() + 600, "iss": "https://auth.example.com", "aud": "realtime"});
    let mut c = server.client_with_token(&token(good.clone())).await;
    c.join("members/a", false, false).await;

    for (claims, reason) in [
        (
            json!({"sub": 1, "iss": "https://auth.example.com", "aud": "realtime"}),
            "missing claim exp",
        ),
        (
            json!({"sub": 1, "exp": now() + 600, "iss": "https://evil.example.com", "aud": "realtime"}),
            "wrong issuer",
        ),
        (
            json!({"sub": 1, "exp": now() + 600, "iss": "https://auth.example.com", "aud": "other"}),
            "wrong audience",
        ),
    ] {
        let mut c = server.client_with_token(&token(claims)).await;
        c.expect_error(&format!("Auth token rejected: {reason}"))
            .await;
        // Anonymous now: refused from a channel that needs authentication.
        c.send(json!({"action":"join","options":{"channel":"members/a"},"payload":null}))
            .await;
        c.expect_error("Anonymous clients cannot join this channel.")
            .await;
    }
}

#[tokio::test]
async fn a_reload_that_removes_an_app_closes_its_sockets_with_4401() {
    const ADMIN: &str = "sessions-admin-token";
    let two_apps = format!(
        "{}\n[[apps]]\nname = \"Other\"\nhash = \"other\"\napi_key = \"other-api-key\"\n\
         jwt = {{ secret = \"{SECRET}\" }}\n[[apps.channels]]\npattern = \"open/*\"\n\
         public_messaging = {{ active = true }}\nsettings = {{ anonymous_clients = true }}\n",
        config("", "")
    )
    .replace(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{ADMIN}\"\n"),
    );
    let dir = std::env::temp_dir().join(format!("sb-sessions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("switchboard.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(two_apps.as_bytes())
        .unwrap();
    let log = path.with_extension("log");
    let (mut child, addr) =
        process::spawn_listening(process::broker_command(&path, &log), &log).await;

    let mut removed = Client::connect(&format!("ws://{addr}/rt/other"), None).await;
    removed.join("open/x", false, false).await;
    let mut kept = Client::connect(&format!("ws://{addr}/rt/test"), Some(&user_token(1))).await;
    kept.join("members/a", false, false).await;

    std::fs::File::create(&path)
        .unwrap()
        .write_all(
            config("", "")
                .replace(
                    "[server]\n",
                    &format!("[server]\nadmin_token = \"{ADMIN}\"\n"),
                )
                .as_bytes(),
        )
        .unwrap();
    let (status, body) = http_request(addr, "POST", "/admin/reload", Some(ADMIN), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(removed.expect_close().await, 4401);
    // The other app's sockets stay.
    kept.message("members/a", json!("here")).await;
    assert_eq!(kept.expect("message").await["payload"], "here");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 16, part 2: the demo app's public secrets are refused on any address that is
/// not loopback, with an error naming the variable to set; `serve --demo` allows them.
#[tokio::test]
async fn the_binary_refuses_demo_secrets_on_a_public_address() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let log = process::temp_path("public-secrets", "log");
    let mut refused = process::broker_command(&config, &log);
    refused.env("SWITCHBOARD__SERVER__LISTEN", "0.0.0.0:0");
    let status = refused.status().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("SWITCHBOARD__APPS__0__JWT__SECRET"), "{text}");

    // --demo starts anyway; so does a loopback address, and real secrets.
    let mut demo = process::broker_command(&config, &log);
    demo.env("SWITCHBOARD__SERVER__LISTEN", "0.0.0.0:0")
        .arg("--demo");
    let (mut child, _) = process::spawn_listening(demo, &log).await;
    let _ = child.kill();
    let _ = child.wait();
    let mut own = process::broker_command(&config, &log);
    own.env("SWITCHBOARD__SERVER__LISTEN", "0.0.0.0:0")
        .env(
            "SWITCHBOARD__APPS__0__JWT__SECRET",
            "an-operator-secret-of-more-than-32-bytes",
        )
        .env("SWITCHBOARD__APPS__0__API_KEY", "an-operator-api-key");
    let (mut child, _) = process::spawn_listening(own, &log).await;
    let _ = child.kill();
    let _ = child.wait();
}
