//! The run's faults and their schedule, drawn from the seed: the same seed gives the
//! same schedule.

use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Fault {
    KillBroker(usize),
    TermBroker(usize),
    PauseBroker(usize),
    /// SIGKILL the Redis server (shard, cluster master) with this index, restart it empty.
    KillRedis(usize),
    /// Move a slot holding a channel's keys from this master to the next.
    MigrateSlot(usize),
    /// The raw-socket client with this index stops reading for the fault's time.
    StallClient(usize),
}

/// The schedule: (when, what, how long until it is healed).
pub fn schedule(
    seed: u64,
    seconds: u64,
    nodes: usize,
    shards: usize,
    clients: usize,
    kinds: &[String],
) -> Vec<(Duration, Fault, Duration)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = Duration::from_secs(3);
    while t < Duration::from_secs(seconds) {
        let kind = &kinds[rng.random_range(0..kinds.len())];
        let node = rng.random_range(0..nodes);
        let (fault, lasts) = match kind.as_str() {
            "kill" => (Fault::KillBroker(node), rng.random_range(500..3000)),
            "term" => (Fault::TermBroker(node), rng.random_range(500..3000)),
            "pause" => (Fault::PauseBroker(node), rng.random_range(6000..9000)),
            "migrate" => (Fault::MigrateSlot(rng.random_range(0..shards)), 500),
            "stall" => (
                Fault::StallClient(rng.random_range(0..clients.max(1))),
                rng.random_range(6000..9000),
            ),
            // Drawn only with shards, so one Redis replays the schedules of before.
            _ if shards > 1 => (
                Fault::KillRedis(rng.random_range(0..shards)),
                rng.random_range(500..3000),
            ),
            _ => (Fault::KillRedis(0), rng.random_range(500..3000)),
        };
        let lasts = Duration::from_millis(lasts);
        out.push((t, fault, lasts));
        t += lasts + Duration::from_millis(rng.random_range(2000..6000));
    }
    out
}
