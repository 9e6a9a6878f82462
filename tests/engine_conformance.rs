//! One conformance suite for every engine: the same cases run against the in-memory
//! engine and against the Redis engine on a real `redis-server`. Whatever a channel
//! actor may rely on (delivery order, history caps and audiences, presence,
//! member lookup for direct messages, user slots, pattern fan-out) is asked here
//! through the `Engine` traits only, so the two cannot drift apart.

mod cluster_support;
mod common;

use actix::prelude::*;
use bytes::Bytes;
use cluster_support::Redis;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchboard::cluster::{
    self, Audience, Broadcast, ChannelKey, Deliver, Engine, HistoryEntry, MemberRecord,
};
use switchboard::config::ClusterConfig;
use switchboard::protocol::shared_json;
use switchboard::rules::EventTarget;
use tokio::sync::mpsc;

/// A subscriber that hands every delivered broadcast to the test.
struct Collector(mpsc::UnboundedSender<Broadcast>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Collector {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let _ = self.0.send(msg.0);
    }
}

fn collector() -> (Recipient<Deliver>, mpsc::UnboundedReceiver<Broadcast>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Collector(tx).start().recipient(), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Broadcast>) -> Broadcast {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a broadcast within 5 s")
        .expect("collector alive")
}

fn broadcast(text: &str, audience: Audience, history_cap: usize) -> Broadcast {
    Broadcast {
        json: Bytes::from(format!("{{\"m\":{text:?}}}")),
        audience,
        history_cap,
        origin: None,
        seq: None,
    }
}

fn texts(entries: &[HistoryEntry]) -> Vec<Bytes> {
    entries.iter().map(|e| e.json.clone()).collect()
}

fn member(id: &str, presence: bool, authenticated: bool) -> MemberRecord {
    MemberRecord {
        socket_id: Arc::from(id),
        presence,
        authenticated,
        client: shared_json(&serde_json::json!({ "socketId": id })),
    }
}

