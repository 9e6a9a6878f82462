//! The processes of a run: one redis-server and N brokers, each on a port fixed for
//! the whole run so that a restarted process is found where it was. Every wait is
//! bounded.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const API_KEY: &str = "chaos-api-key-0123";
const JWT_SECRET: &str = "chaos-secret-0123456789abcdef0123456789";

/// A token the brokers accept for client `i` (user `i`), valid for a day.
pub fn token(i: usize) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + 86_400;
    let claims = serde_json::json!({ "sub": i, "dbo_id": 1, "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("an HS256 token")
}

/// A free port for a process restarted on it during the run: outside the kernel's
/// ephemeral range, so no client's outgoing connection (whose local port comes
/// from that range) can take it while the process is down.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 12_000)
        .unwrap_or(32_768);
    let span = u64::from(low - 10_000);
    let start = u64::from(std::process::id()) * 7919 + NEXT.fetch_add(104_729, Ordering::Relaxed);
    (0..span)
        .map(|i| 10_000 + ((start + i) % span) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A free port whose Redis Cluster bus port (+10000) is below the ephemeral range
/// and free too.
pub fn free_cluster_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    (0..1000)
        .map(|_| free_port())
        .find(|&p| {
            u32::from(p) + 10_000 < u32::from(low)
                && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        })
        .expect("a free port for a Redis Cluster node")
}

pub struct Proc {
    pub name: String,
    child: Option<Child>,
    argv: Vec<String>,
    log: PathBuf,
}

impl Proc {
    fn new(name: &str, argv: Vec<String>, log: PathBuf) -> Proc {
        Proc {
            name: name.into(),
            child: None,
            argv,
            log,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log");
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL after `within`).
    pub fn terminate(&mut self, within: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        if let Some(c) = &mut self.child {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// Redis server `i` (a shard when there are several) on `port`; with `cluster`, a
/// Redis Cluster node (its `nodes.conf` in `dir`, kept across restarts).
pub fn redis(i: usize, port: u16, dir: &Path, cluster: bool) -> Proc {
    let mut argv: Vec<String> = [
        "redis-server",
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if cluster {
        let conf = dir.join(format!("nodes-{i}.conf"));
        argv.extend(["--cluster-enabled".into(), "yes".into()]);
        argv.extend(["--cluster-node-timeout".into(), "2000".into()]);
        argv.extend(["--cluster-config-file".into(), conf.display().to_string()]);
    }
    Proc::new(
        &format!("redis-{i}"),
        argv,
        dir.join(format!("redis-{i}.log")),
    )
}

/// A broker on `port`, clustered over the Redis on `redis_ports` (several: shards,
/// or with `cluster` the seed nodes of a Redis Cluster).
pub fn broker(
    bin: &Path,
    i: usize,
    port: u16,
    redis_ports: &[u16],
    cluster: bool,
    dir: &Path,
) -> Proc {
    let config = dir.join(format!("broker-{i}.toml"));
    std::fs::write(&config, config_toml(port, redis_ports, cluster)).expect("write the config");
    let argv = vec![
        bin.display().to_string(),
        "--log-format".into(),
        "json".into(),
        "serve".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    Proc::new(
        &format!("broker-{i}"),
        argv,
        dir.join(format!("broker-{i}.log")),
    )
}

fn config_toml(port: u16, redis_ports: &[u16], cluster: bool) -> String {
    let urls: Vec<String> = redis_ports
        .iter()
        .map(|p| format!("\"redis://127.0.0.1:{p}\""))
        .collect();
    let redis = match urls.as_slice() {
        _ if cluster => format!("redis_cluster = [{}]", urls.join(", ")),
        [one] => format!("redis_url = {one}"),
        many => format!("redis_shards = [{}]", many.join(", ")),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
drain_s = 1

[limits]
messages_per_minute = 0
frames_per_minute = 0
ping_interval_s = 2
pong_timeout_s = 5

[cluster]
{redis}
presence_ttl_s = 3

[[apps]]
name = "Chaos"
hash = "chaos"
api_key = "{API_KEY}"

[apps.jwt]
algorithm = "HS256"
secret = "{JWT_SECRET}"

[[apps.channels]]
pattern = "room/*"
public_messaging = {{ active = true }}
private_messaging = {{ active = true }}
settings = {{ anonymous_clients = true, presence = true, message_history = 10 }}
"#
    )
}

/// A minimal HTTP GET: (status, body), or None when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: chaos\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// Poll `/readyz` until 200, bounded.
pub async fn wait_ready(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(addr, "/readyz", None).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
