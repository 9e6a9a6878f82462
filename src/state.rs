//! What the whole server shares: apps (rules, token verifier, registry), limits,
//! the engine, and the table of live connections used for limits and draining.

use crate::actors::channel::ChannelLimits;
use crate::actors::notices::CloseSocket;
use crate::actors::registry::RegistryActor;
use crate::auth::{Identity, TokenVerifier};
use crate::cluster::{Engine, SocketTarget};
use crate::config::{AppConfig, Config, Limits};
use crate::http::client_addr::TrustedProxies;
use crate::rules::RuleSet;
use actix::{Addr, Recipient};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// One tenant: its registry, and its settings, which a reload replaces whole.
pub struct AppContext {
    pub hash: Arc<str>,
    pub registry: Addr<RegistryActor>,
    settings: RwLock<Arc<AppSettings>>,
}

/// An app's configuration as one consistent snapshot.
pub struct AppSettings {
    pub config: AppConfig,
    pub rules: Arc<RuleSet>,
    pub verifier: TokenVerifier,
}

impl AppSettings {
    pub fn build(app: &AppConfig) -> Result<AppSettings, String> {
        let verifier =
            TokenVerifier::from_config(app).map_err(|e| format!("app {:?}: {e}", app.hash))?;
        Ok(AppSettings {
            config: app.clone(),
            rules: Arc::new(RuleSet::new(&app.channels)),
            verifier,
        })
    }
}

impl AppContext {
    /// Start an app (its registry runs on the current arbiter).
    pub fn start(
        settings: AppSettings,
        engine: Arc<dyn Engine>,
        limits: ChannelLimits,
    ) -> Arc<AppContext> {
        let hash: Arc<str> = Arc::from(settings.config.hash.as_str());
        let registry = RegistryActor::new(hash.clone(), settings.rules.clone(), engine, limits);
        Arc::new(AppContext {
            hash,
            registry: actix::Actor::start(registry),
            settings: RwLock::new(Arc::new(settings)),
        })
    }

    /// The current settings (cheap: one Arc clone).
    pub fn settings(&self) -> Arc<AppSettings> {
        self.settings.read().clone()
    }

    /// Replace the settings; the registry re-checks every live channel's members.
    pub fn replace(&self, settings: AppSettings) {
        let rules = settings.rules.clone();
        *self.settings.write() = Arc::new(settings);
        self.registry
            .do_send(crate::actors::registry::UpdateRules(rules));
    }
}

pub struct ServerState {
    apps: RwLock<HashMap<String, Arc<AppContext>>>,
    /// The file the configuration came from, read again on reload.
    pub config_path: Option<std::path::PathBuf>,
    pub limits: Limits,
    pub drain_s: u64,
    pub admin_token: Option<String>,
    pub engine: Arc<dyn Engine>,
    pub connections: Connections,
    pub draining: AtomicBool,
    /// `limits.connects_per_ip_per_s`, when set.
    pub connect_limiter: Option<governor::DefaultKeyedRateLimiter<std::net::IpAddr>>,
    /// Whose forwarded client address is believed (`server.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// Closed sockets whose last work (leaving channels, queueing the `disconnect`
    /// webhook) is still under way; a graceful stop waits for it.
    pub closing: AtomicUsize,
}

impl ServerState {
    /// Build the apps of `config` (starts one registry actor per app on the current arbiter).
    pub fn new(
        config: &Config,
        config_path: Option<std::path::PathBuf>,
        engine: Arc<dyn Engine>,
    ) -> Result<Arc<Self>, String> {
        let mut apps = HashMap::new();
        for app in &config.apps {
            let settings = AppSettings::build(app)?;
            apps.insert(
                app.hash.clone(),
                AppContext::start(settings, engine.clone(), ChannelLimits::of(&config.limits)),
            );
        }
        let state = Arc::new(Self {
            apps: RwLock::new(apps),
            config_path,
            limits: config.limits.clone(),
            drain_s: config.server.drain_s,
            admin_token: config.server.admin_token.clone(),
            engine,
            connections: Connections::default(),
            draining: AtomicBool::new(false),
            trusted_proxies: TrustedProxies::parse(&config.server.trusted_proxies)?,
            closing: AtomicUsize::new(0),
            connect_limiter: std::num::NonZeroU32::new(config.limits.connects_per_ip_per_s)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n))),
        });
        state.update_webhook_apps();
        Ok(state)
    }

    /// Tell the engine which apps queue lifecycle events (those with a `webhook_url`).
    fn update_webhook_apps(&self) {
        let on = self
            .apps
            .read()
            .values()
            .filter(|app| app.settings().config.webhook_url.is_some())
            .map(|app| app.hash.to_string())
            .collect();
        self.engine
            .set_webhook_apps(on, self.limits.webhook_queue_bytes);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn app(&self, hash: &str) -> Option<Arc<AppContext>> {
        self.apps.read().get(hash).cloned()
    }

    /// Every app, ordered by hash.
    pub fn apps(&self) -> Vec<Arc<AppContext>> {
        let mut all: Vec<_> = self.apps.read().values().cloned().collect();
        all.sort_by(|a, b| a.hash.cmp(&b.hash));
        all
    }

    /// Install a reloaded set of apps: existing ones get their new settings, new ones
    /// start, removed ones are forgotten (their members are revoked).
    pub fn install_apps(&self, settings: Vec<AppSettings>) {
        let mut apps = self.apps.write();
        let mut keep = std::collections::HashSet::new();
        for s in settings {
            let hash = s.config.hash.clone();
            keep.insert(hash.clone());
            match apps.get(&hash) {
                Some(app) => app.replace(s),
                None => {
                    let limits = ChannelLimits::of(&self.limits);
                    apps.insert(hash, AppContext::start(s, self.engine.clone(), limits));
                }
            }
        }
        apps.retain(|hash, app| {
            let kept = keep.contains(hash);
            if !kept {
                // docs/protocol.md section 1: its sockets are closed with 4401 (the
                // SDK does not reconnect); its channels revoke every member.
                let closed = self.connections.close_app(
                    hash,
                    crate::protocol::close::UNAUTHORIZED,
                    "app removed",
                );
                tracing::info!(app = %hash, sockets = closed, "app removed by reload");
                app.registry
                    .do_send(crate::actors::registry::UpdateRules(Arc::new(
                        RuleSet::new(&[]),
                    )));
            }
            kept
        });
        drop(apps);
        self.update_webhook_apps();
    }
}

