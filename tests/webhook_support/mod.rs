//! A real HTTP receiver for lifecycle webhooks (an actix-web server on its own
//! thread): it records every batch with its signature header and answers as the
//! test tells it (2xx, 500s, or slowly).

#![allow(dead_code)]

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use parking_lot::Mutex;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How the receiver answers the next batches.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Ok,
    /// 500 for this many batches, then 200.
    FailFirst(u32),
    /// Wait this long before answering 200.
    Slowly(Duration),
}

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Batch {
    pub body: Vec<u8>,
    pub signature: Option<String>,
    pub json: Value,
    /// Whether the receiver acknowledged it (2xx).
    pub acked: bool,
}

struct Shared {
    answer: Mutex<Answer>,
    tx: mpsc::UnboundedSender<Batch>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Batch>,
    stop: Option<actix_web::dev::ServerHandle>,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Arc<Shared>>,
) -> HttpResponse {
    let answer = {
        let mut a = shared.answer.lock();
        let now = *a;
        if let Answer::FailFirst(n) = now {
            *a = if n > 1 {
                Answer::FailFirst(n - 1)
            } else {
                Answer::Ok
            };
        }
        now
    };
    let signature = req
        .headers()
        .get("x-switchboard-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let acked = !matches!(answer, Answer::FailFirst(_));
    let _ = shared.tx.send(Batch {
        body: body.to_vec(),
        signature,
        json,
        acked,
    });
    match answer {
        Answer::Ok => HttpResponse::Ok().finish(),
        Answer::FailFirst(_) => HttpResponse::InternalServerError().finish(),
        Answer::Slowly(d) => {
            tokio::time::sleep(d).await;
            HttpResponse::Ok().finish()
        }
    }
}

impl Receiver {
    pub fn start(answer: Answer) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            answer: Mutex::new(answer),
            tx,
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let for_server = shared.clone();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let data = web::Data::new(for_server);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::post().to(receive))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("bind the receiver");
                let addr = server.addrs()[0];
                let running = server.run();
                ready_tx.send((addr, running.handle())).unwrap();
                let _ = running.await;
            });
        });
        let (addr, handle) = ready_rx.recv().expect("receiver started");
        Receiver {
            addr,
            shared,
            rx,
            stop: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.shared.answer.lock() = answer;
    }

    /// The next batch within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Batch> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Acknowledged events, deduplicated by id, until `done` holds for them (fails
    /// after `within` with what arrived).
    pub async fn events_until(
        &mut self,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = std::collections::HashSet::new();
        let mut events = Vec::new();
        while !done(&events) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let batch = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("events did not arrive in {within:?}; got {events:#?}"));
            if !batch.acked {
                continue;
            }
            for e in batch.json["events"].as_array().cloned().unwrap_or_default() {
                if seen.insert(e["id"].as_str().unwrap_or_default().to_string()) {
                    events.push(e);
                }
            }
        }
        events
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(h) = self.stop.take() {
            drop(h.stop(false));
        }
    }
}

/// The events' names, in order (`name` or `name:channel`).
pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["channel"].as_str() {
            Some(c) => format!("{}:{c}", e["name"].as_str().unwrap()),
            None => e["name"].as_str().unwrap().to_string(),
        })
        .collect()
}
