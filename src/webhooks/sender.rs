//! One app's sender: while this node holds the app's lease, take the oldest queued
//! events (up to `webhook_batch_max`), POST them as one signed batch, and forget
//! them on a 2xx. A failed batch is sent again, the same events with the same ids,
//! after 1, 2, 4 … 60 s, until `webhook_retry_s` has passed; then it is dropped,
//! counted and logged. Queued events leave within about 200 ms.

use super::signature;
use crate::cluster::QueuedEvent;
use crate::state::ServerState;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often an idle sender looks at the queue (and renews its lease).
const POLL: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// On a graceful stop, how long a sender keeps sending what is queued.
const FLUSH_WITHIN: Duration = Duration::from_secs(3);

/// What a batch needs of the app's settings, read again before every batch so a
/// reload takes effect.
struct Target {
    url: String,
    api_key: String,
    timeout: Duration,
    batch_max: usize,
    retry_for: Duration,
}

fn target(state: &ServerState, app: &str) -> Option<Target> {
    let settings = state.app(app)?.settings();
    let c = &settings.config;
    Some(Target {
        url: c.webhook_url.clone()?,
        api_key: c.api_key.clone(),
        timeout: Duration::from_millis(c.webhook_timeout_ms),
        batch_max: c.webhook_batch_max,
        retry_for: Duration::from_secs(c.webhook_retry_s),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{"time_ms": …, "events": [ … ]}`
pub fn batch_body(time_ms: u64, events: &[QueuedEvent]) -> Vec<u8> {
    let mut body = format!("{{\"time_ms\":{time_ms},\"events\":[").into_bytes();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&e.to_json());
    }
    body.extend_from_slice(b"]}");
    body
}

/// POST one batch; Ok on a 2xx.
async fn post(target: &Target, body: Vec<u8>) -> Result<(), String> {
    let signature = signature::sign(&target.api_key, &body);
    let started = Instant::now();
    let sent = crate::triggers::outbound_client()
        .post(&target.url)
        .timeout(target.timeout)
        .insert_header(("content-type", "application/json"))
        .insert_header((signature::HEADER, signature))
        .send_body(body)
        .await;
    metrics::histogram!("switchboard_webhook_seconds").record(started.elapsed().as_secs_f64());
    match sent {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("answered {}", response.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// A batch that failed: when it first failed, and the next pause.
struct Failing {
    since: Instant,
    pause: Duration,
}

/// The app's sender loop; ends when the app is gone, has no `webhook_url` any
/// more, or on a graceful stop (after sending what it can for a few seconds).
pub async fn run(state: Weak<ServerState>, app: String, mut stopping: watch::Receiver<bool>) {
    let mut failing: Option<Failing> = None;
    let mut flush_until: Option<Instant> = None;
    loop {
        if flush_until.is_none() && *stopping.borrow() {
            flush_until = Some(Instant::now() + FLUSH_WITHIN);
        }
        if flush_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let Some(state) = state.upgrade() else { return };
        let Some(target) = target(&state, &app) else {
            break;
        };
        let engine = state.engine.clone();
        drop(state);
        // Held across the slowest POST and a pause, renewed before every batch.
        let lease = target.timeout * 2 + Duration::from_secs(5);
        let events = match engine.webhook_lease(&app, lease).await {
            Ok(true) => engine
                .queued_webhooks(&app, target.batch_max)
                .await
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if events.is_empty() {
            // On a stop, the closed sockets' events were all queued before it.
            if flush_until.is_some() {
                break;
            }
            pause(POLL, &mut stopping).await;
            continue;
        }
        let n = events.len() as u64;
        match post(&target, batch_body(now_ms(), &events)).await {
            Ok(()) => {
                metrics::counter!("switchboard_webhook_events_sent_total").increment(n);
                failing = None;
                if let Err(e) = engine.forget_webhooks(&app, events).await {
                    tracing::warn!(app, error = %e, "sent webhook events not forgotten: they will be sent again");
                }
            }
            Err(why) => {
                let f = failing.get_or_insert(Failing {
                    since: Instant::now(),
                    pause: Duration::from_secs(1),
                });
                if f.since.elapsed() >= target.retry_for {
                    metrics::counter!("switchboard_webhook_events_dropped_total", "reason" => "retries_exhausted")
                        .increment(n);
                    tracing::error!(
                        app,
                        url = target.url,
                        events = n,
                        error = why,
                        "webhook batch dropped after retrying"
                    );
                    failing = None;
                    let _ = engine.forget_webhooks(&app, events).await;
                    continue;
                }
                metrics::counter!("switchboard_webhook_events_retried_total").increment(n);
                tracing::warn!(app, url = target.url, events = n, error = why, retry_in = ?f.pause, "webhook batch failed");
                let wait = f.pause;
                f.pause = (f.pause * 2).min(MAX_BACKOFF);
                match flush_until {
                    // Stopping: try again soon, until the flush deadline (a pooled
                    // connection the receiver had closed fails once, then works).
                    Some(until) => {
                        let left = until.saturating_duration_since(Instant::now());
                        tokio::time::sleep(wait.min(Duration::from_millis(250)).min(left)).await;
                    }
                    None => pause(wait, &mut stopping).await,
                }
            }
        }
    }
    if let Some(state) = state.upgrade() {
        if flush_until.is_some() {
            let left = state
                .engine
                .queued_webhooks(&app, 10_000)
                .await
                .map(|e| e.len())
                .unwrap_or(0);
            if left > 0 {
                // With Redis another node sends them; on one node they are lost.
                tracing::warn!(app, events = left, "stopping with lifecycle events unsent");
            }
        }
        let _ = state.engine.release_webhook_lease(&app).await;
    }
}

/// Sleep, cut short by a graceful stop.
async fn pause(d: Duration, stopping: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopping.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_batch_is_the_time_and_the_events_with_their_ids() {
        let events = vec![
            QueuedEvent {
                id: "1-1".into(),
                time_ms: 1,
                json: Bytes::from_static(br#"{"name":"channel_occupied","channel":"c"}"#),
            },
            QueuedEvent {
                id: "2-1".into(),
                time_ms: 2,
                json: Bytes::from_static(br#"{"name":"channel_vacated","channel":"c"}"#),
            },
        ];
        let v: serde_json::Value = serde_json::from_slice(&batch_body(9, &events)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"time_ms": 9, "events": [
                {"id": "1-1", "time_ms": 1, "name": "channel_occupied", "channel": "c"},
                {"id": "2-1", "time_ms": 2, "name": "channel_vacated", "channel": "c"},
            ]})
        );
    }
}
