//! TLS where the broker is the client (issue 16, part 3): `rediss://` to a real
//! `redis-server` started with `--tls-port`, and `https://` triggers to a local HTTPS
//! server, both with certificates generated here. A server whose certificate is not
//! trusted fails with a clear error; `check-config` refuses an unreadable CA file.

mod common;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, and a certificate it signed for 127.0.0.1 and localhost, as PEM files.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(tag: &str) -> Pki {
    let dir = process::temp_path(tag, "d");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// redis-server with TLS only, on a free port; waits until it accepts TCP.
async fn tls_redis(pki: &Pki) -> (Killed, u16) {
    // A port picked free may be taken by a concurrent test before redis binds it:
    // then redis exits, and another port is tried. Ready means its own log says so
    // (a TCP connect could reach whoever took the port).
    for _ in 0..5 {
        let port = free_port();
        let log_path = pki.dir.join(format!("redis-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pki.cert)
            .arg("--tls-key-file")
            .arg(&pki.key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("redis-server (with TLS) is installed");
        let mut redis = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                return (redis, port);
            }
            let exited = matches!(redis.0.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                eprintln!("redis-server --tls-port {port} did not start:\n{text}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(redis);
    }
    panic!("redis-server --tls-port did not start in 5 tries");
}

fn broker_config(dir: &Path, server_extra: &str, cluster: &str, rules: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_s = 1
{server_extra}

[cluster]
{cluster}

[[apps]]
name = "Test"
hash = "test"
api_key = "{API_KEY}"

[apps.jwt]
secret = "{SECRET}"

[[apps.channels]]
pattern = "chat/*"
public_messaging = {{ active = true }}
settings = {{ anonymous_clients = true }}
{rules}
"#
    );
    let path = dir.join(format!("switchboard-{}.toml", free_port()));
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(config: &Path) -> (Killed, SocketAddr, PathBuf) {
    let log = config.with_extension("log");
    let (child, addr) = process::spawn_listening(process::broker_command(config, &log), &log).await;
    (Killed(child), addr, log)
}

/// Prints a log file when the test panics while it is alive.
struct PrintLogOnPanic(PathBuf);

impl Drop for PrintLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            process::print_tail("node", &self.0, 60);
        }
    }
}

#[tokio::test]
async fn rediss_with_the_right_ca_serves_and_a_wrong_ca_is_a_clear_error() {
    let pki = make_pki("redis-tls");
    let (_redis, port) = tls_redis(&pki).await;
    let cluster = format!(
        "redis_url = \"rediss://127.0.0.1:{port}\"\nredis_ca_file = \"{}\"",
        pki.ca.display()
    );
    let (_node, addr, log) = start(&broker_config(&pki.dir, "", &cluster, "")).await;
    let printed = PrintLogOnPanic(log);
    process::wait_status(addr, "/readyz", 200, Duration::from_secs(20)).await;
    drop(printed);
    let mut c = Client::connect(&format!("ws://{addr}/rt/test"), None).await;
    c.join("chat/tls", true, false).await;
    c.message("chat/tls", json!("over rediss")).await;
    assert_eq!(c.expect("message").await["payload"], "over rediss");

    // A CA that did not sign Redis's certificate: never ready, and the log says why.
    let other = make_pki("redis-tls-other");
    let cluster = format!(
        "redis_url = \"rediss://127.0.0.1:{port}\"\nredis_ca_file = \"{}\"",
        other.ca.display()
    );
    let (_node, addr, log) = start(&broker_config(&other.dir, "", &cluster, "")).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_ne!(process::http_status(addr, "/readyz").await, Some(200));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.to_lowercase().contains("certificate"),
        "the log names the certificate problem:\n{text}"
    );
}

#[tokio::test]
async fn check_config_refuses_an_unreadable_ca_file() {
    let pki = make_pki("ca-file-check");
    let bad = pki.dir.join("not-a-cert.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let config = broker_config(
        &pki.dir,
        &format!("outbound_ca_file = \"{}\"", bad.display()),
        "",
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("server.outbound_ca_file"), "{text}");
}

/// An HTTPS server that answers every request `200 null` (allow) and reports the
/// request head it got.
async fn https_trigger(pki: &Pki) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&pki.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&pki.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // the client refused our certificate
                };
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&got).to_string());
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnull",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn https_triggers_trust_outbound_ca_file() {
    let pki = make_pki("https-trigger");
    let (port, mut requests) = https_trigger(&pki).await;
    let rule = format!(
        "[[apps.channels]]\npattern = \"hook/*\"\ntrigger_url = \"https://127.0.0.1:{port}/hook\"\n\
         settings = {{ anonymous_clients = true }}\n"
    );
    let trusted = broker_config(
        &pki.dir,
        &format!("outbound_ca_file = \"{}\"", pki.ca.display()),
        "",
        &rule,
    );
    let (_node, addr, _) = start(&trusted).await;
    let mut c = Client::connect(&format!("ws://{addr}/rt/test"), None).await;
    c.join("hook/a", false, false).await;
    let head = requests.recv().await.unwrap();
    assert!(head.starts_with("POST /hook"), "{head}");
    assert!(
        head.to_lowercase()
            .contains(&format!("authorization: bearer {}", API_KEY.to_lowercase())),
        "{head}"
    );

    // Without the CA the certificate is not trusted: the trigger fails, the join is refused.
    let untrusted = broker_config(&pki.dir, "", "", &rule);
    let (_node, addr, _) = start(&untrusted).await;
    let mut c = Client::connect(&format!("ws://{addr}/rt/test"), None).await;
    c.send(json!({"action":"join","options":{"channel":"hook/b"},"payload":null}))
        .await;
    c.expect_error("Join rejected").await;
}
