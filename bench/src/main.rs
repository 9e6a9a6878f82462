//! `switchboard-bench`: the load generator for Switchboard (see bench/README.md).

mod client;
mod procs;
mod report;
mod scenarios;

use clap::{Args, Parser, Subcommand};
use report::{emit, Row};
use scenarios::{Against, Ctx, FanoutSpec, ManySpec, Res};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DEMO_SECRET: &str = "demo-secret-change-me-0123456789abcdef";

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    about = "Benchmark Switchboard (and a bare broadcast ceiling) on this machine",
    after_help = "Every result prints one human row and one JSON line ({\"scenario\":..,\"target\":..}).\n\
                  Sockets: the bench raises its own RLIMIT_NOFILE and the servers' it starts; if it \
                  cannot, run `ulimit -n <sockets + 1024>` first."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Global {
    /// The broker binary (started as `<broker> serve` on a free port, default config
    /// plus SWITCHBOARD__* overrides). Default: target/release/switchboard, else next to this binary.
    #[arg(long, global = true)]
    broker: Option<PathBuf>,
    /// The ceiling binary. Default: next to this binary, else target/release/ceiling.
    #[arg(long, global = true)]
    ceiling: Option<PathBuf>,
    /// Don't pin the server(s) and the load generator to separate CPUs.
    #[arg(long, global = true)]
    no_pin: bool,
    /// RUST_LOG for the broker (its log goes to a temporary file).
    #[arg(long, global = true, default_value = "warn")]
    broker_log: String,
    /// HS256 secret of the app (the default config's demo app).
    #[arg(long, global = true, default_value = DEMO_SECRET)]
    jwt_secret: String,
    /// Connection hash of the app.
    #[arg(long, global = true, default_value = "demo")]
    app: String,
    /// Concurrent connection attempts while setting up sockets.
    #[arg(long, global = true, default_value_t = 128)]
    connect_concurrency: usize,
    /// Nice value for the servers and the bench (e.g. -10 on a machine shared with
    /// builds; needs root or CAP_SYS_NICE). 0: unchanged.
    #[arg(long, global = true, default_value_t = 0, allow_hyphen_values = true)]
    nice: i32,
}

#[derive(Subcommand)]
enum Cmd {
    /// S subscribers in one channel, one publisher (flat out or --rate), latency and losses.
    Fanout(FanoutArgs),
    /// C channels x K subscribers, a publisher per channel; server RSS before/after everyone leaves.
    ManyChannels(ManyArgs),
    /// N idle sockets joined to one channel: server RSS per connection.
    Idle(IdleArgs),
    /// Connections per second, each with a fresh HS256 JWT and a join ack.
    Connect(ConnectArgs),
    /// Fan-out over two nodes sharing one Redis, beside a single node.
    Cluster(ClusterArgs),
    /// Every scenario, sized for a 2-core machine (< 10 min); --tiny: a < 30 s regression check.
    Suite(SuiteArgs),
}

#[derive(Args)]
struct FanoutArgs {
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Messages per second from the publisher; default: flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, value_enum, default_value = "both")]
    against: Against,
    /// Flat out: messages per subscriber in flight at most.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// After the flat-out runs, run each target again at half Switchboard's peak rate.
    #[arg(long)]
    half_rate: bool,
    /// Runs per target (interleaved); the median is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(Args)]
struct ManyArgs {
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    #[arg(long, default_value_t = 10)]
    subscribers_per_channel: usize,
    /// Messages per second per channel.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Keep the demo rule's message history (it outlives channels by design).
    #[arg(long)]
    keep_history: bool,
    /// Channels per socket (blocks of channels share their K subscriber sockets and
    /// publisher): fits C x K memberships under the descriptor limit. Default: 1, or
    /// the least that fits.
    #[arg(long)]
    channels_per_socket: Option<usize>,
    /// Join/leave cycles without traffic after the measured one (RSS after each).
    #[arg(long, default_value_t = 2)]
    extra_cycles: usize,
}

#[derive(Args)]
struct IdleArgs {
    #[arg(long, default_value_t = 20_000)]
    sockets: usize,
    /// Each Switchboard socket authenticates with a token of its own (with `exp`).
    #[arg(long)]
    tokens: bool,
    #[arg(long, value_enum, default_value = "both")]
    against: Against,
}