/// Wait until `check` holds (the Redis engine applies unsubscribes in the background).
async fn eventually(what: &str, mut check: impl FnMut() -> BoxFuture<'static, bool>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Case = fn(Arc<dyn Engine>) -> BoxFuture<'static, ()>;

/// Run a case against the in-memory engine, then against one Redis, then against
/// two Redis shards, then against a 3-master Redis Cluster.
fn conform(case: Case) {
    actix_rt::System::new().block_on(async move {
        let memory = cluster::start(&ClusterConfig::default(), usize::MAX).expect("memory engine");
        case(memory).await;

        let redis = Redis::start_with(&[]).await;
        let config = ClusterConfig {
            redis_url: redis.url(),
            ..ClusterConfig::default()
        };
        case(ready_engine(&config).await).await;

        // Fresh servers: the first engine still runs on `redis`.
        let shards = [Redis::start_with(&[]).await, Redis::start_with(&[]).await];
        let config = ClusterConfig {
            redis_shards: shards.iter().map(Redis::url).collect(),
            ..ClusterConfig::default()
        };
        case(ready_engine(&config).await).await;

        let redis_cluster = Redis::start_cluster().await;
        let config = ClusterConfig {
            redis_cluster: redis_cluster
                .shard_ports()
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
            ..ClusterConfig::default()
        };
        case(ready_engine(&config).await).await;
    });
}

async fn ready_engine(config: &ClusterConfig) -> Arc<dyn Engine> {
    let engine = cluster::start(config, usize::MAX).expect("redis engine");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.ready() {
        assert!(Instant::now() < deadline, "Redis engine ready within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine
}

#[test]
fn broadcasts_arrive_in_publish_order_and_history_keeps_that_order() {
    conform(|engine| {
        Box::pin(async move {
            let key = ChannelKey::new("app", "order");
            let (sink, mut rx) = collector();
            engine.subscribe(&key, sink).await.unwrap();
            let sent: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
            for text in &sent {
                let stored = if text.ends_with('7') { 0 } else { 1000 };
                engine
                    .publish(&key, broadcast(text, Audience::everyone(), stored))
                    .await
                    .unwrap();
            }
            let mut live = Vec::new();
            for _ in &sent {
                live.push(next(&mut rx).await.json);
            }
            let expected: Vec<Bytes> = sent
                .iter()
                .map(|t| broadcast(t, Audience::everyone(), 0).json)
                .collect();
            assert_eq!(live, expected, "live order");
            let history = engine.history(&key).await.unwrap();
            let stored: Vec<Bytes> = expected
                .iter()
                .filter(|j| !j.ends_with(b"7\"}"))
                .cloned()
                .collect();
            assert_eq!(
                texts(&history),
                stored,
                "history order, cap-0 entries left out"
            );
        })
    });
}

#[test]
fn history_is_capped_to_the_newest_entries() {
    conform(|engine| {
        Box::pin(async move {
            let key = ChannelKey::new("app", "capped");
            for i in 0..5 {
                engine
                    .publish(&key, broadcast(&format!("h{i}"), Audience::everyone(), 3))
                    .await
                    .unwrap();
            }
            let history = engine.history(&key).await.unwrap();
            let expected: Vec<Bytes> = (2..5)
                .map(|i| broadcast(&format!("h{i}"), Audience::everyone(), 0).json)
                .collect();
            assert_eq!(texts(&history), expected);
            let empty = engine
                .history(&ChannelKey::new("app", "never"))
                .await
                .unwrap();
            assert!(empty.is_empty());
        })
    });
}

/// A history is the newest capped entries, however many uncapped broadcasts
/// (presence events) came after them (on Redis the stream holds both, read in pages).
#[test]
fn history_skips_uncapped_broadcasts_published_after_it() {
    conform(|engine| {
        Box::pin(async move {
            let key = ChannelKey::new("app", "busy-presence");
            for i in 0..5 {
                engine
                    .publish(&key, broadcast(&format!("h{i}"), Audience::everyone(), 4))
                    .await
                    .unwrap();
            }
            for i in 0..450 {
                engine
                    .publish(&key, broadcast(&format!("p{i}"), Audience::everyone(), 0))
                    .await
                    .unwrap();
            }
            let history = engine.history(&key).await.unwrap();
            let expected: Vec<Bytes> = (1..5)
                .map(|i| broadcast(&format!("h{i}"), Audience::everyone(), 0).json)
                .collect();
            assert_eq!(texts(&history), expected);
        })
    });
}

/// A history nobody added to within `cluster.history_ttl_s` is gone.
#[test]
fn history_expires_after_its_ttl_without_writes() {
    actix_rt::System::new().block_on(async move {
        let redis = Redis::start_with(&[]).await;
        let redis_cluster = Redis::start_cluster().await;
        for config in [
            ClusterConfig {
                redis_url: redis.url(),
                history_ttl_s: 1,
                ..ClusterConfig::default()
            },
            ClusterConfig {
                redis_cluster: redis_cluster
                    .shard_ports()
                    .iter()
                    .map(|p| format!("redis://127.0.0.1:{p}"))
                    .collect(),
                history_ttl_s: 1,
                ..ClusterConfig::default()
            },
        ] {
            let engine = ready_engine(&config).await;
            let key = ChannelKey::new("app", "short-lived");
            engine
                .publish(&key, broadcast("old", Audience::everyone(), 10))
                .await
                .unwrap();
            assert_eq!(engine.history(&key).await.unwrap().len(), 1);
            // The TTL is the event awaited here.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            engine
                .publish(&key, broadcast("presence", Audience::everyone(), 0))
                .await
                .unwrap();
            assert!(
                engine.history(&key).await.unwrap().is_empty(),
                "expired with its TTL; an uncapped broadcast does not revive it"
            );
            engine
                .publish(&key, broadcast("new", Audience::everyone(), 10))
                .await
                .unwrap();
            let history = engine.history(&key).await.unwrap();
            assert_eq!(
                texts(&history),
                vec![broadcast("new", Audience::everyone(), 0).json],
                "written again, without what expired"
            );
        }
    });
}

/// Every channel stream has a TTL, so an idle channel costs Redis nothing: the
/// recovery window without history, the history TTL with it, and a stream Redis lost
/// while the node thought its TTL set gets one again when a publish creates it.
#[test]
fn every_channel_stream_expires() {
    actix_rt::System::new().block_on(async move {
        let redis = Redis::start_with(&[]).await;
        let config = ClusterConfig {
            redis_url: redis.url(),
            history_ttl_s: 3600,
            ..ClusterConfig::default()
        };
        let engine = ready_engine(&config).await;
        let mut conn = redis.conn().await;
        let key = ChannelKey::new("app", "expiring");
        let ttl = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                let streams: Vec<String> = redis::cmd("KEYS")
                    .arg("*app:s:expiring")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(streams.len(), 1, "{streams:?}");
                let ms: i64 = redis::cmd("PTTL")
                    .arg(&streams[0])
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                (streams[0].clone(), ms)
            }
        };
        engine
            .publish(&key, broadcast("p", Audience::everyone(), 0))
            .await
            .unwrap();
        let (stream, ms) = ttl(&mut conn).await;
        assert!((100_000..=130_000).contains(&ms), "recovery window: {ms}");
        engine
            .publish(&key, broadcast("h", Audience::everyone(), 10))
            .await
            .unwrap();
        let (_, ms) = ttl(&mut conn).await;
        assert!(ms > 3_600_000, "history TTL: {ms}");
        redis::cmd("DEL")
            .arg(&stream)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        engine
            .publish(&key, broadcast("p2", Audience::everyone(), 0))
            .await
            .unwrap();
        let (_, ms) = ttl(&mut conn).await;
        assert!(ms > 0, "a stream created again has a TTL: {ms}");
    });
}

#[test]
fn audiences_survive_delivery_and_history_remembers_who_may_see_an_entry() {
    conform(|engine| {
        Box::pin(async move {
            let key = ChannelKey::new("app", "audiences");
            let (sink, mut rx) = collector();
            engine.subscribe(&key, sink).await.unwrap();
            let audiences = [
                Audience::everyone(),
                Audience::Members {
                    authenticated_only: true,
                },
                Audience::Socket {
                    id: Arc::from("s1"),
                },
                Audience::Presence {
                    except: Arc::from("s2"),
                },
                // An event with `auth_id` 42 in table 7.
                Audience::User(EventTarget {
                    row_id: "42".into(),
                    dbo_id: Some(7),
                }),
            ];
            for (i, audience) in audiences.iter().enumerate() {
                engine
                    .publish(&key, broadcast(&format!("a{i}"), audience.clone(), 10))
                    .await
                    .unwrap();
            }
            for audience in &audiences {
                assert_eq!(&next(&mut rx).await.audience, audience);
            }
            let stored: Vec<Audience> = engine
                .history(&key)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.audience)
                .collect();
            // A stored copy keeps its audience: an event aimed at user 42 stays theirs.
            assert_eq!(stored, audiences.to_vec());
        })
    });
}

