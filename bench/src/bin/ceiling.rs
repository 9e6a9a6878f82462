//! `ceiling`: the least work a broadcast can take on this machine, to compare
//! Switchboard with. A tokio-tungstenite server where every text frame a socket
//! sends is written to every connected socket (the sender too): no JSON, no
//! channels, the received bytes shared by reference with every recipient. A frame
//! whose action is `join` is answered with a fixed `{"action":"join"}` instead, so
//! the bench's client code works against both servers. `GET /healthz` answers 200.

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(
    name = "ceiling",
    about = "Bare broadcast server: every text frame to every socket"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// Runtime worker threads (default: the CPUs this process may use).
    #[arg(long)]
    threads: Option<usize>,
}

type Peers = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

const JOIN_ACK: &str = r#"{"action":"join"}"#;

fn main() {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&args.listen).await.expect("bind");
        eprintln!("ceiling listening on {} ({threads} threads)", args.listen);
        let peers: Peers = Arc::new(Mutex::new(HashMap::new()));
        let ids = Arc::new(AtomicU64::new(0));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let peers = peers.clone();
            let id = ids.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = serve(stream, id, peers).await;
            });
        }
    });
}

async fn serve(mut stream: TcpStream, id: u64, peers: Peers) -> Result<(), ()> {
    let _ = stream.set_nodelay(true);
    // Health checks share the port: answer them without a WebSocket.
    let mut head = [0u8; 12];
    for _ in 0..50 {
        let n = stream.peek(&mut head).await.map_err(|_| ())?;
        if n == 0 {
            return Ok(());
        }
        if n >= head.len() || !b"GET /healthz".starts_with(&head[..n]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    if &head == b"GET /healthz" {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        return Ok(());
    }
    // Select the offered subprotocol (the bench offers its token there, as the SDK does).
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| {
        if let Some(p) = req.headers().get("sec-websocket-protocol") {
            resp.headers_mut()
                .insert("sec-websocket-protocol", p.clone());
        }
        Ok(resp)
    };
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(|_| ())?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    peers.lock().unwrap().insert(id, tx.clone());
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            m = source.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if t.as_str().as_bytes().get(..20).is_some_and(|h| h.windows(6).any(|w| w == b"\"join\"")) {
                        let _ = tx.send(Message::text(JOIN_ACK));
                    } else {
                        let m = Message::Text(t);
                        for p in peers.lock().unwrap().values() {
                            let _ = p.send(m.clone());
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            Some(m) = rx.recv() => {
                // Gather whatever is queued into one write.
                if sink.feed(m).await.is_err() {
                    break;
                }
                let mut ok = true;
                while let Ok(m) = rx.try_recv() {
                    if sink.feed(m).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if !ok || sink.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    peers.lock().unwrap().remove(&id);
    Ok(())
}
