//! How a shard reaches its Redis (`topology` says where that is): a client and a
//! self-healing command connection for one server, or, for a Redis Cluster
//! partition, the cluster connection pinned to the partition's slot and the master
//! that owns the slot now, for the bridge's own connections.

use super::*;

/// How a shard reaches its Redis.
pub(super) enum Server {
    /// One Redis server.
    One(redis::Client),
    /// A partition of a Redis Cluster: the master that owns `slot` (found anew
    /// after every disconnect), reached with `seed`'s scheme and credentials.
    Cluster {
        client: Box<redis::cluster::ClusterClient>,
        seed: String,
        slot: u16,
        ca_file: Option<std::path::PathBuf>,
    },
}

/// What `RedisEngine::start` gives each shard: where its Redis is and its names.
pub(super) struct Place {
    pub(super) server: Server,
    pub(super) commands: Commands,
    pub(super) prefix: String,
    /// Listen to backends' `P publish` here.
    pub(super) events_topic: bool,
    pub(super) events_stream: String,
}

impl Place {
    /// One Redis server at `url` (`cluster.redis_url`, or one of `redis_shards`).
    pub(super) fn server(
        config: &crate::config::ClusterConfig,
        url: &str,
    ) -> Result<Place, EngineError> {
        let client = client(url, config.redis_ca_file.as_deref())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(unavailable)?;
        tracing::info!(redis = %redacted(url), "cluster engine: Redis");
        Ok(Place {
            server: Server::One(client),
            commands: Commands::Server(commands),
            prefix: config.prefix.clone(),
            events_topic: true,
            events_stream: format!("{}publish-stream", config.prefix),
        })
    }

    /// A Redis Cluster's partitions (see `topology`): one shard each, all through one
    /// cluster connection, each at its hash tag's slot. Backends' events: `P publish`
    /// (a classic topic, heard by the first partition) and one durable stream per
    /// partition, `P publish-stream` and `P publish-stream:{1}` … (each its own slot).
    pub(super) fn cluster(
        config: &crate::config::ClusterConfig,
    ) -> Result<Vec<Place>, EngineError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(config.redis_cluster.clone())
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2));
        if let Some(certs) = tls_certificates(config.redis_ca_file.as_deref())? {
            builder = builder.certs(certs);
        }
        let client = builder
            .build()
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let conn = client.get_pending_async_connection_with_config(
            redis::cluster::ClusterConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(Duration::from_secs(2)),
        );
        let seed = config.redis_cluster[0].clone();
        tracing::info!(
            seeds = config.redis_cluster.len(),
            partitions = config.redis_cluster_partitions,
            "cluster engine: Redis Cluster"
        );
        Ok(topology::partition_tags(config.redis_cluster_partitions)
            .into_iter()
            .enumerate()
            .map(|(p, tag)| {
                let prefix = format!("{}{{{tag}}}", config.prefix);
                let slot = topology::key_slot(prefix.as_bytes());
                Place {
                    server: Server::Cluster {
                        client: Box::new(client.clone()),
                        seed: seed.clone(),
                        slot,
                        ca_file: config.redis_ca_file.clone(),
                    },
                    commands: Commands::Cluster {
                        conn: conn.clone(),
                        slot,
                    },
                    prefix,
                    events_topic: p == 0,
                    events_stream: if p == 0 {
                        format!("{}publish-stream", config.prefix)
                    } else {
                        format!("{}publish-stream:{{{p}}}", config.prefix)
                    },
                }
            })
            .collect())
    }
}

impl Inner {
    /// A client for the Redis server this shard's keys are on now: under Redis
    /// Cluster the master that owns the partition's slot, asked with `CLUSTER SLOTS`
    /// (RESP3, for the sharded subscriptions).
    pub(super) async fn owner_client(&self) -> redis::RedisResult<redis::Client> {
        let (seed, slot, ca_file) = match &self.server {
            Server::One(client) => return Ok(client.clone()),
            Server::Cluster {
                seed,
                slot,
                ca_file,
                ..
            } => (seed, *slot, ca_file),
        };
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.conn())
            .await?;
        let Some((host, port)) = topology::owner_of(&slots, slot) else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::ClusterConnectionNotFound,
                "no master owns the slot",
                slot.to_string(),
            )));
        };
        let url = topology::node_url(seed, &host, port, true)?;
        client(&url, ca_file.as_deref()).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "node URL",
                e.to_string(),
            ))
        })
    }

    /// A connection of its own to where `key` is, for blocking reads (they would
    /// stall the shared command connection).
    pub(super) fn blocking_commands(&self, key: &str) -> Result<Commands, EngineError> {
        match &self.server {
            Server::One(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_number_of_retries(1);
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(Commands::Server)
                    .map_err(unavailable)
            }
            Server::Cluster { client, .. } => Ok(Commands::Cluster {
                conn: client.get_pending_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(Duration::from_secs(2))
                        .set_response_timeout(Duration::from_secs(5)),
                ),
                slot: topology::key_slot(key.as_bytes()),
            }),
        }
    }
}
