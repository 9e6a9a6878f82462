//! A Redis Cluster of three masters for a run (`--redis-cluster`), made with
//! `redis-cli --cluster create`, and its own fault: a slot that holds a channel's
//! keys migrated to another master during the traffic (`CLUSTER SETSLOT …
//! IMPORTING/MIGRATING`, `MIGRATE` of every key, `SETSLOT … NODE`), as
//! `redis-cli --cluster reshard` does it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `redis-cli -p port args…`; its output, or why it failed (an error reply too).
pub fn cli(port: u16, args: &[&str]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let is_error = [
        "ERR",
        "MOVED",
        "ASK",
        "IOERR",
        "BUSYKEY",
        "CLUSTERDOWN",
        "NOKEY",
    ]
    .iter()
    .any(|e| text.starts_with(e));
    if !out.status.success() || is_error {
        return Err(format!(
            "redis-cli -p {port} {}: {text} {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text)
}

/// Make one cluster of the (started, empty) servers on `ports`.
pub fn create(ports: &[u16]) -> Result<(), String> {
    let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Ok(())
}

/// Wait until every node says `cluster_state:ok`, bounded.
pub async fn wait_ok(ports: &[u16], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let ok = ports.iter().all(|p| {
            cli(*p, &["cluster", "info"])
                .map(|i| i.contains("cluster_state:ok"))
                .unwrap_or(false)
        });
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Move the slot of one channel's members hash (on master `from % n`) to the next
/// master; answers what moved.
pub fn migrate_a_channel_slot(ports: &[u16], from: usize) -> Result<String, String> {
    let source = ports[from % ports.len()];
    let target = ports[(from + 1) % ports.len()];
    let keys = cli(source, &["--scan", "--pattern", "switchboard:*:m:*"])?;
    let Some(key) = keys.lines().next() else {
        return Ok(format!("no channel's keys on {source}: nothing moved"));
    };
    let slot = cli(source, &["cluster", "keyslot", key])?;
    let source_id = cli(source, &["cluster", "myid"])?;
    let target_id = cli(target, &["cluster", "myid"])?;
    cli(
        target,
        &["cluster", "setslot", &slot, "importing", &source_id],
    )?;
    cli(
        source,
        &["cluster", "setslot", &slot, "migrating", &target_id],
    )?;
    let mut moved = 0;
    loop {
        let keys = cli(source, &["cluster", "getkeysinslot", &slot, "100"])?;
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        moved += keys.len();
        let port = target.to_string();
        let mut args = vec!["migrate", "127.0.0.1", &port, "", "0", "5000", "keys"];
        args.extend(keys);
        cli(source, &args)?;
    }
    let mut order = vec![target, source];
    order.extend(ports.iter().filter(|p| **p != target && **p != source));
    for port in order {
        cli(port, &["cluster", "setslot", &slot, "node", &target_id])?;
    }
    Ok(format!(
        "slot {slot} ({key} and {} more keys) moved from {source} to {target}",
        moved.saturating_sub(1)
    ))
}
