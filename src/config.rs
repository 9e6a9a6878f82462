//! Configuration: TOML file + `SWITCHBOARD__SECTION__KEY` environment overrides,
//! validated at start with errors that name the bad key.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The configuration compiled into the binary, used when no `--config` is given
/// and `config/default.toml` is not present.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// The secret of the demo app in `config/default.toml`; running with it is logged loudly.
pub const DEMO_SECRET: &str = "demo-secret-change-me-0123456789abcdef";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid TOML: {0}")]
    Toml(String),
    #[error("invalid environment override {var}: {why}")]
    Env { var: String, why: String },
    #[error("`{key}`: {why}")]
    Invalid { key: String, why: String },
}

fn invalid(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        why: why.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: Limits,
    pub cluster: ClusterConfig,
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Seconds over which sockets are closed with 1012 on SIGTERM.
    pub drain_s: u64,
    /// Bearer token for `/admin` and `/admin/reload`; unset = the admin endpoints are off.
    pub admin_token: Option<String>,
    /// PEM certificate chain and private key: serve `wss://`/`https://` directly.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            drain_s: 5,
            admin_token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: usize,
    /// 0 = off.
    pub max_connections_per_user: usize,
    pub max_channels_per_socket: usize,
    pub max_frame_bytes: usize,
    /// 0 = off.
    pub messages_per_minute: u32,
    pub send_queue_bytes: usize,
    pub ping_interval_s: u64,
    pub pong_timeout_s: u64,
    /// Largest body accepted by the publish API.
    pub max_publish_bytes: usize,
    /// New WebSockets per second from one IP address (0 = off); beyond: HTTP 429.
    pub connects_per_ip_per_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_user: 0,
            max_channels_per_socket: 100,
            max_frame_bytes: 65_536,
            messages_per_minute: 0,
            send_queue_bytes: 1_048_576,
            ping_interval_s: 25,
            pong_timeout_s: 60,
            max_publish_bytes: 1_048_576,
            connects_per_ip_per_s: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Empty: one node, in memory.
    pub redis_url: String,
    pub prefix: String,
    pub presence_ttl_s: u64,
    /// How long an idle channel's history is kept.
    pub history_ttl_s: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            prefix: "switchboard:".into(),
            presence_ttl_s: 10,
            history_ttl_s: 86_400,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InvalidToken {
    /// The socket joins as anonymous and gets an error frame.
    #[default]
    Anonymous,
    /// The socket is closed with 4401.
    Reject,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    /// May be left out when `xano_export` provides it; always set after loading.
    #[serde(default)]
    pub hash: String,
    pub api_key: String,
    #[serde(default)]
    pub invalid_token: InvalidToken,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    #[serde(default)]
    pub jwt: JwtConfig,
    #[serde(default)]
    pub channels: Vec<ChannelRule>,
    /// Browser origins allowed to open sockets (`https://app.example.com`); empty = any.
    /// Requests without an `Origin` header (non-browser clients) are always allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// A directory of XanoScript `realtime_channel` files (`*.xs`) whose rules join
    /// `channels`; relative to the config file's directory (resolved after loading).
    #[serde(default)]
    pub channels_dir: Option<PathBuf>,
    /// A Xano Metadata API realtime export (JSON): its channels join `channels`, its `hash`
    /// is the app's when `hash` is not set, `enabled: false` makes every rule inactive.
    #[serde(default)]
    pub xano_export: Option<PathBuf>,
}

fn default_roles_claim() -> String {
    "roles".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256, HS384, HS512, RS256 or ES256.
    pub algorithm: String,
    pub secret: Option<String>,
    pub public_key_pem: Option<String>,
    pub row_id_claim: String,
    pub dbo_id_claim: String,
    pub default_dbo_id: i64,
    pub extras_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: "HS256".into(),
            secret: None,
            public_key_pem: None,
            row_id_claim: "sub".into(),
            dbo_id_claim: "dbo_id".into(),
            default_dbo_id: 0,
            extras_claim: "extras".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingFlags {
    pub active: bool,
    pub auth: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelSettings {
    pub anonymous_clients: bool,
    pub nested_channels: bool,
    pub message_history: usize,
    pub auth_channel: bool,
    pub presence: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    pub pattern: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub trigger_url: Option<String>,
    #[serde(default = "default_trigger_timeout_ms")]
    pub trigger_timeout_ms: u64,
    #[serde(default)]
    pub history_events: bool,
    #[serde(default)]
    pub join_roles: Vec<String>,
    #[serde(default)]
    pub publish_roles: Vec<String>,
    #[serde(default)]
    pub owner_segment: bool,
    #[serde(default)]
    pub public_messaging: MessagingFlags,
    #[serde(default)]
    pub private_messaging: MessagingFlags,
    #[serde(default)]
    pub settings: ChannelSettings,
}

fn yes() -> bool {
    true
}

fn default_trigger_timeout_ms() -> u64 {
    2000
}

impl ChannelRule {
    /// A rule with every flag at its default, for tests and tools.
    pub fn new(pattern: &str) -> Self {
        Self {
            pattern: pattern.into(),
            description: String::new(),
            active: true,
            trigger_url: None,
            trigger_timeout_ms: default_trigger_timeout_ms(),
            history_events: false,
            join_roles: vec![],
            publish_roles: vec![],
            owner_segment: false,
            public_messaging: MessagingFlags::default(),
            private_messaging: MessagingFlags::default(),
            settings: ChannelSettings::default(),
        }
    }
}

impl Config {
    /// Load a file (or the embedded default when `path` is None), apply environment overrides, validate.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?,
            None => EMBEDDED_DEFAULT.to_string(),
        };
        Self::from_toml_in(&text, std::env::vars(), path.and_then(Path::parent))
    }

    /// Parse TOML text, apply `SWITCHBOARD__…` overrides from `vars`, validate.
    pub fn from_toml_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::from_toml_in(text, vars, None)
    }

    /// [`Config::from_toml_with_env`], reading relative `channels_dir` / `xano_export` paths
    /// against `base_dir` (the config file's directory; None: the current directory).
    pub fn from_toml_in(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let mut overrides: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("SWITCHBOARD__"))
            .collect();
        overrides.sort();
        for (var, raw) in overrides {
            apply_env_override(&mut value, &var, &raw)?;
        }
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            invalid(key, e.into_inner().to_string())
        })?;
        crate::xano::resolve(&mut config, base_dir)?;
        config.validate()?;
        Ok(config)
    }

    /// Parse TOML text without environment overrides.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, std::iter::empty())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("server.listen", "expected ip:port"));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        let l = &self.limits;
        if l.max_frame_bytes < 128 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 128"));
        }
        if l.send_queue_bytes < l.max_frame_bytes {
            return Err(invalid(
                "limits.send_queue_bytes",
                "must be at least limits.max_frame_bytes",
            ));
        }
        if l.ping_interval_s == 0 || l.pong_timeout_s <= l.ping_interval_s {
            return Err(invalid(
                "limits.pong_timeout_s",
                "ping_interval_s must be > 0 and pong_timeout_s larger than it",
            ));
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be > 0"));
        }
        let mut hashes = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            let at = |k: &str| format!("apps[{i}].{k}");
            if app.hash.is_empty() || app.hash.contains('/') {
                return Err(invalid(at("hash"), "must be non-empty and contain no '/'"));
            }
            if !hashes.insert(app.hash.as_str()) {
                return Err(invalid(
                    at("hash"),
                    format!("duplicate hash {:?}", app.hash),
                ));
            }
            if app.api_key.len() < 8 {
                return Err(invalid(at("api_key"), "must be at least 8 characters"));
            }
            crate::auth::TokenVerifier::from_config(app)
                .map_err(|e| invalid(at("jwt"), e.to_string()))?;
            let mut patterns = std::collections::HashSet::new();
            for (j, rule) in app.channels.iter().enumerate() {
                let at = |k: &str| format!("apps[{i}].channels[{j}].{k}");
                crate::rules::validate_pattern(&rule.pattern)
                    .map_err(|why| invalid(at("pattern"), why))?;
                if !patterns.insert(rule.pattern.as_str()) {
                    return Err(invalid(
                        at("pattern"),
                        format!("duplicate pattern {:?}", rule.pattern),
                    ));
                }
                if rule.settings.message_history > 1000 {
                    return Err(invalid(
                        at("settings.message_history"),
                        "must be between 0 and 1000",
                    ));
                }
                if let Some(url) = &rule.trigger_url {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(invalid(at("trigger_url"), "must be an http(s) URL"));
                    }
                }
                if rule.trigger_timeout_ms == 0 {
                    return Err(invalid(at("trigger_timeout_ms"), "must be > 0"));
                }
            }
        }
        Ok(())
    }
}

