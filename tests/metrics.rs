//! `/metrics` is Prometheus text and its counters move with traffic.

mod common;
use common::*;
use serde_json::json;

/// The value of a sample line `name{labels} value` (first match), 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name_and_labels).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_with_traffic() {
    let server = TestServer::start();
    let (status, before) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);

    let mut a = server.client().await;
    let mut b = server.client().await;
    a.join("chat/metrics", false, false).await;
    b.join("chat/metrics", false, false).await;
    a.message("chat/metrics", json!({"n": 1})).await;
    a.expect("message").await;
    b.expect("message").await;
    a.send(json!({"action":"join","options":{"channel":"nope"},"payload":null}))
        .await;
    a.expect_error("Channel not found").await;
    let (status, _) = server
        .publish(&json!({"channel":"chat/metrics","data":1}))
        .await;
    assert_eq!(status, 202);
    a.expect("event").await;

    let (_, after) = http_get(server.addr, "/metrics").await;
    let delta = |name: &str| sample(&after, name) - sample(&before, name);
    assert!(delta("switchboard_joins_total") >= 2.0, "{after}");
    assert!(delta("switchboard_messages_in_total") >= 1.0, "{after}");
    // The message reached two sockets, the event two more.
    assert!(delta("switchboard_deliveries_total") >= 4.0, "{after}");
    assert!(
        delta("switchboard_errors_total{error=\"Channel not found\"}") >= 1.0,
        "{after}"
    );
    assert!(
        delta("switchboard_publish_requests_total{status=\"202\"}") >= 1.0,
        "{after}"
    );
    assert!(
        sample(&after, "switchboard_connections{app=\"test\"}") >= 2.0,
        "{after}"
    );
    assert!(
        after.contains("# TYPE switchboard_deliveries_total counter"),
        "{after}"
    );
    // Process gauges, read at the scrape: this process holds the listener and the
    // two sockets at least, and some memory.
    let open_fds = sample(&after, "process_open_fds");
    assert!(open_fds >= 3.0, "{after}");
    assert!(sample(&after, "process_max_fds") >= open_fds, "{after}");
    assert!(
        sample(&after, "process_resident_memory_bytes") > 1_000_000.0,
        "{after}"
    );
}
