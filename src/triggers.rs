//! Webhook triggers (docs/protocol.md section 7): the app's backend may refuse a join or
//! a message, or replace a message's payload.

use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub enum Verdict {
    Allow,
    Deny,
    Replace(Box<RawValue>),
}

/// The roots for `https://` triggers, set once at start (`use_roots`); the system's
/// when never set.
static ROOTS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

/// Trust the system's roots plus `server.outbound_ca_file` for every trigger call.
pub fn use_roots(tls: rustls::ClientConfig) {
    let _ = ROOTS.set(Arc::new(tls));
}

fn roots() -> Arc<rustls::ClientConfig> {
    ROOTS
        .get_or_init(|| {
            Arc::new(crate::http::tls::client_config(None).expect("the system's roots load"))
        })
        .clone()
}

thread_local! {
    // awc clients are per thread (not Send); one per worker keeps connections pooled.
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_redirects()
        .connector(awc::Connector::new().rustls_0_23(roots()))
        .finish();
}

/// This worker's HTTP client for outgoing calls (triggers and lifecycle webhooks):
/// no redirects, the roots of `use_roots`.
pub fn outbound_client() -> awc::Client {
    CLIENT.with(|c| c.clone())
}

/// POST `body` to `url` with the app's API key and read the verdict.
/// Timeouts, transport errors and non-2xx answers refuse (and are logged).
pub async fn call(url: &str, api_key: &str, timeout: Duration, body: serde_json::Value) -> Verdict {
    let request = CLIENT.with(|c| {
        c.post(url)
            .timeout(timeout)
            .bearer_auth(api_key)
            .insert_header(("content-type", "application/json"))
    });
    let started = std::time::Instant::now();
    let sent = request.send_json(&body).await;
    crate::metrics::trigger_latency(started.elapsed());
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(url, error = %e, "trigger failed: refusing");
            return Verdict::Deny;
        }
    };
    if !response.status().is_success() {
        tracing::warn!(url, status = %response.status(), "trigger answered non-2xx: refusing");
        return Verdict::Deny;
    }
    let bytes = match response.body().limit(1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(url, error = %e, "trigger body unreadable: refusing");
            return Verdict::Deny;
        }
    };
    verdict(&bytes)
}

/// `false` refuses; `null` or nothing passes; any other JSON replaces the payload.
pub fn verdict(body: &[u8]) -> Verdict {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    if text.is_empty() || text == "null" {
        return Verdict::Allow;
    }
    match serde_json::from_str::<Box<RawValue>>(text) {
        Ok(v) if v.get() == "false" => Verdict::Deny,
        Ok(v) => Verdict::Replace(v),
        Err(_) => {
            tracing::warn!("trigger answered invalid JSON: refusing");
            Verdict::Deny
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert!(matches!(verdict(b""), Verdict::Allow));
        assert!(matches!(verdict(b" null "), Verdict::Allow));
        assert!(matches!(verdict(b"false"), Verdict::Deny));
        assert!(matches!(verdict(b"{oops"), Verdict::Deny));
        match verdict(br#"{"text":"clean"}"#) {
            Verdict::Replace(v) => assert_eq!(v.get(), r#"{"text":"clean"}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(verdict(b"true"), Verdict::Replace(_)));
    }
}