#[derive(Args)]
struct ConnectArgs {
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, value_enum, default_value = "both")]
    against: Against,
}

#[derive(Args)]
struct ClusterArgs {
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Skip the run at half the cluster's peak rate.
    #[arg(long)]
    no_half_rate: bool,
    /// Runs of each (single node, two nodes; interleaved); the median is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(Args)]
struct SuiteArgs {
    /// Small numbers, < 30 s: asserts the bench runs and loses nothing (no speed asserted).
    #[arg(long)]
    tiny: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let g = &cli.global;
    let mut server_cpus = None;
    if !g.no_pin {
        let cpus = procs::allowed_cpus();
        if cpus.len() >= 2 {
            let half = cpus.len() / 2;
            let (server, client) = cpus.split_at(half);
            if let Err(e) = procs::pin_self(client) {
                eprintln!("[bench] cannot pin the load generator ({e}); running unpinned");
            } else {
                eprintln!("[bench] servers on CPU {server:?}, load generator on CPU {client:?} (--no-pin to share)");
                server_cpus = Some(server.to_vec());
            }
        }
    }
    let client_cpus = procs::allowed_cpus();
    let client_threads = client_cpus.len().max(1);
    if g.nice != 0 {
        if procs::set_nice(0, g.nice) {
            eprintln!(
                "[bench] nice {} for the bench and the servers it starts",
                g.nice
            );
        } else {
            eprintln!(
                "[bench] cannot set nice {} (needs root or CAP_SYS_NICE)",
                g.nice
            );
        }
    }
    let ctx = Ctx {
        broker: procs::locate(
            g.broker.as_deref(),
            "target/release/switchboard",
            "switchboard",
        ),
        ceiling: procs::locate(g.ceiling.as_deref(), "target/release/ceiling", "ceiling"),
        server_cpus,
        broker_log: g.broker_log.clone(),
        jwt_secret: g.jwt_secret.clone(),
        app_hash: g.app.clone(),
        connect_concurrency: g.connect_concurrency,
        settle: 1.0,
        client_cpus,
        nice: g.nice,
    };
    for (what, p) in [("broker", &ctx.broker), ("ceiling", &ctx.ceiling)] {
        if !p.exists() {
            eprintln!(
                "{what} binary not found at {} (build with `cargo build --release -p switchboard -p switchboard-bench`, or pass --{what})",
                p.display()
            );
            return std::process::ExitCode::from(2);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ok = rt.block_on(run(&ctx, cli.command));
    // Sockets still open in tasks are dropped with the runtime, bounded.
    rt.shutdown_timeout(Duration::from_secs(2));
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Sockets one process can hold here (descriptor limit, raised as far as allowed).
fn socket_budget() -> usize {
    let got = procs::raise_nofile(1 << 20);
    (got as usize).saturating_sub(256).max(64)
}

/// Choose channels per socket (when not given) so the sockets fit the budget.
fn fit_sockets(mut spec: ManySpec) -> ManySpec {
    if spec.channels_per_socket == 0 {
        let budget = socket_budget();
        spec.channels_per_socket = 1;
        while spec.sockets() > budget && spec.channels_per_socket < spec.channels {
            spec.channels_per_socket += 1;
        }
        if spec.channels_per_socket > 1 {
            eprintln!(
                "[bench] many-channels: {} sockets per process allowed here; {} channels per socket ({} sockets)",
                budget,
                spec.channels_per_socket,
                spec.sockets()
            );
        }
    }
    spec
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.1))
}

/// Print rows; answers false on any loss or error.
fn finish(rows: Res<Vec<Row>>, all: &mut Vec<Row>, failures: &mut Vec<String>) {
    match rows {
        Ok(rows) => {
            for r in rows {
                emit(&r);
                if let Some(f) = r.failed() {
                    failures.push(f);
                }
                all.push(r);
            }
        }
        Err(e) => {
            eprintln!("[bench] error: {e}");
            failures.push(e);
        }
    }
}

async fn run(ctx: &Ctx, cmd: Cmd) -> bool {
    let mut all = Vec::new();
    let mut failures = Vec::new();
    match cmd {
        Cmd::Fanout(a) => {
            let spec = FanoutSpec {
                subscribers: a.subscribers,
                payload_bytes: a.payload_bytes,
                rate: a.rate,
                window: a.window,
                duration: secs(a.duration),
            };
            finish(
                scenarios::fanout(ctx, a.against, &spec, a.half_rate, a.repeat).await,
                &mut all,
                &mut failures,
            );
        }
        Cmd::ManyChannels(a) => {
            let spec = ManySpec {
                channels: a.channels,
                subscribers_per_channel: a.subscribers_per_channel,
                rate: a.rate,
                payload_bytes: a.payload_bytes,
                duration: secs(a.duration),
                keep_history: a.keep_history,
                channels_per_socket: a.channels_per_socket.unwrap_or(0),
                extra_cycles: a.extra_cycles,
            };
            let spec = fit_sockets(spec);
            finish(
                scenarios::many_channels(ctx, &spec).await.map(|r| vec![r]),
                &mut all,
                &mut failures,
            );
        }
        Cmd::Idle(a) => finish(
            scenarios::idle(ctx, a.against, a.sockets, a.tokens).await,
            &mut all,
            &mut failures,
        ),
        Cmd::Connect(a) => finish(
            scenarios::connect_scenario(ctx, a.against, a.count, a.concurrency).await,
            &mut all,
            &mut failures,
        ),
        Cmd::Cluster(a) => {
            let spec = FanoutSpec {
                subscribers: a.subscribers,
                payload_bytes: a.payload_bytes,
                rate: None,
                window: a.window,
                duration: secs(a.duration),
            };
            finish(
                scenarios::cluster(ctx, &spec, !a.no_half_rate, a.repeat).await,
                &mut all,
                &mut failures,
            );
        }
        Cmd::Suite(a) => {
            let mut quick = Ctx {
                settle: if a.tiny { 0.25 } else { 1.0 },
                ..ctx.clone()
            };
            suite(&mut quick, a.tiny, &mut all, &mut failures).await;
        }
    }
    if !failures.is_empty() {
        eprintln!("[bench] FAILED:");
        for f in &failures {
            eprintln!("  - {f}");
        }
    }
    failures.is_empty()
}

struct Sizes {
    fanout_subs: usize,
    fanout_s: f64,
    channels: usize,
    per_channel: usize,
    channel_rate: f64,
    many_s: f64,
    idle: usize,
    connect: usize,
    cluster_subs: usize,
    cluster_s: f64,
    repeat: usize,
}

async fn suite(ctx: &mut Ctx, tiny: bool, all: &mut Vec<Row>, failures: &mut Vec<String>) {
    let z = if tiny {
        Sizes {
            fanout_subs: 20,
            fanout_s: 1.0,
            channels: 20,
            per_channel: 3,
            channel_rate: 5.0,
            many_s: 1.0,
            idle: 200,
            connect: 200,
            cluster_subs: 20,
            cluster_s: 1.0,
            repeat: 1,
        }
    } else {
        Sizes {
            fanout_subs: 1000,
            fanout_s: 10.0,
            channels: 10_000,
            per_channel: 10,
            channel_rate: 0.5,
            many_s: 10.0,
            idle: 20_000,
            connect: 10_000,
            cluster_subs: 1000,
            cluster_s: 10.0,
            repeat: 3,
        }
    };
    let started = Instant::now();
    let fanout = FanoutSpec {
        subscribers: z.fanout_subs,
        payload_bytes: 100,
        rate: None,
        window: 64,
        duration: secs(z.fanout_s),
    };
    finish(
        scenarios::fanout(ctx, Against::Both, &fanout, true, z.repeat).await,
        all,
        failures,
    );
    let many = ManySpec {
        channels: z.channels,
        subscribers_per_channel: z.per_channel,
        rate: z.channel_rate,
        payload_bytes: 100,
        duration: secs(z.many_s),
        keep_history: false,
        channels_per_socket: 0,
        extra_cycles: if tiny { 1 } else { 2 },
    };
    let many = fit_sockets(many);
    finish(
        scenarios::many_channels(ctx, &many).await.map(|r| vec![r]),
        all,
        failures,
    );
    let idle_n = z.idle.min(socket_budget());
    if idle_n < z.idle {
        eprintln!(
            "[bench] idle: {} sockets asked, {idle_n} fit this machine's descriptor limit (`ulimit -Hn`)",
            z.idle
        );
    }
    finish(
        scenarios::idle(ctx, Against::Both, idle_n, false).await,
        all,
        failures,
    );
    finish(
        scenarios::connect_scenario(ctx, Against::Both, z.connect, 64).await,
        all,
        failures,
    );
    let cluster = FanoutSpec {
        subscribers: z.cluster_subs,
        duration: secs(z.cluster_s),
        ..fanout.clone()
    };
    finish(
        scenarios::cluster(ctx, &cluster, true, z.repeat).await,
        all,
        failures,
    );

    println!();
    println!(
        "== suite{} summary ({:.0} s) ==",
        if tiny { " --tiny" } else { "" },
        started.elapsed().as_secs_f64()
    );
    for r in all.iter() {
        println!("{}", r.human());
    }
    if !tiny {
        println!();
        println!("== issue 5 targets ==");
        for line in verdicts(all) {
            println!("{line}");
        }
    }
}

fn find<'a>(
    rows: &'a [Row],
    scenario: &str,
    target: &str,
    pred: impl Fn(&Row) -> bool,
) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.target == target && pred(r))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET   "
    } else {
        "MISSED"
    }
}

