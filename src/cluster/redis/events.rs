//! Backends' events through Redis: the durable path (a stream read through a
//! consumer group), and the entry parsing shared with recovery.

use super::*;

/// Backends' durable path: `XADD P publish-stream * event <json>` (under Redis
/// Cluster also `P publish-stream:{n}`, one per partition), read through a
/// consumer group so each entry is published once, even if it was added while every
/// node was down. Entries a dead node had claimed are taken over after 30 s.
pub(super) async fn durable_events(inner: Arc<Inner>) {
    let stream = inner.events_stream.clone();
    let group = "switchboard";
    // Its own connection: a blocking read would stall the shared command connection.
    let mut conn = match inner.blocking_commands(&stream) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, "durable events: cannot create a Redis connection");
            return;
        }
    };
    let mut group_ready = false;
    // Our own unacknowledged entries are read first (after a start or a failure).
    let mut pending_first = true;
    let mut last_claim = std::time::Instant::now();
    loop {
        if !group_ready {
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(()) => group_ready = true,
                Err(e) if e.code() == Some("BUSYGROUP") => group_ready = true,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let sink = inner.events.lock().clone();
        let Some(sink) = sink else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let read: redis::RedisResult<redis::Value> = if pending_first {
            read_group(group, &inner.node_id, &stream, "0", None)
                .query_async(&mut conn)
                .await
        } else if last_claim.elapsed() > Duration::from_secs(10) {
            // Entries a dead node had read but not acknowledged.
            last_claim = std::time::Instant::now();
            redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(group)
                .arg(&inner.node_id)
                .arg(30_000)
                .arg("0")
                .arg("COUNT")
                .arg(100)
                .query_async(&mut conn)
                .await
                .map(|v| match v {
                    // [next id, entries, deleted ids] -> shaped like one stream of XREADGROUP
                    redis::Value::Array(parts) => {
                        redis::Value::Array(vec![redis::Value::Array(vec![
                            redis::Value::Nil,
                            parts.get(1).cloned().unwrap_or(redis::Value::Nil),
                        ])])
                    }
                    other => other,
                })
        } else {
            read_group(group, &inner.node_id, &stream, ">", Some(1000))
                .query_async(&mut conn)
                .await
        };
        match read {
            Ok(redis::Value::Array(streams)) => {
                for s in streams {
                    if let redis::Value::Array(pair) = s {
                        if let Some(list) = pair.get(1) {
                            collect_entries(list, &mut entries);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if e.code() == Some("NOGROUP") {
                    // Redis restarted without our stream: create the group again.
                    group_ready = false;
                }
                tracing::debug!(error = %e, "durable events: read failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if pending_first && entries.is_empty() {
            pending_first = false;
        }
        for (id, payload) in entries {
            if sink(Bytes::from(payload), true).await {
                let _: redis::RedisResult<i64> = conn.xack(&stream, group, &[&id]).await;
            } else {
                // Not published yet (the engine is not ready): retry from our pending list.
                pending_first = true;
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
        }
    }
}

/// `XREADGROUP` for up to 100 entries after `from` (`0`: our own pending ones).
fn read_group(
    group: &str,
    node: &str,
    stream: &str,
    from: &str,
    block_ms: Option<u64>,
) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP").arg(group).arg(node).arg("COUNT").arg(100);
    if let Some(ms) = block_ms {
        cmd.arg("BLOCK").arg(ms);
    }
    cmd.arg("STREAMS").arg(stream).arg(from);
    cmd
}

/// The entries of a stream reply (`XRANGE`, `XREADGROUP`, `XAUTOCLAIM`):
/// `[[id, [field, value, ...]], ...]`, as (id, fields) in order; malformed ones skipped.
pub(super) fn stream_entries(
    list: &redis::Value,
) -> impl Iterator<Item = (String, &[redis::Value])> {
    let items = match list {
        redis::Value::Array(items) => &items[..],
        _ => &[],
    };
    items.iter().filter_map(|item| {
        let redis::Value::Array(pair) = item else {
            return None;
        };
        let (Some(id), Some(redis::Value::Array(fields))) = (pair.first(), pair.get(1)) else {
            return None;
        };
        let id = redis::from_redis_value::<String>(id.clone()).ok()?;
        Some((id, &fields[..]))
    })
}

/// A stream entry's fields as (name, value) pairs.
pub(super) fn entry_fields(
    fields: &[redis::Value],
) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    fields.chunks_exact(2).map(|kv| {
        (
            redis::from_redis_value(kv[0].clone()).unwrap_or_default(),
            redis::from_redis_value(kv[1].clone()).unwrap_or_default(),
        )
    })
}

/// Entries of a stream reply as (id, event): the event is the value of field
/// `event` (or the first value).
pub(super) fn collect_entries(list: &redis::Value, out: &mut Vec<(String, Vec<u8>)>) {
    for (id, fields) in stream_entries(list) {
        let mut payload = None;
        for (k, v) in entry_fields(fields) {
            if k == "event" || payload.is_none() {
                payload = Some(v);
            }
        }
        if let Some(p) = payload {
            out.push((id, p));
        }
    }
}
