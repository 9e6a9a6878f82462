//! Commands for the sockets of every node (server API: disconnect, unsubscribe).
//! The asking node publishes the command on `P control`; every node's bridge runs
//! it through the node's command sink and answers on the asker's own topic
//! `P control:N` with how many sockets it reached. `PUBLISH` tells the asker how
//! many nodes received the command, so it knows how many answers to wait for.

use super::*;
use crate::cluster::engine::{CommandSink, Control, SocketCommand};
use serde::{Deserialize, Serialize};

/// How long the asker waits for the other nodes' answers.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize)]
struct Request {
    id: String,
    reply_to: String,
    command: SocketCommand,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    id: String,
    reached: usize,
}

impl Inner {
    /// A command from some node (this one too): run it here and answer.
    pub(super) fn on_command(self: &Arc<Self>, payload: &[u8]) {
        let Ok(request) = serde_json::from_slice::<Request>(payload) else {
            tracing::warn!("undecodable control command dropped");
            return;
        };
        let sink = self.command_sink.lock().clone();
        let inner = self.clone();
        actix_rt::spawn(async move {
            let reached = match sink {
                Some(run) => run(request.command).await,
                None => 0,
            };
            let answer = Answer {
                id: request.id,
                reached,
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            let sent = inner.publish_on(&request.reply_to, body).await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "control answer not sent");
            }
        });
    }

    /// An answer to a command this node asked.
    pub(super) fn on_answer(&self, payload: &[u8]) {
        let Ok(answer) = serde_json::from_slice::<Answer>(payload) else {
            return;
        };
        if let Some(waiting) = self.awaiting_answers.lock().get(&answer.id) {
            let _ = waiting.send(answer.reached);
        }
    }
}

impl Control for Shard {
    fn command(&self, command: SocketCommand) -> EngineResult<usize> {
        let inner = self.inner.clone();
        Box::pin(async move {
            if !inner.connected.load(Ordering::Acquire) {
                return Err(EngineError::Unavailable("Redis unreachable".into()));
            }
            let id = inner.next_mid();
            let (tx, mut answers) = mpsc::unbounded_channel();
            inner.awaiting_answers.lock().insert(id.clone(), tx);
            let request = Request {
                id: id.clone(),
                reply_to: inner.own_topics.answers.clone(),
                command,
            };
            let body = serde_json::to_vec(&request).map_err(unavailable)?;
            let nodes = inner.publish_on(&inner.own_topics.control, body).await;
            let nodes = match nodes {
                Ok(n) => n,
                Err(e) => {
                    inner.awaiting_answers.lock().remove(&id);
                    return Err(unavailable(e));
                }
            };
            let mut reached = 0;
            let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
            for _ in 0..nodes {
                match tokio::time::timeout_at(deadline, answers.recv()).await {
                    Ok(Some(n)) => reached += n,
                    _ => {
                        tracing::warn!(%id, "a node did not answer a control command in time");
                        break;
                    }
                }
            }
            inner.awaiting_answers.lock().remove(&id);
            Ok(reached)
        })
    }

    fn set_command_sink(&self, sink: CommandSink) {
        *self.inner.command_sink.lock() = Some(sink);
    }
}
