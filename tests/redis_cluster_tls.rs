//! A Redis Cluster that speaks TLS only, as a managed one does (ElastiCache with
//! in-transit encryption): three `redis-server` masters with `--port 0 --tls-port P
//! --tls-cluster yes`, certificates from a CA generated here. Two brokers given one
//! `rediss://` seed and `cluster.redis_ca_file` become ready, find every master from
//! `CLUSTER SLOTS`, and carry messages both ways on channels spread over the 12
//! partitions (so over the 3 masters), in order and each exactly once; every master
//! holds some of those channels and at least 8 sharded pub/sub connections (4
//! partitions times 2 brokers), TLS ones since there is no plaintext port.
//! A third broker without the CA does not trust the certificate and never gets ready.

mod cluster_support;
mod common;

use cluster_support::{channel_barrier, redis_cluster_port};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType,
};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Channels spread over the partitions (and so over the masters).
const CHANNELS: [&str; 8] = [
    "chat/c0", "chat/c1", "chat/c2", "chat/c3", "chat/c4", "chat/c5", "chat/c6", "chat/c7",
];
/// Messages each broker's socket sends on each channel.
const N: u64 = 5;
/// How long a `redis-cli` query may take.
const SHORT: Duration = Duration::from_secs(2);

/// A CA, and a certificate it signed for 127.0.0.1 and localhost, as PEM files.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// The directory (certificates, configs, logs) goes when the test passed.
impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn make_pki(tag: &str) -> Pki {
    let dir = process::temp_path(tag, "d");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL (redis-cli) takes a leaf whose issuer is its own
    // subject for self-signed (rustls does not look).
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        dir,
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// A child process, killed (and its log printed, on a failure) on drop.
struct Killed(Child, PathBuf);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if std::thread::panicking() {
            process::print_tail("process", &self.1, 40);
        }
    }
}

