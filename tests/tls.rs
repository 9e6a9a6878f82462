//! Native TLS: `wss://` served directly with `server.tls_cert` / `server.tls_key`.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_with_the_token_as_subprotocol() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let config = BASE_CONFIG.replace(
        "drain_s = 1\n",
        &format!(
            "drain_s = 1\ntls_cert = \"{keys}/tls_cert.pem\"\ntls_key = \"{keys}/tls_key.pem\"\n"
        ),
    );
    let server = TestServer::with_config(&config);

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(format!("{keys}/tls_ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the server's certificate");

    let token = user_token(5);
    let mut req = format!("wss://localhost:{}/rt/test", server.addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", token.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        token
    );
    ws.send(Message::Text(
        json!({"action":"join","options":{"channel":"members/tls"},"payload":null}).to_string(),
    ))
    .await
    .unwrap();
    let frame = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => break serde_json::from_str::<Value>(&t).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(frame["action"], "join", "{frame}");
    assert_eq!(frame["client"]["permissions"]["row_id"], 5);

    // Plain HTTP on the TLS port is not served.
    let (status, _) = tokio::time::timeout(WAIT, async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        (String::from_utf8_lossy(&buf).contains("200 OK"), ())
    })
    .await
    .expect("the server ends a plaintext attempt");
    assert!(!status, "plaintext HTTP answered on the TLS port");
}
