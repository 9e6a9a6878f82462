//! Browser origins (cross-site WebSocket hijacking) and the per-IP connect rate.

mod common;
use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

fn config_with(extra_limits: &str, app_extra: &str) -> String {
    BASE_CONFIG
        .replace(
            "[limits]\nmessages_per_minute = 0\n",
            &format!("[limits]\nmessages_per_minute = 0\n{extra_limits}\n"),
        )
        .replace(
            "api_key = \"test-api-key\"\n",
            &format!("api_key = \"test-api-key\"\n{app_extra}\n"),
        )
}

/// The HTTP status of an upgrade attempt: 101 when it became a WebSocket.
async fn upgrade_status(url: &str, origin: Option<&str>) -> u16 {
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected upgrade error: {e}"),
    }
}

#[tokio::test]
async fn other_origins_are_refused_with_403() {
    let server = TestServer::with_config(&config_with(
        "",
        "allowed_origins = [\"https://app.example.com\"]",
    ));
    let url = server.url("test");
    assert_eq!(
        upgrade_status(&url, Some("https://evil.example.net")).await,
        403
    );
    assert_eq!(
        upgrade_status(&url, Some("https://app.example.com")).await,
        101
    );
    // Non-browser clients send no Origin.
    assert_eq!(upgrade_status(&url, None).await, 101);
    // A socket from the allowed origin works.
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://app.example.com".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client::from_stream(ws);
    c.join("chat/origin", false, false).await;
}

#[tokio::test]
async fn any_origin_when_none_configured() {
    let server = TestServer::start();
    assert_eq!(
        upgrade_status(&server.url("test"), Some("https://anywhere.example")).await,
        101
    );
}

#[tokio::test]
async fn connect_flood_from_one_address_gets_429() {
    let server = TestServer::with_config(&config_with("connects_per_ip_per_s = 5", ""));
    let url = server.url("test");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(upgrade_status(&url, None).await);
    }
    let accepted = statuses.iter().filter(|s| **s == 101).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(accepted >= 5, "{statuses:?}");
    assert!(limited >= 1, "{statuses:?}");
    assert_eq!(accepted + limited, statuses.len(), "{statuses:?}");
}