/// A cluster-enabled, TLS-only redis-server on a port whose bus port is free too;
/// ready when its own log says so (another process may have taken the port).
async fn tls_cluster_node(pki: &Pki) -> (Killed, u16) {
    for _ in 0..5 {
        let port = redis_cluster_port();
        let log_path = pki.dir.join(format!("redis-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(pki.dir.join(format!("nodes-{port}.conf")))
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&pki.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server (with TLS) is installed");
        let mut redis = Killed(child, log_path.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return (redis, port);
            }
            if matches!(redis.0.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                eprintln!("redis-server --tls-port {port} did not start:\n{text}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(redis);
    }
    panic!("a TLS cluster node did not start in 5 tries");
}

/// `redis-cli --tls --cacert <ca> <args>`, killed after `within`.
async fn cli(ca: &Path, args: &[&str], within: Duration) -> Output {
    let mut child = Command::new("redis-cli")
        .arg("--tls")
        .arg("--cacert")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed");
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A broker clustered over `[cluster]` keys, listening on a port of its own.
async fn broker(dir: &Path, name: &str, cluster: &str) -> (Killed, SocketAddr) {
    let config = dir.join(format!("switchboard-{name}.toml"));
    let app = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_s = 1\n\n[cluster]\n{cluster}\n\n\
         [[apps]]\nname = \"Test\"\nhash = \"test\"\napi_key = \"{API_KEY}\"\n\n\
         [apps.jwt]\nsecret = \"{SECRET}\"\n\n[[apps.channels]]\npattern = \"chat/*\"\n\
         public_messaging = {{ active = true }}\nsettings = {{ anonymous_clients = true }}\n"
    );
    std::fs::write(&config, app).unwrap();
    let log = config.with_extension("log");
    let (child, addr) =
        process::spawn_listening(process::broker_command(&config, &log), &log).await;
    (Killed(child, log), addr)
}

/// Each client got, on every channel, `N` messages from `from`, in order, once each.
fn assert_delivered(seen: &[Vec<serde_json::Value>], from: &str) {
    for (c, frames) in seen.iter().enumerate() {
        for ch in CHANNELS {
            let got: Vec<u64> = frames
                .iter()
                .filter(|f| f["options"]["channel"] == ch && f["payload"]["barrier"].is_null())
                .map(|f| {
                    assert_eq!(f["action"], "message", "client {c} on {ch}: {f}");
                    assert_eq!(f["payload"]["from"], from, "client {c} on {ch}: {f}");
                    f["payload"]["i"].as_u64().unwrap()
                })
                .collect();
            assert_eq!(got, (0..N).collect::<Vec<_>>(), "client {c} on {ch}");
        }
    }
}

#[tokio::test]
async fn a_tls_only_redis_cluster_carries_messages_between_brokers() {
    let pki = make_pki("redis-cluster-tls");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(tls_cluster_node(&pki).await);
    }
    let ports: Vec<u16> = nodes.iter().map(|(_, p)| *p).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = cli(&pki.ca, &create, Duration::from_secs(20)).await;
    assert!(out.status.success(), "cluster create:\n{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in &ports {
        loop {
            let p = port.to_string();
            let info = text(&cli(&pki.ca, &["-p", &p, "cluster", "info"], SHORT).await);
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "{port}: not ok in 20 s:\n{info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let seed = format!("redis_cluster = [\"rediss://127.0.0.1:{}\"]", ports[0]);
    let trusted = format!("{seed}\nredis_ca_file = \"{}\"", pki.ca.display());
    let (_a, a_addr) = broker(&pki.dir, "a", &trusted).await;
    let (_b, b_addr) = broker(&pki.dir, "b", &trusted).await;
    for addr in [a_addr, b_addr] {
        process::wait_status(addr, "/readyz", 200, Duration::from_secs(20)).await;
    }
    let mut a = Client::connect(&format!("ws://{a_addr}/rt/test"), None).await;
    let mut b = Client::connect(&format!("ws://{b_addr}/rt/test"), None).await;
    for ch in CHANNELS {
        a.join(ch, false, false).await;
        b.join(ch, false, false).await;
    }
    // A to B, then B to A: per channel, a barrier message from the sender comes
    // after everything it sent there, on both sockets.
    for (sender, from) in [(0, "A"), (1, "B")] {
        for i in 0..N {
            for ch in CHANNELS {
                let c = if sender == 0 { &mut a } else { &mut b };
                c.message(ch, json!({ "from": from, "i": i })).await;
            }
        }
        let mut seen = vec![Vec::new(), Vec::new()];
        for ch in CHANNELS {
            let more = channel_barrier(&mut [&mut a, &mut b], sender, ch).await;
            seen.iter_mut()
                .zip(more)
                .for_each(|(all, more)| all.extend(more));
        }
        assert_delivered(&seen, from);
    }

    // 12 partitions on 3 masters of equal slot ranges: 4 each. Every master holds
    // some of the channels above, and each broker keeps a sharded pub/sub connection
    // per partition to its master: TLS ones, as the masters have no plaintext port.
    for port in &ports {
        let p = port.to_string();
        let topics = cli(&pki.ca, &["-p", &p, "pubsub", "shardchannels"], SHORT).await;
        assert!(
            text(&topics).contains(":ch:chat/c"),
            "master {port}: no channel"
        );
        let list = text(&cli(&pki.ca, &["-p", &p, "client", "list"], SHORT).await);
        let subscribers = list
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .any(|f| f.starts_with("ssub=") && f != "ssub=0")
            })
            .count();
        assert!(
            subscribers >= 2 * 4,
            "master {port}: {subscribers} sharded subscribers, want 4 per broker:\n{list}"
        );
    }

    // Without the CA the masters' certificate is not trusted: never ready.
    let (c, c_addr) = broker(&pki.dir, "untrusted", &seed).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_ne!(process::http_status(c_addr, "/readyz").await, Some(200));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(&c.1).unwrap();
    assert!(
        log.contains("invalid peer certificate"),
        "the log names the certificate problem:\n{log}"
    );
}
