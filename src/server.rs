//! Assembling and running a server: bind, serve, drain on shutdown.

use crate::config::Config;
use crate::protocol::close;
use crate::state::ServerState;
use actix_web::{App, HttpServer};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A bound server; `run` serves until `shutdown` completes.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    server: actix_web::dev::Server,
    webhooks: Arc<crate::webhooks::Senders>,
}

impl Server {
    /// Bind and build (call inside an actix system: it starts the app registries).
    pub fn bind(config: &Config) -> std::io::Result<Server> {
        Self::bind_with_path(config, None)
    }

    /// Bind, remembering the file the configuration came from (for reloads).
    pub fn bind_with_path(
        config: &Config,
        config_path: Option<std::path::PathBuf>,
    ) -> std::io::Result<Server> {
        crate::metrics::install();
        crate::triggers::use_roots(crate::http::tls::client_config(
            config.server.outbound_ca_file.as_deref(),
        )?);
        let engine = crate::cluster::start(&config.cluster, config.limits.history_memory_bytes)
            .map_err(std::io::Error::other)?;
        let state = ServerState::new(config, config_path, engine).map_err(std::io::Error::other)?;
        if state.connect_limiter.is_some() {
            // Forget addresses that stopped connecting, so the limiter's memory stays bounded.
            let limiter_state = state.clone();
            actix_rt::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                loop {
                    tick.tick().await;
                    if let Some(l) = &limiter_state.connect_limiter {
                        l.retain_recent();
                        l.shrink_to_fit();
                    }
                }
            });
        }
        let events_state = state.clone();
        state
            .engine
            .set_event_sink(Arc::new(move |payload, durable| {
                let state = events_state.clone();
                Box::pin(async move { crate::events::from_redis(&state, &payload, durable).await })
            }));
        state.engine.set_command_sink(crate::control::sink(&state));
        let webhooks = crate::webhooks::start(&state);
        let app_state = state.clone();
        let http = HttpServer::new(move || {
            let state = app_state.clone();
            App::new().configure(move |cfg| crate::http::routes(cfg, state))
        })
        .on_connect(|conn, ext| {
            // Keep the raw socket so a socket whose peer stopped reading can be reset.
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                if let Some(raw) = crate::http::linger::RawSocket::of(tcp) {
                    ext.insert(raw);
                }
            }
        })
        .disable_signals()
        .shutdown_timeout(1)
        .backlog(4096)
        .max_connection_rate(4096)
        // Frames are small and latency-sensitive; never wait on Nagle for an ACK.
        .tcp_nodelay(true);
        let http = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => http.bind_rustls_0_23(
                &config.server.listen,
                crate::http::tls::server_config(cert, key)?,
            )?,
            _ => http.bind(&config.server.listen)?,
        };
        let addr = *http
            .addrs()
            .first()
            .ok_or_else(|| std::io::Error::other("no address bound"))?;
        Ok(Server {
            addr,
            state,
            server: http.run(),
            webhooks,
        })
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
            http: self.server.handle(),
            webhooks: self.webhooks.clone(),
        }
    }

    /// Serve until stopped.
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}

#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<ServerState>,
    http: actix_web::dev::ServerHandle,
    webhooks: Arc<crate::webhooks::Senders>,
}

impl ServerHandle {
    /// Graceful shutdown: readiness fails and upgrades are refused at once; sockets
    /// are closed with 1012 spread over `drain_s`; queued lifecycle events are sent
    /// or handed over; then the server stops.
    pub async fn shutdown(&self) {
        let state = &self.state;
        state.draining.store(true, Ordering::Release);
        let drain = Duration::from_secs(state.drain_s);
        let sockets = state.connections.addresses();
        tracing::info!(sockets = sockets.len(), drain_s = state.drain_s, "draining");
        let started = Instant::now();
        // Spread the closes so the other nodes are not hit by every client at once,
        // finishing within 80 % of the drain window.
        let steps = sockets.len().clamp(1, 50);
        let per_step = sockets.len().div_ceil(steps);
        let pause = drain.mul_f64(0.8) / steps as u32;
        for (i, chunk) in sockets.chunks(per_step.max(1)).enumerate() {
            for addr in chunk {
                addr.do_send(crate::actors::notices::CloseSocket {
                    code: close::RESTART,
                    reason: "server restart",
                });
            }
            if i + 1 < steps {
                tokio::time::sleep(pause).await;
            }
        }
        // Close sockets that connected meanwhile, then wait for them to go.
        state
            .connections
            .close_all(close::RESTART, "server restart");
        let deadline = drain + Duration::from_secs(1);
        while state.connections.count() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Channels finish what they owe the other nodes (member records, `leave`s)
        // before the process goes.
        let deadline = started.elapsed() + Duration::from_secs(2);
        while started.elapsed() < deadline {
            let mut live = 0;
            for app in state.apps() {
                live += app
                    .registry
                    .send(crate::actors::registry::LiveChannels)
                    .await
                    .unwrap_or(0);
            }
            if live == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Lifecycle events of the closed sockets: sent now, or left in Redis for the
        // other nodes (docs/protocol.md section 7.1), once every one is queued.
        let deadline = started.elapsed() + Duration::from_secs(2);
        while state.closing.load(Ordering::Acquire) > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.webhooks.stop(Duration::from_secs(3)).await;
        self.http.stop(true).await;
    }
}
