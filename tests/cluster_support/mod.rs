//! Cluster test harness: a real `redis-server` on a free port and real broker
//! processes (the `switchboard` binary) pointed at it, each with its own config
//! file and log. Everything is killed on drop; logs are printed when a test fails.
#![allow(dead_code)]

use crate::common::{self, Client, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

pub const APP: &str = "demo";
pub const API_KEY: &str = "demo-api-key-change-me";
pub const DEMO_SECRET: &str = "demo-secret-change-me-0123456789abcdef";
pub const PREFIX: &str = "switchboard:";

/// How long a node may take to answer `/readyz` 200 after it was spawned.
pub const START_WITHIN: Duration = Duration::from_secs(10);

/// A free port on 127.0.0.1 (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A free port for a Redis that may be restarted on it: outside the kernel's
/// ephemeral range, so no process binding port 0 (a broker, another test's
/// client) can take it while that Redis is down. Random, and checked to bind.
pub fn redis_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 12_000)
        .unwrap_or(32_768);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 20)
        ^ NEXT.fetch_add(0x9E37_79B9, Ordering::Relaxed);
    let span = u64::from(low - 10_000);
    for i in 0..1000u64 {
        let port =
            10_000 + ((seed.wrapping_mul(6_364_136_223_846_793_005) >> 17) + i * 7919) % span;
        let port = port as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// A port for a Redis Cluster node: its cluster bus (port + 10000) must stay
/// outside the ephemeral range too, or a client's connection may take it while
/// the node is down and the restarted node never rejoins.
pub fn redis_cluster_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    for _ in 0..1000 {
        let port = redis_port();
        if u32::from(port) + 10_000 < u32::from(low)
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
    panic!("no port for a Redis Cluster node below {}", low - 10_000);
}

/// A unique path in the temp dir.
pub use crate::common::process::broker_command;
use crate::common::process::{http_status, temp_path, wait_status};

/// A failing test prints the whole log of each process it started.
fn print_log(what: &str, path: &std::path::Path) {
    crate::common::process::print_tail(what, path, usize::MAX);
}

// ---------------------------------------------------------------------------
// Redis

/// The cluster's Redis: one redis-server, or (with `SWITCHBOARD_TEST_REDIS=shards`)
/// two independent ones that the nodes use as `cluster.redis_shards`, or (with
/// `SWITCHBOARD_TEST_REDIS=cluster`) a Redis Cluster of three masters, the nodes'
/// `cluster.redis_cluster`. `port`, `url` and `conn` name the first; `kill` and
/// `restart` act on all of them.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    /// More `redis-server` arguments, kept for restarts.
    extra_args: Vec<String>,
    /// A Redis Cluster node: its `nodes.conf`, kept across restarts.
    cluster_config: Option<PathBuf>,
    /// The other shards, or the cluster's other masters.
    more: Vec<Redis>,
}

/// The Redis topology of the cluster tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    One,
    Shards,
    Cluster,
}

/// Which topology `Redis::start` builds: `SWITCHBOARD_TEST_REDIS` = `one` (the
/// default), `shards` or `cluster`.
pub fn topology() -> Topology {
    match std::env::var("SWITCHBOARD_TEST_REDIS").as_deref() {
        Ok("shards") => Topology::Shards,
        Ok("cluster") => Topology::Cluster,
        Ok("one") | Err(_) => Topology::One,
        Ok(other) => panic!("SWITCHBOARD_TEST_REDIS={other}: expected one, shards or cluster"),
    }
}

pub fn sharded() -> bool {
    topology() == Topology::Shards
}

impl Redis {
    /// Start a fresh Redis (one server, two shards or a cluster, see `topology`)
    /// on free ports; fails the test if there is no redis-server on PATH.
    pub async fn start() -> Redis {
        match topology() {
            Topology::One => Redis::start_with(&[]).await,
            Topology::Shards => {
                let mut redis = Redis::start_with(&[]).await;
                redis.more.push(Redis::start_with(&[]).await);
                redis
            }
            Topology::Cluster => Redis::start_cluster().await,
        }
    }