/// `SWITCHBOARD__LIMITS__MAX_CONNECTIONS=5` sets `limits.max_connections`;
/// a numeric segment indexes an array (`SWITCHBOARD__APPS__0__JWT__SECRET`).
fn apply_env_override(root: &mut toml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var["SWITCHBOARD__".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::Env {
            var: var.into(),
            why: "empty path segment".into(),
        });
    }
    let mut node = root;
    for (depth, seg) in path.iter().enumerate() {
        let last = depth == path.len() - 1;
        node = match node {
            toml::Value::Table(t) => {
                if last {
                    t.insert(seg.clone(), parse_scalar(raw));
                    return Ok(());
                }
                t.entry(seg.clone())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(a) => {
                let idx: usize = seg.parse().map_err(|_| ConfigError::Env {
                    var: var.into(),
                    why: format!("{seg:?} is not an array index"),
                })?;
                let len = a.len();
                let slot = a.get_mut(idx).ok_or_else(|| ConfigError::Env {
                    var: var.into(),
                    why: format!("index {idx} is out of range (the array has {len})"),
                })?;
                if last {
                    *slot = parse_scalar(raw);
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.into(),
                    why: format!("{seg:?} is inside a value that is not a table"),
                })
            }
        };
    }
    Ok(())
}

/// Environment values are typed like TOML when they parse as a TOML value, else strings.
fn parse_scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests;