/// A live socket: its app, who it is, and where to tell it to close.
pub struct LiveSocket {
    pub app: Arc<str>,
    pub identity: Arc<Identity>,
    pub addr: Recipient<CloseSocket>,
}

/// Live sockets: the global count and the addresses to drain. Per-user counts are
/// the engine's (`UserSlots`), so they hold across every node.
#[derive(Default)]
pub struct Connections {
    next_id: AtomicU64,
    count: AtomicUsize,
    live: Mutex<HashMap<u64, LiveSocket>>,
    /// Open sockets per client address key (`client_addr::limit_key`), when
    /// `limits.max_connections_per_ip` is on.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a socket could not be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ServerFull,
    UserFull,
    AddressFull,
}

/// A socket's place in the table; released when dropped.
pub struct Admission {
    table: Arc<ServerState>,
    pub id: u64,
    /// The user slot held with the engine.
    user: Option<(Arc<str>, String)>,
    /// The address slot held, when per-address limits are on.
    address: Option<IpAddr>,
}

impl Connections {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn addresses(&self) -> Vec<Recipient<CloseSocket>> {
        self.live.lock().values().map(|s| s.addr.clone()).collect()
    }

    pub fn register(&self, id: u64, socket: LiveSocket) {
        self.live.lock().insert(id, socket);
    }

    /// Close the sockets of `target` on this node (server API); answers how many.
    pub fn close_matching(
        &self,
        app: &str,
        target: &SocketTarget,
        code: u16,
        reason: &'static str,
    ) -> usize {
        self.close_where(
            |s| *s.app == *app && target.names(&s.identity),
            code,
            reason,
        )
    }

    /// Close the sockets `chosen` picks; answers how many.
    fn close_where(
        &self,
        chosen: impl Fn(&LiveSocket) -> bool,
        code: u16,
        reason: &'static str,
    ) -> usize {
        let sockets: Vec<_> = self
            .live
            .lock()
            .values()
            .filter(|s| chosen(s))
            .map(|s| s.addr.clone())
            .collect();
        for addr in &sockets {
            addr.do_send(CloseSocket { code, reason });
        }
        sockets.len()
    }

    /// Close every socket of one app (its app was removed by a reload: 4401).
    pub fn close_app(&self, app: &str, code: u16, reason: &'static str) -> usize {
        self.close_where(|s| &*s.app == app, code, reason)
    }

    pub fn close_all(&self, code: u16, reason: &'static str) {
        for addr in self.addresses() {
            addr.do_send(CloseSocket { code, reason });
        }
    }
}

impl Admission {
    /// Take a place for a socket, or say why there is none. Per-user limits are
    /// counted by the engine, across the cluster when there is one.
    pub async fn admit(
        state: &Arc<ServerState>,
        user: Option<(Arc<str>, String)>,
        address: IpAddr,
    ) -> Result<Admission, Refused> {
        let c = &state.connections;
        let limits = &state.limits;
        if c.count.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            c.count.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::ServerFull);
        }
        let address = (limits.max_connections_per_ip > 0).then_some(address);
        if let Some(key) = address {
            let mut per_ip = c.per_ip.lock();
            let n = per_ip.entry(key).or_insert(0);
            if *n >= limits.max_connections_per_ip {
                drop(per_ip);
                c.count.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::AddressFull);
            }
            *n += 1;
        }
        // From here on a refusal gives the address slot back through Drop.
        let mut admission = Admission {
            table: state.clone(),
            id: c.next_id.fetch_add(1, Ordering::Relaxed),
            user: None,
            address,
        };
        let user = user.filter(|_| limits.max_connections_per_user > 0);
        if let Some((app, id)) = &user {
            match state
                .engine
                .admit_user(app, id, limits.max_connections_per_user)
                .await
            {
                Ok(true) => admission.user = user,
                Ok(false) => return Err(Refused::UserFull),
                // Availability over the limit: the socket is let in uncounted.
                Err(e) => tracing::warn!(error = %e, "per-user limit not checked"),
            }
        }
        Ok(admission)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let c = &self.table.connections;
        c.live.lock().remove(&self.id);
        if let Some((app, user)) = &self.user {
            self.table.engine.release_user(app, user);
        }
        if let Some(key) = self.address {
            let mut per_ip = c.per_ip.lock();
            if let Some(n) = per_ip.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&key);
                }
            }
        }
        c.count.fetch_sub(1, Ordering::AcqRel);
    }
}
