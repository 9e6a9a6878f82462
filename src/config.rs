//! Configuration: TOML file + `SWITCHBOARD__SECTION__KEY` environment overrides,
//! validated at start with errors that name the bad key. The data types themselves live
//! in [`crate::model`] and are re-exported here.

pub use crate::model::{
    AppConfig, ChannelRule, ChannelSettings, ClusterConfig, Config, ExpiredToken, InvalidToken,
    JwtConfig, Limits, MessagingFlags, ServerConfig,
};
use std::path::Path;
use thiserror::Error;

/// The configuration compiled into the binary, used when no `--config` is given
/// and `config/default.toml` is not present.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/default.toml");

/// The secret of the demo app in `config/default.toml`: refused beyond loopback
/// (`public_secrets`), logged loudly where it is allowed.
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
        crate::xano::resolve(&mut config, base_dir).map_err(|e| invalid(e.key, e.why))?;
        config.validate()?;
        Ok(config)
    }

    /// Parse TOML text without environment overrides.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, std::iter::empty())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_limits()?;
        let mut hashes = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            validate_app(i, app, &mut hashes)?;
        }
        Ok(())
    }

    /// Where Redis is: one URL, a list of shards or a Redis Cluster's seeds, never
    /// two of them; a CA file only for TLS.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        let set = [
            !cluster.redis_url.is_empty(),
            !cluster.redis_shards.is_empty(),
            !cluster.redis_cluster.is_empty(),
        ];
        if set.iter().filter(|&&s| s).count() > 1 {
            return Err(invalid(
                cluster.redis_key(),
                "set one of cluster.redis_url, cluster.redis_shards and cluster.redis_cluster",
            ));
        }
        let urls = cluster.redis_urls();
        if let Some(bad) = urls.iter().find(|u| {
            !["redis://", "rediss://", "unix://", "redis+unix://"]
                .iter()
                .any(|scheme| u.starts_with(scheme))
        }) {
            return Err(invalid(
                cluster.redis_key(),
                format!("{bad:?} is not a redis://, rediss:// or unix:// URL"),
            ));
        }
        if !cluster.redis_cluster.is_empty() {
            if !(1..=1024).contains(&cluster.redis_cluster_partitions) {
                return Err(invalid(
                    "cluster.redis_cluster_partitions",
                    "must be between 1 and 1024",
                ));
            }
            // The keys' hash tags are ours: a brace in the prefix would make its own.
            if cluster.prefix.contains(['{', '}']) {
                return Err(invalid(
                    "cluster.prefix",
                    "may not contain { or } with cluster.redis_cluster",
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = urls.iter().find(|u| !seen.insert(*u)) {
            return Err(invalid(
                cluster.redis_key(),
                format!("{twice:?} is listed twice"),
            ));
        }
        if cluster.redis_ca_file.is_some() && !urls.iter().all(|u| u.starts_with("rediss://")) {
            return Err(invalid(
                "cluster.redis_ca_file",
                "only applies to rediss:// Redis URLs",
            ));
        }
        Ok(())
    }

    /// `server` and the CA files of `cluster`.
    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid("server.listen", "expected ip:port"));
        }
        // CA files are read now, so a bad one is an error naming its key, not a
        // failure on the first connection.
        let ca_files = [
            ("server.outbound_ca_file", &self.server.outbound_ca_file),
            ("cluster.redis_ca_file", &self.cluster.redis_ca_file),
        ];
        for (key, file) in ca_files {
            if let Some(path) = file {
                crate::http::tls::pem_certificates(key, path)
                    .map_err(|e| invalid(key, e.to_string()))?;
            }
        }
        self.validate_redis()?;
        crate::http::client_addr::TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(|e| invalid("server.trusted_proxies", e))?;
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert",
                "tls_cert and tls_key must be set together",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }
}

/// One app and its channel rules; `hashes` holds the hashes seen so far.
/// Lifecycle webhooks: an http(s) URL, a timeout, a batch size, and at least the
/// 10 minutes of retries that docs/protocol.md section 7.1 promises.
fn validate_webhook(app: &AppConfig) -> Result<(), (&'static str, &'static str)> {
    if let Some(url) = &app.webhook_url {
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.parse::<actix_web::http::Uri>().is_err() {
            return Err(("webhook_url", "must be an http:// or https:// URL"));
        }
    }
    if app.webhook_timeout_ms == 0 {
        return Err(("webhook_timeout_ms", "must be above 0"));
    }
    if !(1..=1000).contains(&app.webhook_batch_max) {
        return Err(("webhook_batch_max", "must be from 1 to 1000"));
    }
    if app.webhook_retry_s < 600 {
        return Err(("webhook_retry_s", "must be at least 600 (10 minutes)"));
    }
    Ok(())
}

fn validate_app<'a>(
    i: usize,
    app: &'a AppConfig,
    hashes: &mut std::collections::HashSet<&'a str>,
) -> Result<(), ConfigError> {
    let at = |k: &str| format!("apps[{i}].{k}");
    // Hashes are parts of URLs and of Redis keys (`<prefix><hash>:ch:…`): a `:`
    // would let two apps' keys collide.
    let hash_ok = !app.hash.is_empty()
        && app
            .hash
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !hash_ok {
        return Err(invalid(
            at("hash"),
            "must be one or more of A-Z, a-z, 0-9, '_' and '-'",
        ));
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
    crate::auth::TokenVerifier::from_config(app).map_err(|e| invalid(at("jwt"), e.to_string()))?;
    validate_webhook(app).map_err(|(key, why)| invalid(at(key), why))?;
    let mut patterns = std::collections::HashSet::new();
    for (j, rule) in app.channels.iter().enumerate() {
        let at = |k: &str| format!("apps[{i}].channels[{j}].{k}");
        crate::rules::validate_pattern(&rule.pattern).map_err(|why| invalid(at("pattern"), why))?;
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
    Ok(())
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

mod public_secrets;
pub use public_secrets::{refuse_public_secrets, PublicSecret, DEMO_API_KEY};

#[cfg(test)]
mod tests;
