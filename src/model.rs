//! The configuration data model: the serde structs and enums a Switchboard configuration is
//! made of, with their defaults and small pure helpers, and nothing that loads, checks or
//! acts on them.
//!
//! It sits below `config`, `auth`, `rules` and `xano` so they can share these types
//! without importing one another: `config` (TOML, environment overrides, validation)
//! calls `auth`, `rules` and `xano` to check and complete a configuration, while those
//! three only need the data. With the types here the dependencies run one way,
//! `config` -> `auth`/`rules`/`xano` -> `model`, and `config` re-exports them, so
//! `crate::config::ChannelRule` and the like keep working for the rest of the crate.

use serde::Deserialize;
use std::path::PathBuf;

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
    /// PEM CA certificates trusted for outgoing HTTPS (triggers), beside the system's.
    pub outbound_ca_file: Option<PathBuf>,
    /// Proxies (addresses or CIDRs) whose forwarded client address is believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            drain_s: 5,
            admin_token: None,
            tls_cert: None,
            tls_key: None,
            outbound_ca_file: None,
            trusted_proxies: Vec::new(),
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
    /// Largest join ack, history reply or `presence_full` (JSON bytes); never more
    /// than half of `send_queue_bytes` (see `reply_budget`).
    pub max_reply_bytes: usize,
    /// Client frames of any kind per socket per minute (0 = off); a socket that
    /// sends ten times as many within a minute is closed with 1008.
    pub frames_per_minute: u32,
    /// Open sockets per client address (IPv6: per /64); 0 = off. More get 1013.
    pub max_connections_per_ip: usize,
    /// A larger message or event is delivered live but not stored in history.
    pub max_history_entry_bytes: usize,
    /// One node without Redis: all channels' history together; the least recently
    /// written channels lose theirs first.
    pub history_memory_bytes: usize,
    /// Unsent lifecycle webhook events per app (JSON bytes); past it new events are
    /// dropped, counted and logged (docs/protocol.md section 7.1).
    pub webhook_queue_bytes: usize,
}

impl Limits {
    /// The bytes a reply may take: `max_reply_bytes`, but at most half of a
    /// socket's queue, so a reply never closes the socket it answers.
    pub fn reply_budget(&self) -> usize {
        self.max_reply_bytes.min(self.send_queue_bytes / 2)
    }
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
            max_reply_bytes: 262_144,
            frames_per_minute: 1200,
            max_connections_per_ip: 0,
            max_history_entry_bytes: 16_384,
            history_memory_bytes: 64 * 1024 * 1024,
            webhook_queue_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// One Redis for the whole cluster. Empty (and no `redis_shards`): one node, in memory.
    pub redis_url: String,
    /// Independent Redis servers: each channel (and each user's connection count)
    /// lives on one, chosen by a consistent hash (docs/protocol.md section 11).
    pub redis_shards: Vec<String>,
    /// A Redis Cluster: its seed nodes. Channels are spread over
    /// `redis_cluster_partitions` hash tags, each a slot of the cluster.
    pub redis_cluster: Vec<String>,
    pub redis_cluster_partitions: usize,
    pub prefix: String,
    pub presence_ttl_s: u64,
    /// How long an idle channel's history is kept.
    pub history_ttl_s: u64,
    /// PEM CA certificates trusted for `rediss://` instead of the system's.
    pub redis_ca_file: Option<PathBuf>,
    /// Broadcasts Redis accepted that this node has not seen come back yet, kept to
    /// publish again after a reconnect; when full, new messages are refused.
    pub resend_buffer_bytes: usize,
}

impl ClusterConfig {
    /// Every Redis the cluster uses, in shard order (empty: memory).
    /// (With `redis_cluster`, its seed nodes.)
    pub fn redis_urls(&self) -> Vec<&str> {
        if !self.redis_url.is_empty() {
            vec![self.redis_url.as_str()]
        } else if !self.redis_cluster.is_empty() {
            self.redis_cluster.iter().map(String::as_str).collect()
        } else {
            self.redis_shards.iter().map(String::as_str).collect()
        }
    }

    /// The configuration key that names the Redis servers in use.
    pub fn redis_key(&self) -> &'static str {
        if !self.redis_cluster.is_empty() {
            "cluster.redis_cluster"
        } else if !self.redis_shards.is_empty() {
            "cluster.redis_shards"
        } else {
            "cluster.redis_url"
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            redis_shards: Vec::new(),
            redis_cluster: Vec::new(),
            redis_cluster_partitions: 12,
            prefix: "switchboard:".into(),
            presence_ttl_s: 10,
            history_ttl_s: 86_400,
            redis_ca_file: None,
            resend_buffer_bytes: 64 * 1024 * 1024,
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
    /// What happens to an authenticated socket when its token's `exp` passes.
    #[serde(default)]
    pub expired_token: ExpiredToken,
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
    /// Lifecycle webhooks (docs/protocol.md section 7.1): where batches of
    /// connect/disconnect/member/channel events are POSTed; none when unset.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// How long one POST may take before it counts as failed (and is retried).
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Events per batch at most.
    #[serde(default = "default_webhook_batch_max")]
    pub webhook_batch_max: usize,
    /// How long a failing batch is retried (exponential backoff) before it is dropped.
    #[serde(default = "default_webhook_retry_s")]
    pub webhook_retry_s: u64,
}

fn default_webhook_timeout_ms() -> u64 {
    5000
}

fn default_webhook_batch_max() -> usize {
    100
}

fn default_webhook_retry_s() -> u64 {
    900
}

/// docs/protocol.md section 1: a session lasts as long as its token.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExpiredToken {
    /// Close with 4000 at `exp` (plus the leeway): the SDK reconnects with the token
    /// it holds now, and is authenticated again or anonymous.
    #[default]
    Reconnect,
    /// Stay authenticated until the socket closes (hosted Xano's behaviour).
    Keep,
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
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// When set, a token's `iss` must be this.
    pub issuer: Option<String>,
    /// When set, a token's `aud` must be (or contain) this.
    pub audience: Option<String>,
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
            require_exp: false,
            issuer: None,
            audience: None,
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
    /// With `owner_segment`: the owner must also be a user of this auth table
    /// (`dbo_id`). Unset: a user of any table whose `row_id` is the segment, which
    /// suits apps with one auth table only.
    #[serde(default)]
    pub owner_table: Option<i64>,
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
            owner_table: None,
            public_messaging: MessagingFlags::default(),
            private_messaging: MessagingFlags::default(),
            settings: ChannelSettings::default(),
        }
    }
}
