//! The bridge's pub/sub connection, in its two kinds: classic `SUBSCRIBE` on a
//! connection of its own to one Redis server, or, under Redis Cluster, sharded
//! `SSUBSCRIBE` on a RESP3 connection to the master that owns the partition's
//! slot. Every topic of a partition is in that one slot, so one connection holds
//! them all; when the slot moves, the old master unsubscribes it (an
//! `sunsubscribe` nobody asked for), and the bridge connects again to the new one.

use super::*;
use redis::{PushInfo, PushKind, Value};
use std::collections::HashMap;

/// Where the bridge (un)subscribes.
pub(super) enum SubSink {
    Classic(redis::aio::PubSubSink),
    Sharded {
        conn: redis::aio::MultiplexedConnection,
        /// A classic topic on this connection (backends' `P publish`).
        classic: Option<String>,
        /// Topics this node unsubscribed and whose confirmation has not come yet.
        unsubscribing: HashMap<String, usize>,
    },
}

/// What arrives on the pub/sub connection.
pub(super) enum SubStream {
    Classic(redis::aio::PubSubStream),
    Sharded(mpsc::UnboundedReceiver<PushInfo>),
}

pub(super) enum Incoming {
    Classic(redis::Msg),
    /// `[topic, payload]` of a (sharded) message push.
    Push(Vec<Value>),
    /// The server unsubscribed this topic (sharded only).
    Unsubscribed(String),
    /// The connection is gone.
    Lost,
}

/// Open the pub/sub connection of `inner`'s kind to `client`'s server.
pub(super) async fn connect(
    inner: &Inner,
    client: &redis::Client,
) -> redis::RedisResult<(SubSink, SubStream)> {
    if !inner.sharded_pubsub {
        let (sink, stream) = client.get_async_pubsub().await?.split();
        return Ok((SubSink::Classic(sink), SubStream::Classic(stream)));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_push_sender(tx);
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok((
        SubSink::Sharded {
            conn,
            classic: inner.own_topics.events.clone(),
            unsubscribing: HashMap::new(),
        },
        SubStream::Sharded(rx),
    ))
}

impl SubSink {
    /// Subscribe every topic of `topics`.
    pub(super) async fn subscribe_all(&mut self, topics: &[String]) -> redis::RedisResult<()> {
        match self {
            SubSink::Classic(sink) => sink.subscribe(topics).await,
            SubSink::Sharded { conn, classic, .. } => {
                // One topic a command: the client counts one confirmation a command.
                let mut pipe = redis::pipe();
                for topic in topics {
                    if Some(topic) == classic.as_ref() {
                        conn.subscribe(topic).await?;
                    } else {
                        pipe.cmd("SSUBSCRIBE").arg(topic);
                    }
                }
                if !pipe.is_empty() {
                    pipe.query_async::<Vec<Value>>(conn).await?;
                }
                Ok(())
            }
        }
    }

    pub(super) async fn subscribe(&mut self, topic: &str) -> redis::RedisResult<()> {
        match self {
            SubSink::Classic(sink) => sink.subscribe(topic).await,
            SubSink::Sharded { conn, .. } => redis::cmd("SSUBSCRIBE")
                .arg(topic)
                .query_async::<Value>(conn)
                .await
                .map(drop),
        }
    }

    pub(super) async fn unsubscribe(&mut self, topic: &str) {
        match self {
            SubSink::Classic(sink) => {
                let _ = sink.unsubscribe(topic).await;
            }
            SubSink::Sharded {
                conn,
                unsubscribing,
                ..
            } => {
                *unsubscribing.entry(topic.to_string()).or_default() += 1;
                let _: redis::RedisResult<Value> = redis::cmd("SUNSUBSCRIBE")
                    .arg(topic)
                    .query_async(conn)
                    .await;
            }
        }
    }

    /// Whether an `sunsubscribe` of `topic` answers this node's own unsubscribe
    /// (else the server dropped the subscription: its slot moved).
    pub(super) fn asked_to_unsubscribe(&mut self, topic: &str) -> bool {
        let SubSink::Sharded { unsubscribing, .. } = self else {
            return true;
        };
        match unsubscribing.get_mut(topic) {
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    unsubscribing.remove(topic);
                }
                true
            }
            None => false,
        }
    }
}

impl SubStream {
    pub(super) async fn next(&mut self) -> Incoming {
        match self {
            SubStream::Classic(stream) => match stream.next().await {
                Some(msg) => Incoming::Classic(msg),
                None => Incoming::Lost,
            },
            SubStream::Sharded(rx) => loop {
                let Some(PushInfo { kind, data }) = rx.recv().await else {
                    return Incoming::Lost;
                };
                match kind {
                    PushKind::SMessage | PushKind::Message => return Incoming::Push(data),
                    PushKind::SUnsubscribe => {
                        let topic = data
                            .first()
                            .and_then(|t| redis::from_redis_value::<String>(t.clone()).ok())
                            .unwrap_or_default();
                        return Incoming::Unsubscribed(topic);
                    }
                    PushKind::Disconnection => return Incoming::Lost,
                    _ => continue,
                }
            },
        }
    }
}
