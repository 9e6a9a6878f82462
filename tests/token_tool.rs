//! `switchboard token` end to end: the real binary mints a token from a config file,
//! and a real socket of a server running that config is authenticated as the minted
//! identity; `--explain` gives a refused token the same reason the socket gets.

mod common;

use common::{Client, TestServer, BASE_CONFIG};
use std::process::Command;

fn config_file() -> std::path::PathBuf {
    let path = common::process::temp_path("token-tool", "toml");
    std::fs::write(&path, BASE_CONFIG).unwrap();
    path
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .expect("run switchboard token");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn a_minted_token_authenticates_a_real_socket() {
    let file = config_file();
    let config = file.to_str().unwrap();
    let (code, stdout, stderr) = run(&[
        "token",
        "--config",
        config,
        "--app",
        "test",
        "--sub",
        "42",
        "--dbo-id",
        "7",
        "--extras",
        r#"{"name":"Ann"}"#,
        "--roles",
        "admin",
        "--ttl",
        "10m",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let token = stdout.trim().to_string();

    let s = TestServer::start();
    let mut c = Client::connect(&s.url("test"), Some(&token)).await;
    // admin/* needs the role and an authenticated socket: the minted token has both.
    let ack = c.join("admin/room", false, false).await;
    assert_eq!(ack["client"]["permissions"]["row_id"], 42, "{ack}");
    assert_eq!(ack["client"]["permissions"]["dbo_id"], 7);
    assert_eq!(ack["client"]["extras"]["name"], "Ann");

    let (code, stdout, _) = run(&["token", "--config", config, "--explain", &token]);
    assert_eq!(code, 0);
    assert!(stdout.contains("app test: accepted"), "{stdout}");
    assert!(stdout.contains("row_id: 42"), "{stdout}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn explain_gives_a_refused_token_the_reason_the_socket_gets() {
    let file = config_file();
    let config = file.to_str().unwrap();
    let forged = common::token_with(
        jsonwebtoken::Algorithm::HS256,
        b"not-the-secret-0123456789abcdef0123456",
        serde_json::json!({"sub": 1, "exp": common::now() + 60}),
    );
    let (code, stdout, _) = run(&["token", "--config", config, "--explain", &forged]);
    assert_eq!(code, 1, "no app accepts it: {stdout}");
    let s = TestServer::start();
    let mut c = Client::connect(&s.url("test"), Some(&forged)).await;
    let error = c.expect("error").await;
    let socket_text = error["payload"]["message"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("app test: {socket_text}")),
        "socket: {socket_text:?}; explain: {stdout}"
    );
    // Minting for an app that is not there, or an RS256 key that is not given, fails.
    let (code, _, stderr) = run(&["token", "--config", config, "--app", "nope", "--sub", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no app with hash \"nope\""), "{stderr}");
    let _ = std::fs::remove_file(&file);
}