#[test]
fn presence_lists_members_that_asked_for_it_until_they_leave() {
    conform(|engine| {
        Box::pin(async move {
            let key = ChannelKey::new("app", "presence");
            engine
                .member_joined(&key, member("a", true, false))
                .await
                .unwrap();
            engine
                .member_joined(&key, member("b", false, true))
                .await
                .unwrap();
            engine
                .member_joined(&key, member("c", true, true))
                .await
                .unwrap();
            let mut listed: Vec<String> = engine
                .presence(&key)
                .await
                .unwrap()
                .iter()
                .map(|c| c.get().to_string())
                .collect();
            listed.sort();
            assert_eq!(listed, vec![r#"{"socketId":"a"}"#, r#"{"socketId":"c"}"#]);
            engine.member_left(&key, Arc::from("a")).await.unwrap();
            let after = engine.presence(&key).await.unwrap();
            assert_eq!(after.len(), 1);
            assert_eq!(after[0].get(), r#"{"socketId":"c"}"#);
            engine.member_left(&key, Arc::from("c")).await.unwrap();
            assert!(engine.presence(&key).await.unwrap().is_empty());
        })
    });
}

#[test]
fn direct_message_targets_are_found_with_their_authentication() {
    conform(|engine| {
        Box::pin(async move {
            let key = ChannelKey::new("app", "direct");
            engine
                .member_joined(&key, member("anon", false, false))
                .await
                .unwrap();
            engine
                .member_joined(&key, member("user", false, true))
                .await
                .unwrap();
            let find = |id: &str| engine.find_member(&key, Arc::from(id));
            assert_eq!(find("anon").await.unwrap(), Some(false));
            assert_eq!(find("user").await.unwrap(), Some(true));
            assert_eq!(find("nobody").await.unwrap(), None);
            let other = ChannelKey::new("app", "elsewhere");
            assert_eq!(
                engine.find_member(&other, Arc::from("user")).await.unwrap(),
                None
            );
            engine.member_left(&key, Arc::from("user")).await.unwrap();
            assert_eq!(find("user").await.unwrap(), None);
        })
    });
}

#[test]
fn user_slots_stop_at_the_limit_and_come_back_when_released() {
    conform(|engine| {
        Box::pin(async move {
            assert!(engine.admit_user("app", "42", 2).await.unwrap());
            assert!(engine.admit_user("app", "42", 2).await.unwrap());
            assert!(!engine.admit_user("app", "42", 2).await.unwrap());
            // Another user, and the same user id in another app, count apart.
            assert!(engine.admit_user("app", "43", 2).await.unwrap());
            assert!(engine.admit_user("other", "42", 2).await.unwrap());
            engine.release_user("app", "42");
            let e = engine.clone();
            eventually("a released slot is free again", move || {
                let e = e.clone();
                Box::pin(async move {
                    let admitted = e.admit_user("app", "42", 2).await.unwrap();
                    if admitted {
                        e.release_user("app", "42");
                    }
                    admitted
                })
            })
            .await;
        })
    });
}

#[test]
fn pattern_fan_out_finds_the_live_channels_under_a_prefix() {
    conform(|engine| {
        Box::pin(async move {
            let (sink, _rx) = collector();
            for (app, name) in [
                ("app", "chat/a"),
                ("app", "chat/b"),
                ("app", "room/x"),
                ("app", "chat/"),
                ("other", "chat/c"),
            ] {
                engine
                    .subscribe(&ChannelKey::new(app, name), sink.clone())
                    .await
                    .unwrap();
            }
            let mut live = engine.live_channels("app", "chat/").await.unwrap();
            live.sort();
            assert_eq!(live, vec!["chat/a", "chat/b"]);
            engine.unsubscribe(&ChannelKey::new("app", "chat/a"), sink.clone());
            let e = engine.clone();
            eventually("an unsubscribed channel is no longer live", move || {
                let e = e.clone();
                Box::pin(async move {
                    e.live_channels("app", "chat/").await.unwrap() == vec!["chat/b".to_string()]
                })
            })
            .await;
        })
    });
}

#[test]
fn server_api_reads_members_channels_and_clears_history() {
    conform(|engine| {
        Box::pin(async move {
            let (room, other) = (
                ChannelKey::new("app", "api/room"),
                ChannelKey::new("app", "x"),
            );
            engine
                .member_joined(&room, member("s1", true, true))
                .await
                .unwrap();
            engine
                .member_joined(&room, member("s2", false, false))
                .await
                .unwrap();
            engine
                .member_joined(&other, member("s3", false, false))
                .await
                .unwrap();
            engine
                .member_joined(
                    &ChannelKey::new("another-app", "api/room"),
                    member("s4", false, false),
                )
                .await
                .unwrap();
            let mut members: Vec<(String, bool, bool)> = engine
                .members(&room)
                .await
                .unwrap()
                .into_iter()
                .map(|m| (m.socket_id.to_string(), m.presence, m.authenticated))
                .collect();
            members.sort();
            assert_eq!(
                members,
                vec![("s1".into(), true, true), ("s2".into(), false, false)]
            );
            let mut all = engine.occupied_channels("app", "").await.unwrap();
            all.sort();
            assert_eq!(all, vec![("api/room".into(), 2), ("x".into(), 1)]);
            let under = engine.occupied_channels("app", "api/").await.unwrap();
            assert_eq!(under, vec![("api/room".into(), 2)]);
            engine.member_left(&other, Arc::from("s3")).await.unwrap();
            let after = engine.occupied_channels("app", "x").await.unwrap();
            assert!(after.is_empty(), "{after:?}");

            for text in ["a", "b"] {
                engine
                    .publish(&room, broadcast(text, Audience::everyone(), 10))
                    .await
                    .unwrap();
            }
            assert_eq!(engine.history(&room).await.unwrap().len(), 2);
            engine.clear_history(&room).await.unwrap();
            assert!(engine.history(&room).await.unwrap().is_empty());
            engine
                .publish(&room, broadcast("c", Audience::everyone(), 10))
                .await
                .unwrap();
            assert_eq!(
                engine.history(&room).await.unwrap().len(),
                1,
                "stored again"
            );
        })
    });
}

#[test]
fn a_command_runs_on_the_node_and_answers_what_it_reached() {
    use switchboard::cluster::{SocketCommand, SocketTarget};
    conform(|engine| {
        Box::pin(async move {
            let (tx, mut seen) = mpsc::unbounded_channel();
            engine.set_command_sink(Arc::new(move |command| {
                let _ = tx.send(command);
                Box::pin(async { 3 })
            }));
            let command = SocketCommand::Disconnect {
                app: "app".into(),
                target: SocketTarget::Socket("s1".into()),
                reconnect: false,
            };
            assert_eq!(engine.command(command.clone()).await.unwrap(), 3);
            assert_eq!(seen.recv().await, Some(command));
        })
    });
}
