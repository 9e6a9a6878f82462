//! Prometheus metrics (`GET /metrics`). Names are `switchboard_*`; hot-path counters
//! are bumped once per broadcast or frame, never per recipient.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Running totals for the admin view (the Prometheus recorder is write-only).
pub static MESSAGES_IN: AtomicU64 = AtomicU64::new(0);
pub static DELIVERIES: AtomicU64 = AtomicU64::new(0);

/// Install the recorder once per process (tests start several servers).
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program); we still render ours.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        zero_series();
        handle
    })
}

pub fn render() -> String {
    process_gauges();
    install().render()
}

/// Read at each scrape, under the names Prometheus's own process collectors use, so
/// existing dashboards and alerts on memory and descriptors work unchanged.
fn process_gauges() {
    #[cfg(target_os = "linux")]
    {
        // statm: size resident shared ... in pages.
        let resident_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok());
        // SAFETY: sysconf only reads a constant of the running system.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Some(pages) = resident_pages.filter(|_| page_size > 0) {
            gauge!("process_resident_memory_bytes").set(pages * page_size as f64);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge!("process_open_fds").set(fds.count() as f64);
        }
        let mut limit: libc::rlimit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            gauge!("process_max_fds").set(limit.rlim_cur as f64);
        }
    }
}

/// Series that may stay at zero for long are exported from the start, so that a
/// dashboard's `rate()` and alerts see 0 rather than nothing.
fn zero_series() {
    for reason in [
        "slow_consumer",
        "resend_buffer_full",
        "frame_rate",
        "rate_limit",
    ] {
        counter!("switchboard_drops_total", "reason" => reason).absolute(0);
    }
    counter!("switchboard_webhook_events_sent_total").absolute(0);
    counter!("switchboard_webhook_events_retried_total").absolute(0);
    for reason in ["queue_full", "retries_exhausted", "redis_unavailable"] {
        counter!("switchboard_webhook_events_dropped_total", "reason" => reason).absolute(0);
    }
    counter!("switchboard_redis_reconnects_total").absolute(0);
    for result in ["ok", "refused"] {
        counter!("switchboard_reloads_total", "result" => result).absolute(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("switchboard_connections", "Open WebSockets, per app");
    describe_counter!(
        "switchboard_connections_total",
        "WebSockets accepted, per app"
    );
    describe_counter!("switchboard_disconnects_total", "Sockets closed, by reason");
    describe_counter!("switchboard_joins_total", "Successful joins");
    describe_counter!(
        "switchboard_messages_in_total",
        "Client message frames received"
    );
    describe_counter!(
        "switchboard_deliveries_total",
        "Frames queued to sockets by channels"
    );
    describe_counter!(
        "switchboard_drops_total",
        "Frames or sockets dropped, by reason"
    );
    describe_counter!("switchboard_errors_total", "Error frames sent, by text");
    describe_counter!(
        "switchboard_publish_requests_total",
        "Publish API requests, by status"
    );
    describe_counter!(
        "switchboard_events_dropped_total",
        "Backend events from Redis that could not be delivered, by reason"
    );
    describe_histogram!("switchboard_trigger_seconds", "Webhook trigger latency");
    describe_histogram!(
        "switchboard_redis_roundtrip_seconds",
        "Redis publish round trip"
    );
    describe_counter!(
        "switchboard_redis_reconnects_total",
        "Redis pub/sub reconnects"
    );
    describe_gauge!(
        "switchboard_channels_live",
        "Live channel actors on this node"
    );
    describe_counter!(
        "switchboard_reloads_total",
        "Configuration reloads, by result"
    );
    describe_counter!(
        "switchboard_webhook_events_sent_total",
        "Lifecycle webhook events acknowledged by the receiver"
    );
    describe_counter!(
        "switchboard_webhook_events_retried_total",
        "Lifecycle webhook events in batches that failed and will be sent again"
    );
    describe_counter!(
        "switchboard_webhook_events_dropped_total",
        "Lifecycle webhook events dropped, by reason (queue_full, retries_exhausted, redis_unavailable)"
    );
    describe_histogram!(
        "switchboard_webhook_seconds",
        "Lifecycle webhook POST latency"
    );
    describe_gauge!("process_resident_memory_bytes", "Resident memory (RSS)");
    describe_gauge!("process_open_fds", "Open file descriptors (one per socket)");
    describe_gauge!("process_max_fds", "The soft limit on open file descriptors");
}

pub fn connection_opened(app: &str) {
    counter!("switchboard_connections_total", "app" => app.to_string()).increment(1);
    gauge!("switchboard_connections", "app" => app.to_string()).increment(1.0);
}

pub fn connection_closed(app: &str, reason: &'static str) {
    gauge!("switchboard_connections", "app" => app.to_string()).decrement(1.0);
    disconnect(reason);
}

/// A socket closed (or refused at the upgrade) for `reason`.
pub fn disconnect(reason: &'static str) {
    counter!("switchboard_disconnects_total", "reason" => reason).increment(1);
}

pub fn joined() {
    counter!("switchboard_joins_total").increment(1);
}

pub fn message_in() {
    MESSAGES_IN.fetch_add(1, Ordering::Relaxed);
    counter!("switchboard_messages_in_total").increment(1);
}

pub fn delivered(frames: u64) {
    if frames > 0 {
        DELIVERIES.fetch_add(frames, Ordering::Relaxed);
        counter!("switchboard_deliveries_total").increment(frames);
    }
}

pub fn dropped(reason: &'static str) {
    counter!("switchboard_drops_total", "reason" => reason).increment(1);
}

/// An error frame; "Invalid frame: …" texts are counted under one label.
pub fn error_sent(text: &str) {
    let label = match text.split_once(':') {
        Some((head, _)) => head.to_string(),
        None => text.to_string(),
    };
    counter!("switchboard_errors_total", "error" => label).increment(1);
}

pub fn publish_request(status: u16) {
    counter!("switchboard_publish_requests_total", "status" => status.to_string()).increment(1);
}

pub fn event_dropped(reason: &'static str) {
    counter!("switchboard_events_dropped_total", "reason" => reason).increment(1);
}

pub fn trigger_latency(d: Duration) {
    histogram!("switchboard_trigger_seconds").record(d.as_secs_f64());
}

pub fn redis_roundtrip(d: Duration) {
    histogram!("switchboard_redis_roundtrip_seconds").record(d.as_secs_f64());
}

pub fn redis_reconnect() {
    counter!("switchboard_redis_reconnects_total").increment(1);
}

pub fn reload(result: &'static str) {
    counter!("switchboard_reloads_total", "result" => result).increment(1);
}

pub fn channels_live(delta: f64) {
    gauge!("switchboard_channels_live").increment(delta);
}