/// Each issue-5 target: met or missed, and by how much.
fn verdicts(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let flat = |r: &Row| r.fields.get("mode").and_then(|v| v.as_str()) == Some("flat");
    let rate = |r: &Row| r.fields.get("mode").and_then(|v| v.as_str()) == Some("rate");
    if let Some(r) = find(rows, "fanout", "switchboard", flat) {
        if let Some(x) = r
            .fields
            .get("vs_ceiling")
            .and_then(|v| v.get("deliveries_per_s"))
            .and_then(|v| v.as_f64())
        {
            out.push(format!(
                "{} fanout deliveries/s >= 0.8x ceiling: {x:.2}x",
                verdict(x >= 0.8)
            ));
        }
    }
    if let Some(r) = find(rows, "fanout", "switchboard", rate) {
        if let Some(p) = r.latency("latency_us", "p99") {
            out.push(format!(
                "{} fanout p99 <= 10 ms at half the peak rate: {:.2} ms",
                verdict(p <= 10_000.0),
                p / 1000.0
            ));
        }
    }
    if let Some(r) = find(rows, "idle", "switchboard", |_| true) {
        if let Some(k) = r.num("rss_per_conn_kib") {
            out.push(format!(
                "{} idle <= 10 KB server RSS per connection: {k:.2} KiB ({} sockets)",
                verdict(k * 1024.0 <= 10_000.0),
                r.num("sockets").unwrap_or(0.0)
            ));
        }
    }
    if let Some(r) = find(rows, "connect", "switchboard", |_| true) {
        if let Some(c) = r.num("connections_per_s") {
            out.push(format!(
                "{} connect >= 10,000 connections/s with JWT + join ack: {c:.0}/s",
                verdict(c >= 10_000.0)
            ));
        }
    }
    if let Some(r) = find(rows, "many-channels", "switchboard", |_| true) {
        if let Some(p) = r.num("rss_after_leave_vs_connected_pct") {
            out.push(format!(
                "{} many-channels RSS after everyone leaves within 10 % of before the joins: {p:+.1} %",
                verdict(p <= 10.0)
            ));
        }
        if let Some(c) = r.num("idle_cpu_pct_joined") {
            out.push(format!(
                "{} many-channels no per-channel timer when idle: server CPU {c:.2} % with every channel live and quiet",
                verdict(c < 2.0)
            ));
        }
    }
    let two_flat = |r: &Row| flat(r) && r.num("nodes") == Some(2.0);
    let two_rate = |r: &Row| rate(r) && r.num("nodes") == Some(2.0);
    if let Some(r) = find(rows, "cluster", "switchboard", two_flat) {
        if let Some(x) = r.num("vs_single_node") {
            out.push(format!(
                "{} cluster deliveries/s >= 0.7x single node: {x:.2}x",
                verdict(x >= 0.7)
            ));
        }
    }
    if let Some(r) = find(rows, "cluster", "switchboard", two_rate) {
        if let Some(p) = r.latency("cross_node_latency_us", "p99") {
            out.push(format!(
                "{} cluster cross-node p99 <= 20 ms at half the peak rate: {:.2} ms",
                verdict(p <= 20_000.0),
                p / 1000.0
            ));
        }
    }
    out
}
