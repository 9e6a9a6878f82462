//! Lifecycle webhooks (docs/protocol.md section 7.1): batches of connect,
//! disconnect, member and channel events, POSTed after the fact to an app's
//! `webhook_url`, signed, retried with backoff, at least once.
//!
//! The events are queued by the engine (`cluster::lifecycle`), which decides the
//! cluster-wide ones; this module only sends. One sender task per app with a
//! `webhook_url` runs on every node, but only the node holding the app's lease
//! sends, so each event leaves from one node and in queue order. Nothing here runs
//! on a client's path: a slow or dead receiver delays no join, message or delivery.
//!
//! Files: this one starts and stops the senders; `sender` is one app's loop;
//! `signature` the body's HMAC.

mod sender;
pub mod signature;

use crate::state::ServerState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The running senders: started at boot, told to finish on a graceful stop.
pub struct Senders {
    stop: watch::Sender<bool>,
    finished: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Start the supervisor: every second it starts a sender for each app that has a
/// `webhook_url` (a reload may add one) and lets senders of other apps end.
pub fn start(state: &Arc<ServerState>) -> Arc<Senders> {
    let (stop, stopping) = watch::channel(false);
    let state = Arc::downgrade(state);
    let supervisor = actix_rt::spawn(async move {
        let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut watch_stop = stopping.clone();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = watch_stop.changed() => {}
            }
            running.retain(|_, task| !task.is_finished());
            let Some(state) = state.upgrade() else { break };
            if *stopping.borrow() {
                break;
            }
            for app in state.apps() {
                if app.settings().config.webhook_url.is_none() {
                    continue;
                }
                let hash = app.hash.to_string();
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(hash) {
                    let task =
                        sender::run(Arc::downgrade(&state), slot.key().clone(), stopping.clone());
                    slot.insert(actix_rt::spawn(task));
                }
            }
        }
        for (_, task) in running {
            let _ = task.await;
        }
    });
    Arc::new(Senders {
        stop,
        finished: tokio::sync::Mutex::new(Some(supervisor)),
    })
}

impl Senders {
    /// A graceful stop: each sender sends what is queued for up to `within`, then
    /// gives its lease up (with Redis, another node sends the rest).
    pub async fn stop(&self, within: Duration) {
        let _ = self.stop.send(true);
        if let Some(task) = self.finished.lock().await.take() {
            if tokio::time::timeout(within + Duration::from_secs(1), task)
                .await
                .is_err()
            {
                tracing::warn!("webhook senders did not finish in time");
            }
        }
    }
}
