//! `switchboard-chaos`: a randomized fault run with a checker (docs/protocol.md
//! section 9). It starts one redis-server and N brokers, runs M clients over several
//! channels with presence, injects faults from a schedule drawn from `--seed`
//! (the same seed gives the same schedule), heals everything, and then checks the
//! log of every client: nothing accepted lost, duplicated or reordered, and presence
//! converged. Exit code 0 when the promise held, 1 with the counterexamples.
//! `scripts/chaos.sh` builds and runs it.

mod barrier;
mod check;
mod clients;
mod procs;
mod redis_cluster;
mod schedule;
mod sdk;

use clap::Parser;
use clients::{Command, Phase};
use schedule::{schedule, Fault};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "switchboard-chaos",
    about = "A randomized fault run against Switchboard with a checker"
)]
struct Args {
    /// The schedule's seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// How long faults are injected.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 30)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    channels: usize,
    /// Clients that are the real @xano/js-sdk (one Node process each, needing
    /// `npm ci` in tests/sdk), beside the raw-socket ones.
    #[arg(long, default_value_t = 0)]
    sdk_clients: usize,
    /// Faults to draw from: kill (SIGKILL a broker, restart it), term (SIGTERM, restart),
    /// pause (SIGSTOP a broker past the ping timeout, SIGCONT), redis (SIGKILL Redis, restart),
    /// migrate (with --redis-cluster: move a channel's slot to another master), stall (a
    /// client stops reading, past the ping timeout).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,term,pause,redis,stall"
    )]
    faults: Vec<String>,
    /// Each client sends a message every this many ms (to 3× that, drawn per session):
    /// 80 by default; 5 loads Redis enough for publishes to batch.
    #[arg(long, default_value_t = 80)]
    send_every_ms: u64,
    /// Independent Redis servers the brokers use as `cluster.redis_shards` (1: one
    /// Redis, `cluster.redis_url`). The `redis` fault kills one of them.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// A Redis Cluster of three masters instead (`cluster.redis_cluster`); the `redis`
    /// fault kills one master.
    #[arg(long)]
    redis_cluster: bool,
    /// The broker binary.
    #[arg(long, default_value = "target/release/switchboard")]
    broker: PathBuf,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let shards = if args.redis_cluster {
        3
    } else {
        args.shards.max(1)
    };
    if args.faults.iter().any(|f| f == "migrate") && !args.redis_cluster {
        eprintln!("chaos: the migrate fault needs --redis-cluster");
        return std::process::ExitCode::from(2);
    }
    let plan = schedule(
        seed,
        args.seconds,
        args.nodes,
        shards,
        args.clients,
        &args.faults,
    );
    println!(
        "chaos: seed {seed}, {} s, {} nodes, {} clients ({} of them the SDK) on {} channels, {shards} Redis{}",
        args.seconds,
        args.nodes,
        args.clients + args.sdk_clients,
        args.sdk_clients,
        args.channels,
        if args.redis_cluster {
            " (a Redis Cluster)"
        } else {
            ""
        }
    );
    for (at, fault, lasts) in &plan {
        println!(
            "  at {:>6.1} s: {fault:?} for {:.1} s",
            at.as_secs_f64(),
            lasts.as_secs_f64()
        );
    }
    let dir = std::env::temp_dir().join(format!("switchboard-chaos-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the logs");

    let cluster = args.redis_cluster;
    let redis_ports: Vec<u16> = (0..shards)
        .map(|_| {
            if cluster {
                procs::free_cluster_port()
            } else {
                procs::free_port()
            }
        })
        .collect();
    let mut redis: Vec<procs::Proc> = redis_ports
        .iter()
        .enumerate()
        .map(|(i, port)| procs::redis(i, *port, &dir, cluster))
        .collect();
    for r in &mut redis {
        r.start();
    }
    if cluster {
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_ports
            .iter()
            .any(|p| redis_cluster::cli(*p, &["ping"]).is_err())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Err(e) = redis_cluster::create(&redis_ports) {
            eprintln!("chaos: no Redis Cluster: {e}");
            return std::process::ExitCode::from(2);
        }
        if !redis_cluster::wait_ok(&redis_ports, Duration::from_secs(20)).await {
            eprintln!(
                "chaos: the Redis Cluster is not ok; logs in {}",
                dir.display()
            );
            return std::process::ExitCode::from(2);
        }
    }
    let ports: Vec<u16> = (0..args.nodes).map(|_| procs::free_port()).collect();
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let mut brokers: Vec<procs::Proc> = (0..args.nodes)
        .map(|i| procs::broker(&args.broker, i, ports[i], &redis_ports, cluster, &dir))
        .collect();
    for b in &mut brokers {
        b.start();
    }
    for a in &addrs {
        if !procs::wait_ready(*a, Duration::from_secs(20)).await {
            eprintln!("chaos: broker {a} not ready; logs in {}", dir.display());
            return std::process::ExitCode::from(2);
        }
    }

    let (phase_tx, phase) = tokio::sync::watch::channel(Phase::Sending);
    let mut clients: Vec<clients::Client> = (0..args.clients)
        .map(|i| {
            clients::start(
                clients::Spec {
                    id: i,
                    channel: format!("room/{}", i % args.channels),
                    nodes: addrs.clone(),
                    seed,
                    every_ms: args.send_every_ms.max(1),
                    // One client in three is authenticated.
                    token: (i % 3 == 1).then(|| procs::token(i)),
                },
                phase.clone(),
            )
        })
        .collect();
    for id in args.clients..args.clients + args.sdk_clients {
        let channel = format!("room/{}", id % args.channels);
        match sdk::start(
            id,
            channel,
            &addrs,
            args.send_every_ms.max(1),
            phase.clone(),
        ) {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!(
                    "chaos: cannot start SDK client ({} with node): {e}",
                    sdk::SCRIPT
                );
                return std::process::ExitCode::from(2);
            }
        }
    }

    let started = Instant::now();
    let mut injected = 0;
    for (at, fault, lasts) in &plan {
        tokio::time::sleep_until((started + *at).into()).await;
        println!(
            "chaos: {:>6.1} s {fault:?}",
            started.elapsed().as_secs_f64()
        );
        match fault {
            Fault::KillBroker(i) => brokers[*i].kill(),
            Fault::TermBroker(i) => brokers[*i].terminate(Duration::from_secs(5)),
            Fault::PauseBroker(i) => brokers[*i].signal(libc::SIGSTOP),
            Fault::KillRedis(i) => redis[*i].kill(),
            Fault::StallClient(i) => {
                if let Some(c) = clients.get(*i) {
                    let _ = c.commands.send(Command::Stall(*lasts));
                }
            }
            Fault::MigrateSlot(from) => {
                match redis_cluster::migrate_a_channel_slot(&redis_ports, *from) {
                    Ok(what) => println!("chaos: {what}"),
                    Err(e) => println!("chaos: the migration failed: {e}"),
                }
            }
        }
        injected += 1;
        tokio::time::sleep(*lasts).await;
        match fault {
            Fault::KillBroker(i) | Fault::TermBroker(i) => brokers[*i].start(),
            Fault::PauseBroker(i) => brokers[*i].signal(libc::SIGCONT),
            Fault::KillRedis(i) => {
                redis[*i].start();
                if cluster && !redis_cluster::wait_ok(&redis_ports, Duration::from_secs(20)).await {
                    eprintln!("chaos: the Redis Cluster is not ok 20 s after the restart");
                }
            }
            Fault::MigrateSlot(_) | Fault::StallClient(_) => {}
        }
        for a in &addrs {
            if !procs::wait_ready(*a, Duration::from_secs(20)).await {
                eprintln!("chaos: {a} not ready 20 s after healing {fault:?}");
            }
        }
    }
    let remaining = Duration::from_secs(args.seconds).saturating_sub(started.elapsed());
    tokio::time::sleep(remaining).await;

    // Quiet: no new messages; then one barrier per channel, sent by an open member:
    // every message accepted before it arrives before it, in the channel's one order.
    let _ = phase_tx.send(Phase::Quiet);
    // Settle: after the last fault (a paused broker drops its sockets when it wakes)
    // every client reconnects; the barriers go once each holds an open session.
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients.iter().any(|c| c.log.lock().unwrap().open.is_none()) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut unsettled = Vec::new();
    for ch in 0..args.channels {
        let channel = format!("room/{ch}");
        let members: Vec<&clients::Client> =
            clients.iter().filter(|c| c.channel == channel).collect();
        if let Err(why) = barrier::end_barrier(ch, &members).await {
            unsettled.push(format!("{channel}: {why}"));
        }
    }

    // Presence converges to the open sessions (a dead node's entries expire).
    let mut listed = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let sessions_now = || -> Vec<check::Session> {
        clients
            .iter()
            .flat_map(|c| c.log.lock().unwrap().sessions.clone())
            .collect()
    };
    let ghosts = loop {
        listed.clear();
        for ch in 0..args.channels {
            let channel = format!("room/{ch}");
            let path = format!("/api/apps/chaos/presence?channel={channel}");
            if let Some((200, body)) = procs::http_get(addrs[0], &path, Some(procs::API_KEY)).await
            {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let ids: BTreeSet<String> = v["presence"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c["socketId"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                listed.insert(channel, ids);
            }
        }
        let ghosts = check::check_presence(&listed, &sessions_now());
        if ghosts.is_empty() || Instant::now() > deadline {
            break ghosts;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = phase_tx.send(Phase::Done);

    let sessions = sessions_now();
    let sent: Vec<check::Sent> = clients
        .iter()
        .flat_map(|c| c.log.lock().unwrap().sent.clone())
        .collect();
    let mut report = check::check(&sent, &sessions);
    report.ghosts = ghosts;
    report.lost.extend(unsettled);
    let accepted = sent.iter().filter(|m| m.accepted).count();
    let auth_only = sent.iter().filter(|m| m.accepted && m.auth_only).count();
    println!(
        "chaos: seed {seed}: {injected} faults, {} messages sent, {accepted} accepted ({auth_only} for authenticated members only), {} sessions, {} checked, {} direct messages checked",
        sent.len(),
        sessions.len(),
        report.messages_checked,
        report.directs_checked
    );
    if args.sdk_clients > 0 {
        let (mut sessions_sdk, mut sent_sdk, mut accepted_sdk) = (0, 0, 0);
        for c in clients.iter().filter(|c| c.id >= args.clients) {
            let l = c.log.lock().unwrap();
            sessions_sdk += l.sessions.len();
            sent_sdk += l.sent.len();
            accepted_sdk += l.sent.iter().filter(|m| m.accepted).count();
        }
        println!(
            "chaos: of them from the SDK clients: {sessions_sdk} sessions, {sent_sdk} messages sent, {accepted_sdk} accepted"
        );
    }
    if report.ok() {
        println!("chaos: OK");
        let _ = std::fs::remove_dir_all(&dir);
        return std::process::ExitCode::SUCCESS;
    }
    for (what, list) in [
        ("lost", &report.lost),
        ("duplicated", &report.duplicated),
        ("reordered", &report.reordered),
        ("ghosts", &report.ghosts),
        ("leaked", &report.leaked),
    ] {
        if !list.is_empty() {
            println!("chaos: {} {what}; the first: ", list.len());
            for line in list.iter().take(5) {
                println!("    {line}");
            }
        }
    }
    if let Some((at, text)) = &report.earliest {
        let at = at.saturating_duration_since(started);
        println!(
            "chaos: smallest counterexample (its message was sent first, at {:.1} s): {text}",
            at.as_secs_f64()
        );
        for (when, fault, lasts) in plan.iter().filter(|(when, _, lasts)| {
            *when <= at + Duration::from_secs(1) && at <= *when + *lasts + Duration::from_secs(5)
        }) {
            println!(
                "    around it: {fault:?} at {:.1} s for {:.1} s",
                when.as_secs_f64(),
                lasts.as_secs_f64()
            );
        }
    }
    println!(
        "chaos: FAILED with seed {seed} (replay: --seed {seed}); logs in {}",
        dir.display()
    );
    std::process::ExitCode::FAILURE
}