    /// Three cluster-enabled servers, made one Redis Cluster of three masters
    /// (`redis-cli --cluster create`), ready when every node says `cluster_state:ok`.
    pub async fn start_cluster() -> Redis {
        let mut last = String::new();
        for _ in 0..3 {
            let mut first = Redis::start_node().await;
            first.more.push(Redis::start_node().await);
            first.more.push(Redis::start_node().await);
            let ports = first.shard_ports();
            let created = Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
                .expect("redis-cli (from the redis-tools package) runs");
            if !created.status.success() {
                last = String::from_utf8_lossy(&created.stdout).into_owned();
                continue;
            }
            match first.cluster_ok().await {
                Ok(()) => return first,
                Err(e) => last = e,
            }
        }
        panic!("no Redis Cluster: {last}");
    }

    /// A cluster-enabled redis-server on a port of its own.
    async fn start_node() -> Redis {
        let mut last = String::new();
        for _ in 0..5 {
            let mut r = Redis::unstarted();
            r.port = redis_cluster_port();
            r.cluster_config = Some(temp_path("redis-nodes", "conf"));
            match r.spawn().await {
                Ok(()) => return r,
                Err(e) => last = e,
            }
        }
        panic!("redis-server (cluster node) did not start: {last}");
    }

    /// Wait until every node of the cluster says `cluster_state:ok` and knows
    /// every slot.
    pub async fn cluster_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut info = String::new();
        loop {
            let mut ok = true;
            for port in self.shard_ports() {
                info = cluster_info(port).await.unwrap_or_default();
                ok &= info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384");
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the cluster is not ok within 20 s: {info}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster_config.is_some()
    }

    /// The `i`-th server (0: this one, then `more`).
    fn server_mut(&mut self, i: usize) -> &mut Redis {
        if i == 0 {
            self
        } else {
            &mut self.more[i - 1]
        }
    }

    /// SIGKILL the `i`-th server only (a cluster's master, a shard).
    pub fn kill_server(&mut self, i: usize) {
        let r = self.server_mut(i);
        if let Some(mut c) = r.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the `i`-th server again on its port (with its `nodes.conf`), and for a
    /// cluster wait until it is whole again.
    pub async fn restart_server(&mut self, i: usize) {
        if let Err(e) = self.server_mut(i).spawn().await {
            panic!("server {i} did not restart: {e}");
        }
        if self.is_cluster() {
            self.cluster_ok().await.expect("the cluster is whole again");
        }
    }

    /// `start`, with more `redis-server` arguments (`--maxmemory 3mb`, …).
    pub async fn start_with(extra_args: &[&str]) -> Redis {
        let mut last = String::new();
        for _ in 0..5 {
            let mut r = Redis {
                port: redis_port(),
                child: None,
                log: temp_path("redis", "log"),
                extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                cluster_config: None,
                more: Vec::new(),
            };
            match r.spawn().await {
                Ok(()) => return r,
                Err(e) => last = e, // most likely someone took the port: try another
            }
        }
        panic!("redis-server did not start: {last}");
    }

    /// A Redis that is not running yet, on a port of its own: `restart` starts it.
    pub fn unstarted() -> Redis {
        Redis {
            port: redis_port(),
            child: None,
            log: temp_path("redis", "log"),
            extra_args: Vec::new(),
            cluster_config: None,
            more: Vec::new(),
        }
    }

    /// Start (again) on `self.port`, waiting until it answers PING. The answer must
    /// come from this very process: when another test's Redis took the port first,
    /// ours exits ("Address already in use") while theirs answers.
    async fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the redis log");
        let mut cluster_args = Vec::new();
        if let Some(conf) = &self.cluster_config {
            cluster_args.extend(["--cluster-enabled".into(), "yes".into()]);
            cluster_args.extend(["--cluster-node-timeout".into(), "2000".into()]);
            cluster_args.push("--cluster-config-file".into());
            cluster_args.push(conf.display().to_string());
        }
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(&cluster_args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH); the cluster tests need it: \
                 apt-get install redis-server"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.port).await && process_id(self.port).await == Some(child.id()) {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!(
                    "exited with {status} on port {}:\n{text}",
                    self.port
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no PONG on port {} within 10 s", self.port));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Start again on the same port (after `kill`, or the first time after `unstarted`).
    pub async fn restart(&mut self) {
        if let Err(e) = self.try_restart().await {
            panic!("redis-server did not restart on port {}: {e}", self.port);
        }
    }

    /// `restart`, answering why it failed instead of failing the test.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is still running");
        self.spawn().await?;
        // Every process first: a cluster is whole only once all of them are back
        // (waiting for it per node deadlocked on the nodes not restarted yet).
        for shard in &mut self.more {
            assert!(shard.child.is_none(), "redis-server is still running");
            shard.spawn().await?;
        }
        if self.is_cluster() {
            self.cluster_ok().await?;
        }
        Ok(())
    }

    /// SIGKILL (every shard), and wait for the processes to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for shard in &mut self.more {
            shard.kill();
        }
    }

    /// The ports of every shard (one port with a single Redis), in shard order.
    pub fn shard_ports(&self) -> Vec<u16> {
        std::iter::once(self.port)
            .chain(self.more.iter().map(|s| s.port))
            .collect()
    }

    /// The `[cluster]` key that points a node at this Redis.
    pub fn config_line(&self) -> String {
        if self.more.is_empty() {
            return format!("redis_url = \"{}\"", self.url());
        }
        let urls: Vec<String> = std::iter::once(self.url())
            .chain(self.more.iter().map(|s| s.url()))
            .map(|u| format!("\"{u}\""))
            .collect();
        let key = if self.is_cluster() {
            "redis_cluster"
        } else {
            "redis_shards"
        };
        format!("{key} = [{}]", urls.join(", "))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test redis")
    }

    /// `PUBLISH switchboard:publish <envelope>`; answers the receiver count.
    pub async fn publish_envelope(&self, envelope: &Value) -> i64 {
        let mut c = self.conn().await;
        redis::cmd("PUBLISH")
            .arg(format!("{PREFIX}publish"))
            .arg(envelope.to_string())
            .query_async(&mut c)
            .await
            .expect("PUBLISH")
    }

    /// `XADD switchboard:publish-stream * event <envelope>`; answers the entry id.
    /// On a Redis Cluster through a cluster connection (the key's slot may be on
    /// any master).
    pub async fn xadd_event(&self, envelope: &Value) -> String {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(format!("{PREFIX}publish-stream"))
            .arg("*")
            .arg("event")
            .arg(envelope.to_string());
        if !self.is_cluster() {
            return xadd
                .query_async(&mut self.conn().await)
                .await
                .expect("XADD");
        }
        let urls: Vec<String> = self
            .shard_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        let mut c = redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_async_connection()
            .await
            .expect("a connection to the test Redis Cluster");
        xadd.query_async(&mut c).await.expect("XADD")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log("redis-server", &self.log);
        }
        self.kill();
        let _ = std::fs::remove_file(&self.log);
        if let Some(conf) = &self.cluster_config {
            let _ = std::fs::remove_file(conf);
        }
    }
}

