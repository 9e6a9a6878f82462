//! The engine: the only part of the broker that knows whether there is one node or
//! many. Channel actors hand every broadcast to the engine and receive what their
//! channel's subscription delivers, whichever engine runs: the in-memory engine
//! delivers through the subscriber at once, the Redis engine through Redis, where
//! every node (the origin too) delivers what comes back. Membership, presence and
//! per-user connection slots have one implementation per engine, behind the same
//! small traits (`engine`), so actors never ask which engine they run on
//! (docs/architecture.md, "The engine").

mod engine;
pub mod lifecycle;
mod memory;
pub mod redis;
mod result;

pub use engine::*;
pub use lifecycle::{QueuedEvent, Webhooks};
pub use memory::MemoryEngine;

use std::sync::Arc;
use std::time::Duration;

/// Start the engine the configuration asks for: Redis when `cluster.redis_url` or
/// `cluster.redis_shards` is set, else memory (with its history sweeper and `history_budget` bytes of history
/// in all). Call inside an actix system.
pub fn start(
    config: &crate::config::ClusterConfig,
    history_budget: usize,
) -> Result<Arc<dyn Engine>, EngineError> {
    if !config.redis_urls().is_empty() {
        return Ok(Arc::new(redis::RedisEngine::start(config)?));
    }
    let memory = Arc::new(MemoryEngine::new(
        Duration::from_secs(config.history_ttl_s),
        history_budget,
    ));
    let sweeper = memory.clone();
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            sweeper.sweep();
        }
    });
    Ok(memory)
}