/// A command's text answer from the Redis on the port, within 1 s.
async fn ask(port: u16, cmd: &redis::Cmd) -> Option<String> {
    let attempt = async {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        cmd.query_async::<String>(&mut c).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
}

/// `CLUSTER INFO` of the node on the port.
pub async fn cluster_info(port: u16) -> Option<String> {
    ask(port, redis::cmd("CLUSTER").arg("INFO")).await
}

/// The `process_id` that the Redis on the port reports in `INFO server`.
pub async fn process_id(port: u16) -> Option<u32> {
    ask(port, redis::cmd("INFO").arg("server"))
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// Whether something on the port answers `PING` with `+PONG`.
pub async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(got.starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

// ---------------------------------------------------------------------------
// Broker nodes

/// What varies between the tests' configurations.
#[derive(Clone)]
pub struct Opts {
    pub presence_ttl_s: u64,
    pub max_connections_per_user: usize,
    /// More TOML appended to the demo app (`[[apps.channels]]` tables).
    pub extra_rules: String,
    /// More keys of `[cluster]`.
    pub extra_cluster: String,
    /// More keys of the demo app (before its tables: `webhook_url = "…"`).
    pub extra_app: String,
    /// `limits.send_queue_bytes`: what a node may queue for one socket.
    pub send_queue_bytes: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            presence_ttl_s: 3,
            max_connections_per_user: 0,
            extra_rules: String::new(),
            extra_cluster: String::new(),
            extra_app: String::new(),
            send_queue_bytes: 1048576,
        }
    }
}

/// `config/default.toml`'s demo app, clustered over `redis` (a `config_line`),
/// plus `hist/*` (history 25) for the history cap.
pub fn config_toml(redis: &str, listen: SocketAddr, opts: &Opts) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
drain_s = 1

[limits]
max_connections = 100000
max_connections_per_user = {per_user}
max_channels_per_socket = 100
max_frame_bytes = 65536
messages_per_minute = 0
frames_per_minute = 0
send_queue_bytes = {send_queue_bytes}
ping_interval_s = 25
pong_timeout_s = 60

[cluster]
{redis}
prefix = "{PREFIX}"
presence_ttl_s = {ttl}
{extra_cluster}

[[apps]]
name = "Demo"
hash = "demo"
api_key = "{API_KEY}"
invalid_token = "anonymous"
roles_claim = "roles"
{extra_app}

[apps.jwt]
algorithm = "HS256"
secret = "{DEMO_SECRET}"
row_id_claim = "sub"
dbo_id_claim = "dbo_id"
default_dbo_id = 0
extras_claim = "extras"

[[apps.channels]]
pattern = "chat/*"
public_messaging = {{ active = true, auth = false }}
private_messaging = {{ active = true, auth = false }}
settings = {{ anonymous_clients = true, presence = true, message_history = 100 }}

[[apps.channels]]
pattern = "announcements"
settings = {{ anonymous_clients = true, message_history = 25 }}
history_events = true

[[apps.channels]]
pattern = "user:*"
owner_segment = true
settings = {{ anonymous_clients = false }}

[[apps.channels]]
pattern = "hist/*"
public_messaging = {{ active = true }}
settings = {{ anonymous_clients = true, presence = true, message_history = 25 }}
{extra}
"#,
        per_user = opts.max_connections_per_user,
        ttl = opts.presence_ttl_s,
        extra = opts.extra_rules,
        extra_cluster = opts.extra_cluster,
        extra_app = opts.extra_app,
        send_queue_bytes = opts.send_queue_bytes,
    )
}

pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    config: PathBuf,
}

impl Node {
    /// Spawn a node and wait (bounded) until its `/readyz` answers 200.
    pub async fn start(name: &str, redis: &Redis, opts: &Opts) -> Node {
        let node = Node::spawn(name, redis, opts).await;
        node.wait_readyz(200, START_WITHIN).await;
        node
    }

    /// Spawn without waiting for readiness (only until it listens: on a port of
    /// its own choosing, learnt from its log).
    pub async fn spawn(name: &str, redis: &Redis, opts: &Opts) -> Node {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = temp_path(&format!("node-{name}"), "toml");
        std::fs::write(&config, config_toml(&redis.config_line(), any_port, opts)).unwrap();
        let log = temp_path(&format!("node-{name}"), "log");
        let (child, addr) =
            common::process::spawn_listening(broker_command(&config, &log), &log).await;
        let pid = child.id();
        Node {
            name: name.to_string(),
            addr,
            child: Some(child),
            pid,
            log,
            config,
        }
    }

    /// SIGKILL: the process dies without a word. Waits until it is gone.
    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: a graceful drain (`drain_s` = 1).
    pub fn sigterm(&self) {
        if self.child.is_some() {
            let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
            assert_eq!(rc, 0, "kill -TERM {}", self.pid);
        }
    }

    /// SIGSTOP: the process freezes (reads nothing, answers nothing) until `resume`.
    pub fn pause(&self) {
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGSTOP) };
        assert_eq!(rc, 0, "kill -STOP {}", self.pid);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGCONT) };
        assert_eq!(rc, 0, "kill -CONT {}", self.pid);
    }

    /// Ask the node to reload its configuration (as an operator would).
    pub fn sighup(&self) {
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP {}", self.pid);
    }

    /// Wait (bounded) for the process to exit; its status.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let c = self.child.as_mut().expect("node running");
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit within {within:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/rt/{APP}", self.addr)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.url(), None).await
    }

    pub async fn client_with_token(&self, token: &str) -> Client {
        Client::connect(&self.url(), Some(token)).await
    }

    /// POST to the publish API of app `demo` with its key.
    pub async fn publish(&self, body: &Value) -> (u16, Value) {
        common::http_post(
            self.addr,
            &format!("/api/apps/{APP}/events"),
            Some(API_KEY),
            &body.to_string(),
        )
        .await
    }

    /// The status of `/readyz`, or None while nothing answers.
    pub async fn readyz(&self) -> Option<u16> {
        http_status(self.addr, "/readyz").await
    }

    /// Poll `/readyz` until it answers `status`; how long that took. Fails after `within`.
    pub async fn wait_readyz(&self, status: u16, within: Duration) -> Duration {
        wait_status(self.addr, "/readyz", status, within).await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking() {
            print_log(&format!("node {} ({})", self.name, self.addr), &self.log);
        }
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.config);
    }
}

// ---------------------------------------------------------------------------
// Client helpers

/// An HS256 token for the demo app, valid for an hour.
pub fn demo_token(user: i64) -> String {
    common::token_with(
        jsonwebtoken::Algorithm::HS256,
        DEMO_SECRET.as_bytes(),
        json!({"sub": user, "dbo_id": 7, "extras": {"name": format!("user{user}")}, "exp": common::now() + 3600}),
    )
}

/// The next text frame within `within`, or None (a close or socket end panics).
pub async fn try_recv(c: &mut Client, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = match tokio::time::timeout_at(deadline, c.ws.next()).await {
            Err(_) => return None,
            Ok(m) => m,
        };
        match msg {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(&t).expect("JSON frame"))
            }
            Some(Ok(Message::Close(c))) => panic!("socket closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("socket error: {e}"),
            None => panic!("socket ended"),
        }
    }
}

/// Read frames until one matches `pred`; returns (frames before it, the match).
/// Fails with everything seen when nothing matches within WAIT of the last frame.
pub async fn recv_until(
    c: &mut Client,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> (Vec<Value>, Value) {
    let mut seen = Vec::new();
    loop {
        match try_recv(c, WAIT).await {
            Some(f) if pred(&f) => return (seen, f),
            Some(f) => seen.push(f),
            None => panic!("no {what} within {WAIT:?}; frames seen meanwhile: {seen:#?}"),
        }
    }
}

/// The socket ids of a presence list.
pub fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a presence list: {list}"))
        .iter()
        .map(|c| {
            c["socketId"]
                .as_str()
                .unwrap_or_else(|| panic!("a client with a socketId: {c}"))
                .to_string()
        })
        .collect()
}

pub fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

static BARRIER: AtomicU64 = AtomicU64::new(0);

/// A cluster-wide barrier on `channel`: `clients[sender]` sends a public marker and
/// every client reads until it arrives. A channel has one order on every node, so
/// whatever was published on it before the marker arrives before it. Returns each
/// client's frames before the marker.
pub async fn channel_barrier(
    clients: &mut [&mut Client],
    sender: usize,
    channel: &str,
) -> Vec<Vec<Value>> {
    let marker = format!("b{}", BARRIER.fetch_add(1, Ordering::Relaxed));
    clients[sender]
        .message(channel, json!({"barrier": marker}))
        .await;
    let mut out = Vec::new();
    for c in clients.iter_mut() {
        let (seen, _) = recv_until(c, &format!("barrier {marker} on {channel}"), |f| {
            f["action"] == "message"
                && f["options"]["channel"] == channel
                && f["payload"]["barrier"] == marker.as_str()
        })
        .await;
        out.push(seen);
    }
    out
}

/// Like `channel_barrier`, asserting that nothing arrived before the marker.
pub async fn expect_quiet(clients: &mut [&mut Client], sender: usize, channel: &str) {
    let seen = channel_barrier(clients, sender, channel).await;
    for (i, frames) in seen.iter().enumerate() {
        assert!(
            frames.is_empty(),
            "client {i} on {channel}: unexpected frames before the barrier: {frames:#?}"
        );
    }
}
