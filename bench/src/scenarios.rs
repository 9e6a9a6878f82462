//! The scenarios. Each starts its own server(s), drives them from this process,
//! reports rows and stops what it started.

use crate::client::{
    self, connect, drive, join_frame, leave_frame, request, run_bounded, subscriber, DriveResult,
    Pace, Publisher, Shared, SubStats, Ws,
};
use crate::procs::{self, Server, Spawn};
use crate::report::{latency_json, round2, Row};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub type Res<T> = Result<T, String>;

/// What every scenario needs to know.
#[derive(Clone)]
pub struct Ctx {
    pub broker: PathBuf,
    pub ceiling: PathBuf,
    /// CPUs the servers are pinned to (None: not pinned).
    pub server_cpus: Option<Vec<usize>>,
    pub broker_log: String,
    pub jwt_secret: String,
    pub app_hash: String,
    /// Concurrent connection attempts while setting up.
    pub connect_concurrency: usize,
    /// Scales the settling and idle-CPU waits (1.0; less for the tiny suite).
    pub settle: f64,
    /// CPUs the load generator runs on (when pinned).
    pub client_cpus: Vec<usize>,
    /// Nice value for the servers (and the bench), 0 = unchanged.
    pub nice: i32,
}

impl Ctx {
    fn wait(&self, ms: u64) -> Duration {
        Duration::from_millis(((ms as f64) * self.settle).max(100.0) as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Switchboard,
    Ceiling,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Switchboard => "switchboard",
            Target::Ceiling => "ceiling",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    Both,
    Switchboard,
    Ceiling,
}

impl Against {
    pub fn targets(self) -> Vec<Target> {
        match self {
            Against::Both => vec![Target::Switchboard, Target::Ceiling],
            Against::Switchboard => vec![Target::Switchboard],
            Against::Ceiling => vec![Target::Ceiling],
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Make sure this process may hold `sockets` descriptors (plus some).
fn ensure_nofile(sockets: usize) -> Res<()> {
    let want = sockets as u64 + 200;
    let got = procs::raise_nofile(want);
    if got < want {
        return Err(format!(
            "{sockets} sockets need `ulimit -n {want}` (or more) for the bench and the server; \
             the limit here is {got}. Run `ulimit -n {want}` in this shell (as root, or raise the \
             hard limit in /etc/security/limits.conf) and try again"
        ));
    }
    Ok(())
}

fn rt_path(ctx: &Ctx) -> String {
    format!("/rt/{}", ctx.app_hash)
}

/// Start the broker (or the ceiling) on a free port and wait until it answers.
pub fn start(
    ctx: &Ctx,
    target: Target,
    sockets: usize,
    extra_env: &[(String, String)],
) -> Res<Server> {
    let port = procs::free_port().map_err(|e| format!("free port: {e}"))?;
    let nofile = (sockets as u64 + 4096).max(65536);
    let spawn = match target {
        Target::Switchboard => {
            let mut env = vec![
                (
                    "SWITCHBOARD__SERVER__LISTEN".into(),
                    format!("127.0.0.1:{port}"),
                ),
                (
                    "SWITCHBOARD__LIMITS__MESSAGES_PER_MINUTE".into(),
                    "0".into(),
                ),
                ("SWITCHBOARD__LIMITS__FRAMES_PER_MINUTE".into(), "0".into()),
                (
                    "SWITCHBOARD__LIMITS__MAX_CONNECTIONS".into(),
                    (sockets + 1000).to_string(),
                ),
                ("RUST_LOG".into(), ctx.broker_log.clone()),
            ];
            env.extend(extra_env.iter().cloned());
            Spawn {
                name: "switchboard".into(),
                program: ctx.broker.clone(),
                args: vec!["serve".into()],
                env,
                cpus: ctx.server_cpus.clone(),
                nofile,
                nice: ctx.nice,
            }
        }
        Target::Ceiling => Spawn {
            name: "ceiling".into(),
            program: ctx.ceiling.clone(),
            args: vec!["--listen".into(), format!("127.0.0.1:{port}")],
            env: vec![],
            cpus: ctx.server_cpus.clone(),
            nofile,
            nice: ctx.nice,
        },
    };
    let mut server = Server::start(spawn, port)?;
    let ready = if extra_env.iter().any(|(k, _)| k.contains("REDIS_URL")) {
        "/readyz"
    } else {
        "/healthz"
    };
    tokio::task::block_in_place(|| server.wait_http(ready, Duration::from_secs(20)))?;
    progress(format!(
        "{} up: pid {} port {port}",
        server.name,
        server.pid()
    ));
    Ok(server)
}

/// Connect `n` sockets (socket i to `ports[port_of(i)]`) and join `channel_of(i)`.
async fn connect_and_join(
    ctx: &Ctx,
    ports: Vec<u16>,
    n: usize,
    channel_of: impl Fn(usize) -> Option<String>,
    port_of: impl Fn(usize) -> usize,
    read_buffer: usize,
    token_of: impl Fn(usize) -> Option<String>,
) -> Res<Vec<Ws>> {
    let path = rt_path(ctx);
    let results = run_bounded(n, ctx.connect_concurrency, |i| {
        let port = ports[port_of(i)];
        let path = path.clone();
        let channel = channel_of(i);
        let token = token_of(i);
        async move {
            let mut ws = connect(port, &path, token.as_deref(), read_buffer).await?;
            if let Some(c) = channel {
                request(&mut ws, join_frame(&c), "join").await?;
            }
            Ok::<Ws, String>(ws)
        }
    })
    .await;
    let mut out = Vec::with_capacity(n);
    let mut first_err = None;
    let mut errors = 0;
    for r in results {
        match r {
            Ok(ws) => out.push(ws),
            Err(e) => {
                errors += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(format!(
            "{errors} of {n} sockets failed to connect or join; first: {e}"
        ));
    }
    Ok(out)
}

/// Fan-out specification.
#[derive(Clone, Debug)]
pub struct FanoutSpec {
    pub subscribers: usize,
    pub payload_bytes: usize,
    /// Messages per second; None = flat out.
    pub rate: Option<f64>,
    pub window: u64,
    pub duration: Duration,
}

impl FanoutSpec {
    fn setup(&self) -> String {
        format!(
            "S={} B={} {} {}s",
            self.subscribers,
            self.payload_bytes,
            match self.rate {
                None => "flat".to_string(),
                Some(r) => format!("{r:.0}msg/s"),
            },
            self.duration.as_secs_f64()
        )
    }
}

struct Measured {
    /// Busy % of the server CPUs and of the load generator's CPUs over the run
    /// (when pinned), whoever used them.
    cores_busy: Option<(f64, f64)>,
    drive: DriveResult,
    stats: Vec<SubStats>,
    shared: Arc<Shared>,
    server_cpu: Duration,
    client_cpu: Duration,
}

/// Run publishers against already-joined subscribers and collect everything.
#[allow(clippy::too_many_arguments)]
async fn measure(
    subs: Vec<Ws>,
    groups: impl Fn(usize) -> usize,
    n_groups: usize,
    pubs: &mut [Publisher],
    pace: Pace,
    duration: Duration,
    payload_bytes: usize,
    read_buf: usize,
    servers: &[&Server],
    server_cpus: Option<&[usize]>,
    client_cpus: &[usize],
) -> (Measured, Vec<Option<Ws>>) {
    let shared = Shared::new(n_groups);
    let (stop_tx, stop_rx) = watch::channel(false);
    let handles: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            tokio::spawn(subscriber(
                ws,
                shared.clone(),
                groups(i),
                payload_bytes,
                read_buf,
                stop_rx.clone(),
            ))
        })
        .collect();
    let cpu0: Duration = servers.iter().map(|s| s.cpu_time()).sum();
    let self0 = procs::self_cpu_time();
    let j0 = procs::cpu_jiffies();
    let drive = drive(pubs, &shared, pace, duration, payload_bytes).await;
    let j1 = procs::cpu_jiffies();
    let cpu1: Duration = servers.iter().map(|s| s.cpu_time()).sum();
    let self1 = procs::self_cpu_time();
    let cores_busy = server_cpus.map(|sc| {
        (
            procs::busy_pct(&j0, &j1, sc),
            procs::busy_pct(&j0, &j1, client_cpus),
        )
    });
    let _ = stop_tx.send(true);
    let mut stats = Vec::with_capacity(handles.len());
    let mut sockets = Vec::with_capacity(handles.len());
    for h in handles {
        let (ws, s) = h.await.expect("subscriber task");
        stats.push(s);
        sockets.push(ws);
    }
    (
        Measured {
            cores_busy,
            drive,
            stats,
            shared,
            server_cpu: cpu1.saturating_sub(cpu0),
            client_cpu: self1.saturating_sub(self0),
        },
        sockets,
    )
}

/// The delivery report shared by fanout, many-channels and cluster.
fn delivery_fields(row: &mut Row, m: &Measured) {
    let d = &m.drive;
    let received: u64 = m.stats.iter().map(|s| s.received).sum();
    let duplicates: u64 = m.stats.iter().map(|s| s.duplicates).sum();
    let sub_errors: u64 = m.stats.iter().map(|s| s.errors).sum();
    let closed: Vec<&SubStats> = m.stats.iter().filter(|s| s.closed_early).collect();
    let wall = d.drained.duration_since(d.started).as_secs_f64().max(1e-9);
    let send_wall = d
        .sending_ended
        .duration_since(d.started)
        .as_secs_f64()
        .max(1e-9);
    let mut all = client::new_histogram();
    for h in &m.shared.hists {
        all.add(&*h.lock().unwrap()).expect("histogram add");
    }
    let missing = d.expected.saturating_sub(received);
    let refused = d.refused + closed.len() as u64;
    if let Some(first) = closed.first() {
        eprintln!(
            "{} subscriber socket(s) closed by the server during the run; first: {:?}",
            closed.len(),
            first.close_reason
        );
    }
    row.set("sent", d.sent)
        .set("expected", d.expected)
        .set("received", received)
        .set("missing", missing)
        .set("duplicates", duplicates)
        .set("refused", refused)
        .set("subscribers_closed", closed.len() as u64)
        .set("errors", sub_errors + d.error.is_some() as u64)
        .set("msgs_per_s", round2(d.sent as f64 / send_wall))
        .set("deliveries_per_s", round2(received as f64 / wall))
        .set("latency_us", latency_json(&all))
        .set(
            "server_cpu_pct",
            round2(100.0 * m.server_cpu.as_secs_f64() / wall),
        )
        .set(
            "server_cpu_us_per_delivery",
            round2(m.server_cpu.as_secs_f64() * 1e6 / received.max(1) as f64),
        )
        .set(
            "client_cpu_pct",
            round2(100.0 * m.client_cpu.as_secs_f64() / wall),
        )
        .set("loadavg", procs::loadavg());
    let client_pct = 100.0 * m.client_cpu.as_secs_f64() / wall;
    let mut saturated = client_pct >= 90.0;
    if let Some((_, cli)) = m.cores_busy {
        saturated |= cli >= 97.0;
    }
    // Latency and rate then include the load generator's own queueing.
    row.set("load_generator_saturated", saturated);
    if let Some((srv, cli)) = m.cores_busy {
        let own = 100.0 * m.server_cpu.as_secs_f64() / wall;
        row.set("server_cores_busy_pct", round2(srv))
            // What others (builds, tests) took from the servers' CPUs meanwhile.
            .set("foreign_on_server_cores_pct", round2((srv - own).max(0.0)))
            .set("client_cores_busy_pct", round2(cli));
    }
    if let Some(e) = &d.error {
        row.set("error", e.clone());
    }
}

/// One fan-out run: subscribers spread over `ports` (group = index of the port),
/// the publisher on `ports[0]`.
async fn fanout_on(
    ctx: &Ctx,
    scenario: &str,
    target: Target,
    ports: &[u16],
    servers: &[&Server],
    spec: &FanoutSpec,
) -> Res<Row> {
    let channel = "chat/bench-fanout".to_string();
    let nports = ports.len();
    progress(format!(
        "{scenario} {}: connecting {} subscribers",
        target.name(),
        spec.subscribers
    ));
    let ch = channel.clone();
    let subs = connect_and_join(
        ctx,
        ports.to_vec(),
        spec.subscribers,
        move |_| Some(ch.clone()),
        move |i| i % nports,
        16 * 1024,
        |_| None,
    )
    .await?;
    let mut pubws = connect(ports[0], &rt_path(ctx), None, 16 * 1024).await?;
    request(&mut pubws, join_frame(&channel), "join").await?;
    let mut pubs = vec![Publisher::new(
        pubws,
        vec![(channel, 0)],
        spec.subscribers as u64,
    )];
    let pace = match spec.rate {
        None => Pace::Flat {
            window: spec.window,
        },
        Some(r) => Pace::Rate(r),
    };
    progress(format!(
        "{scenario} {}: publishing ({})",
        target.name(),
        spec.setup()
    ));
    let (m, sockets) = measure(
        subs,
        |i| i % nports,
        nports,
        &mut pubs,
        pace,
        spec.duration,
        spec.payload_bytes,
        64 * 1024,
        servers,
        ctx.server_cpus.as_deref(),
        &ctx.client_cpus,
    )
    .await;
    let mut row = Row::new(scenario, target.name(), spec.setup());
    row.set("subscribers", spec.subscribers as u64)
        .set("payload_bytes", spec.payload_bytes as u64)
        .set("mode", if spec.rate.is_some() { "rate" } else { "flat" })
        .set("duration_s", spec.duration.as_secs_f64());
    if let Some(r) = spec.rate {
        row.set("rate_msgs_per_s", round2(r));
    } else {
        row.set("window", spec.window);
    }
    delivery_fields(&mut row, &m);
    if nports > 1 {
        row.set("nodes", nports as u64);
        let h = m.shared.hists[0].lock().unwrap();
        row.set("same_node_latency_us", latency_json(&h));
        drop(h);
        let mut cross = client::new_histogram();
        for h in &m.shared.hists[1..] {
            cross.add(&*h.lock().unwrap()).expect("add");
        }
        row.set("cross_node_latency_us", latency_json(&cross));
    }
    for p in pubs {
        drop(p.finish().await);
    }
    drop(sockets);
    Ok(row)
}

/// `fanout` against one target: start it, run, stop it.
pub async fn fanout_target(ctx: &Ctx, target: Target, spec: &FanoutSpec) -> Res<Row> {
    ensure_nofile(spec.subscribers + 16)?;
    let server = start(ctx, target, spec.subscribers + 16, &[])?;
    let row = fanout_on(ctx, "fanout", target, &[server.port], &[&server], spec).await;
    server.stop();
    row
}

/// Ratio fields Switchboard / ceiling, put on the switchboard row.
pub fn attach_ratio(sb: &mut Row, ceiling: &Row, keys: &[&str]) {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let (Some(a), Some(b)) = (sb.num(k), ceiling.num(k)) {
            if b > 0.0 {
                m.insert((*k).to_string(), json!(round2(a / b)));
            }
        }
    }
    if let (Some(a), Some(b)) = (
        sb.num("server_cpu_us_per_delivery"),
        ceiling.num("server_cpu_us_per_delivery"),
    ) {
        if b > 0.0 && keys.contains(&"deliveries_per_s") {
            m.insert("server_cpu_per_delivery".into(), json!(round2(a / b)));
        }
    }
    sb.set("vs_ceiling", serde_json::Value::Object(m));
}

/// The median run by `key`, carrying every run's value of `key` as `runs`.
fn median_row(mut runs: Vec<Row>, key: &str) -> Row {
    runs.sort_by(|a, b| {
        a.num(key)
            .unwrap_or(0.0)
            .partial_cmp(&b.num(key).unwrap_or(0.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let values: Vec<f64> = runs.iter().map(|r| r.num(key).unwrap_or(0.0)).collect();
    let cpu: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.num("server_cpu_us_per_delivery"))
        .collect();
    // Losses anywhere count, not only in the median run.
    let missing: f64 = runs.iter().filter_map(|r| r.num("missing")).sum();
    let errors: f64 = runs.iter().filter_map(|r| r.num("errors")).sum();
    let dups: f64 = runs.iter().filter_map(|r| r.num("duplicates")).sum();
    let n = runs.len();
    let mut row = runs.swap_remove(n / 2);
    if n > 1 {
        row.set(&format!("runs_{key}"), json!(values));
        if !cpu.is_empty() {
            row.set("runs_server_cpu_us_per_delivery", json!(cpu));
        }
        row.set("runs", n as u64)
            .set("missing", missing as u64)
            .set("errors", errors as u64)
            .set("duplicates", dups as u64);
        row.setup = format!("{} med{n}", row.setup);
    }
    row
}

/// `fanout`: each target flat out (or at the given rate) `repeat` times, targets
/// interleaved, the median run reported; then optionally each target at half of
/// Switchboard's peak message rate.
pub async fn fanout(
    ctx: &Ctx,
    against: Against,
    spec: &FanoutSpec,
    half_rate: bool,
    repeat: usize,
) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    let targets = against.targets();
    let mut runs: Vec<Vec<Row>> = vec![Vec::new(); targets.len()];
    for _ in 0..repeat.max(1) {
        for (k, t) in targets.iter().enumerate() {
            runs[k].push(fanout_target(ctx, *t, spec).await?);
        }
    }
    let mut by_target: Vec<(Target, Row)> = targets
        .iter()
        .copied()
        .zip(runs.into_iter().map(|r| median_row(r, "deliveries_per_s")))
        .collect();
    ratio_rows(&mut by_target, &["deliveries_per_s"]);
    let sb_peak = by_target
        .iter()
        .find(|(t, _)| *t == Target::Switchboard)
        .and_then(|(_, r)| r.num("deliveries_per_s"));
    rows.extend(by_target.into_iter().map(|(_, r)| r));
    if half_rate && spec.rate.is_none() {
        let peak = sb_peak.or_else(|| rows.first().and_then(|r| r.num("deliveries_per_s")));
        if let Some(peak) = peak {
            let rate = (peak / spec.subscribers as f64 / 2.0).max(1.0);
            let half = FanoutSpec {
                rate: Some(rate),
                ..spec.clone()
            };
            let mut half_rows = Vec::new();
            for t in against.targets() {
                let mut r = fanout_target(ctx, t, &half).await?;
                r.set("half_of_peak_deliveries_per_s", round2(peak));
                half_rows.push((t, r));
            }
            ratio_rows(&mut half_rows, &[]);
            rows.extend(half_rows.into_iter().map(|(_, r)| r));
        }
    }
    Ok(rows)
}

fn ratio_rows(rows: &mut [(Target, Row)], keys: &[&str]) {
    let ceiling = rows
        .iter()
        .find(|(t, _)| *t == Target::Ceiling)
        .map(|(_, r)| r.clone());
    if let Some(c) = ceiling {
        for (t, r) in rows.iter_mut() {
            if *t == Target::Switchboard {
                attach_ratio(r, &c, keys);
                if let Some(v) = r.fields.get("vs_ceiling") {
                    progress(format!("{} Switchboard / ceiling: {v}", r.scenario));
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct ManySpec {
    pub channels: usize,
    pub subscribers_per_channel: usize,
    /// Messages per second per channel.
    pub rate: f64,
    pub payload_bytes: usize,
    pub duration: Duration,
    pub keep_history: bool,
    /// Channels each socket joins (1: a socket per membership). Channels are taken
    /// in blocks of this many: the K subscriber sockets and the publisher socket of
    /// a block join every channel of it, so each channel still has K subscribers and
    /// a publisher; only the socket count shrinks (by this factor).
    pub channels_per_socket: usize,
    /// Join/leave cycles without traffic after the first (to tell a leak from the
    /// allocator keeping freed memory).
    pub extra_cycles: usize,
}

impl ManySpec {
    pub fn sockets(&self) -> usize {
        let m = self.channels_per_socket.max(1);
        self.channels.div_ceil(m) * (self.subscribers_per_channel + 1)
    }
}

async fn settle_rss(server: &Server, wait: Duration) -> u64 {
    tokio::time::sleep(wait).await;
    server.rss_kib()
}

async fn idle_cpu_pct(servers: &[&Server], window: Duration) -> f64 {
    let a: Duration = servers.iter().map(|s| s.cpu_time()).sum();
    tokio::time::sleep(window).await;
    let b: Duration = servers.iter().map(|s| s.cpu_time()).sum();
    round2(100.0 * b.saturating_sub(a).as_secs_f64() / window.as_secs_f64())
}

/// `many-channels`: C channels × K subscribers, a publisher per channel at a fixed
/// rate; then everyone leaves and the server's RSS is compared with before the joins.
pub async fn many_channels(ctx: &Ctx, spec: &ManySpec) -> Res<Row> {
    let c = spec.channels;
    let k = spec.subscribers_per_channel;
    let m = spec.channels_per_socket.max(1);
    let per = k + 1;
    let blocks = c.div_ceil(m);
    let total = spec.sockets();
    ensure_nofile(total + 16)?;
    let mut env = vec![];
    if !spec.keep_history {
        // History outlives the channel (history_ttl_s) by design; keep it out of the
        // channel-lifecycle measurement.
        env.push((
            "SWITCHBOARD__APPS__0__CHANNELS__0__SETTINGS__MESSAGE_HISTORY".to_string(),
            "0".to_string(),
        ));
    }
    if m > 100 {
        env.push((
            "SWITCHBOARD__LIMITS__MAX_CHANNELS_PER_SOCKET".to_string(),
            m.to_string(),
        ));
    }
    let server = start(ctx, Target::Switchboard, total + 16, &env)?;
    let setup = format!(
        "C={c} K={k} {}msg/s/ch B={} {}s{}",
        spec.rate,
        spec.payload_bytes,
        spec.duration.as_secs_f64(),
        if m > 1 {
            format!(" {m}ch/socket")
        } else {
            String::new()
        }
    );
    let rss_start = settle_rss(&server, ctx.wait(500)).await;
    let threads_start = server.threads();
    progress(format!("many-channels: connecting {total} sockets"));
    let t0 = Instant::now();
    let sockets = connect_and_join(
        ctx,
        vec![server.port],
        total,
        |_| None,
        |_| 0,
        4096,
        |_| None,
    )
    .await?;
    let connect_s = t0.elapsed().as_secs_f64();
    let rss_connected = settle_rss(&server, ctx.wait(1000)).await;
    // Socket i belongs to block i / per; its channels are that block's.
    let block_channels = move |b: usize| -> Vec<(String, u64)> {
        (b * m..((b + 1) * m).min(c))
            .map(|ch| (format!("chat/mc-{ch}"), ch as u64))
            .collect()
    };
    let names_of = move |i: usize| -> Vec<String> {
        block_channels(i / per)
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    };
    progress(format!(
        "many-channels: joining {c} channels ({} memberships)",
        c * per
    ));
    let t1 = Instant::now();
    let joined = join_all(ctx, sockets, names_of, "join").await?;
    let join_s = t1.elapsed().as_secs_f64();
    let rss_joined = settle_rss(&server, ctx.wait(1000)).await;
    let threads_joined = server.threads();
    let live_joined = procs::metric(server.port, "switchboard_channels_live");
    progress("many-channels: measuring idle CPU with every channel live");
    let idle_cpu_joined = idle_cpu_pct(&[&server], ctx.wait(3000)).await;
    // Per block: K subscribers, then the publisher.
    let mut subs = Vec::with_capacity(blocks * k);
    let mut sub_idx = Vec::with_capacity(blocks * k);
    let mut pubs = Vec::with_capacity(blocks);
    for (i, ws) in joined.into_iter().enumerate() {
        if i % per == k {
            pubs.push(Publisher::new(ws, block_channels(i / per), k as u64));
        } else {
            subs.push(ws);
            sub_idx.push(i);
        }
    }
    progress(format!("many-channels: publishing ({setup})"));
    let (mm, sub_sockets) = measure(
        subs,
        |_| 0,
        1,
        &mut pubs,
        Pace::Rate(spec.rate * c as f64),
        spec.duration,
        spec.payload_bytes,
        8 * 1024,
        &[&server],
        ctx.server_cpus.as_deref(),
        &ctx.client_cpus,
    )
    .await;
    let rss_loaded = server.rss_kib();
    let mut row = Row::new("many-channels", "switchboard", setup);
    row.set("channels", c as u64)
        .set("subscribers_per_channel", k as u64)
        .set("channels_per_socket", m as u64)
        .set("sockets", total as u64)
        .set("rate_msgs_per_s_per_channel", spec.rate)
        .set("payload_bytes", spec.payload_bytes as u64)
        .set("duration_s", spec.duration.as_secs_f64())
        .set("history_kept", spec.keep_history);
    delivery_fields(&mut row, &mm);
    // Everyone leaves (sockets stay open).
    progress("many-channels: every socket leaves its channels");
    let mut all: Vec<(Ws, usize)> = Vec::with_capacity(total);
    let mut lost = 0u64;
    for (ws, i) in sub_sockets.into_iter().zip(sub_idx) {
        match ws {
            Some(ws) => all.push((ws, i)),
            None => lost += 1,
        }
    }
    for (b, p) in pubs.into_iter().enumerate() {
        match p.finish().await {
            Some(ws) => all.push((ws, b * per + k)),
            None => lost += 1,
        }
    }
    let idx: Vec<usize> = all.iter().map(|(_, i)| *i).collect();
    let idx_left = Arc::new(idx.clone());
    let t2 = Instant::now();
    let left = join_all(
        ctx,
        all.into_iter().map(|(ws, _)| ws).collect(),
        move |j| names_of(idx[j]),
        "leave",
    )
    .await;
    let leave_s = t2.elapsed().as_secs_f64();
    let (left, mut leave_errors) = match left {
        Ok(v) => (v, 0u64),
        Err(e) => {
            eprintln!("many-channels: leave failed: {e}");
            (Vec::new(), 1)
        }
    };
    let rss_after_leave = settle_rss(&server, ctx.wait(2000)).await;
    let threads_after_leave = server.threads();
    let live_after_leave = procs::metric(server.port, "switchboard_channels_live");
    let idle_cpu_after_leave = idle_cpu_pct(&[&server], ctx.wait(2000)).await;
    // More join/leave cycles (no traffic): if RSS climbs by as much each time, the
    // channels leak; if it levels off, the first growth is the allocator keeping memory.
    let mut cycles_rss: Vec<u64> = vec![rss_after_leave];
    let mut sockets_left = left;
    for cycle in 0..spec.extra_cycles {
        if sockets_left.is_empty() {
            break;
        }
        progress(format!("many-channels: join/leave cycle {}", cycle + 2));
        let i2 = idx_left.clone();
        let again = match join_all(ctx, sockets_left, move |j| names_of(i2[j]), "join").await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("many-channels: join (cycle {}) failed: {e}", cycle + 2);
                leave_errors += 1;
                sockets_left = Vec::new();
                break;
            }
        };
        let i3 = idx_left.clone();
        sockets_left = match join_all(ctx, again, move |j| names_of(i3[j]), "leave").await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("many-channels: leave (cycle {}) failed: {e}", cycle + 2);
                leave_errors += 1;
                Vec::new()
            }
        };
        cycles_rss.push(settle_rss(&server, ctx.wait(2000)).await);
    }
    drop(sockets_left);
    let rss_after_close = settle_rss(&server, ctx.wait(2000)).await;
    let errors = row.num("errors").unwrap_or(0.0) as u64 + leave_errors + lost;
    row.set("errors", errors)
        .set("connect_s", round2(connect_s))
        .set("join_s", round2(join_s))
        .set("leave_s", round2(leave_s))
        .set("rss_start_kib", rss_start)
        .set("rss_connected_kib", rss_connected)
        .set("rss_joined_kib", rss_joined)
        .set("rss_loaded_kib", rss_loaded)
        .set("rss_after_leave_kib", rss_after_leave)
        .set("rss_after_leave_per_cycle_kib", json!(cycles_rss))
        .set("rss_after_close_kib", rss_after_close)
        .set(
            "rss_after_leave_vs_connected_pct",
            round2(100.0 * (rss_after_leave as f64 - rss_connected as f64) / rss_connected.max(1) as f64),
        )
        .set(
            "rss_per_channel_joined_kib",
            round2((rss_joined as f64 - rss_connected as f64) / c as f64),
        )
        .set("server_threads", json!({"start": threads_start, "joined": threads_joined, "after_leave": threads_after_leave}))
        .set(
            "channels_live_metric",
            json!({"joined": live_joined, "after_leave": live_after_leave}),
        )
        .set("idle_cpu_pct_joined", idle_cpu_joined)
        .set("idle_cpu_pct_after_leave", idle_cpu_after_leave);
    server.stop();
    Ok(row)
}

/// Send `action` (join or leave) for each of `channels_of(i)` on every socket i,
/// waiting for each ack.
async fn join_all(
    ctx: &Ctx,
    sockets: Vec<Ws>,
    channels_of: impl Fn(usize) -> Vec<String>,
    action: &'static str,
) -> Res<Vec<Ws>> {
    let n = sockets.len();
    let slots: Vec<std::sync::Mutex<Option<Ws>>> = sockets
        .into_iter()
        .map(|w| std::sync::Mutex::new(Some(w)))
        .collect();
    let slots = Arc::new(slots);
    let results = run_bounded(n, ctx.connect_concurrency, |i| {
        let ws = slots[i].lock().unwrap().take();
        let frames: Vec<String> = channels_of(i)
            .iter()
            .map(|c| {
                if action == "join" {
                    join_frame(c)
                } else {
                    leave_frame(c)
                }
            })
            .collect();
        async move {
            let mut ws = ws.ok_or("socket taken twice")?;
            for f in frames {
                request(&mut ws, f, action).await?;
            }
            Ok::<Ws, String>(ws)
        }
    })
    .await;
    let mut out = Vec::with_capacity(n);
    let mut errs = 0;
    let mut first = None;
    for r in results {
        match r {
            Ok(ws) => out.push(ws),
            Err(e) => {
                errs += 1;
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(format!(
            "{errs} of {n} sockets failed to {action}; first: {e}"
        )),
        None => Ok(out),
    }
}

/// Keep a socket read (answers pings) until `stop`; answers whether it stayed open.
async fn hold(mut ws: Ws, mut stop: watch::Receiver<bool>) -> bool {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return true,
            m = ws.next() => match m {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | Some(Err(_)) | None => return false,
                _ => {}
            }
        }
    }
}

/// `idle`: N sockets joined to one channel; server RSS per connection.
/// `tokens`: every Switchboard socket authenticates with its own token (with `exp`,
/// so each holds a session timer), as a production socket does.
pub async fn idle_target(ctx: &Ctx, target: Target, sockets: usize, tokens: bool) -> Res<Row> {
    ensure_nofile(sockets + 16)?;
    let server = start(ctx, target, sockets + 16, &[])?;
    let rss_before = settle_rss(&server, ctx.wait(500)).await;
    progress(format!(
        "idle {}: connecting {sockets} sockets",
        target.name()
    ));
    let t0 = Instant::now();
    let channel = "chat/bench-idle".to_string();
    let ch = channel.clone();
    let secret = ctx.jwt_secret.clone();
    let socks = connect_and_join(
        ctx,
        vec![server.port],
        sockets,
        move |_| Some(ch.clone()),
        |_| 0,
        4096,
        |i| (tokens && target == Target::Switchboard).then(|| mint_token(&secret, i as u64)),
    )
    .await;
    let socks = match socks {
        Ok(s) => s,
        Err(e) => return Err(format!("idle {}: {e}", target.name())),
    };
    let connect_s = t0.elapsed().as_secs_f64();
    let (stop_tx, stop_rx) = watch::channel(false);
    let holders: Vec<_> = socks
        .into_iter()
        .map(|ws| tokio::spawn(hold(ws, stop_rx.clone())))
        .collect();
    let rss_after = settle_rss(&server, ctx.wait(2000)).await;
    let idle_cpu = idle_cpu_pct(&[&server], ctx.wait(2000)).await;
    let rss_after2 = server.rss_kib();
    let _ = stop_tx.send(true);
    let mut open = 0u64;
    for h in holders {
        if h.await.unwrap_or(false) {
            open += 1;
        }
    }
    let per_conn = (rss_after2.max(rss_after) as f64 - rss_before as f64) / sockets.max(1) as f64;
    let setup = if tokens {
        format!("N={sockets} tokens")
    } else {
        format!("N={sockets}")
    };
    let mut row = Row::new("idle", target.name(), setup);
    row.set("sockets", sockets as u64)
        .set("tokens", tokens && target == Target::Switchboard)
        .set("rss_before_kib", rss_before)
        .set("rss_after_kib", rss_after2.max(rss_after))
        .set("rss_per_conn_kib", round2(per_conn))
        .set("rss_per_conn_bytes", (per_conn * 1024.0).round())
        .set("server_idle_cpu_pct", idle_cpu)
        .set("connect_s", round2(connect_s))
        .set(
            "connections_per_s_setup",
            round2(sockets as f64 / connect_s.max(1e-9)),
        )
        .set("server_threads", server.threads())
        .set("missing", sockets as u64 - open)
        .set("errors", 0u64)
        .set("loadavg", procs::loadavg());
    server.stop();
    Ok(row)
}

pub async fn idle(ctx: &Ctx, against: Against, sockets: usize, tokens: bool) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    for t in against.targets() {
        rows.push((t, idle_target(ctx, t, sockets, tokens).await?));
    }
    let ceiling = rows
        .iter()
        .find(|(t, _)| *t == Target::Ceiling)
        .map(|(_, r)| r.clone());
    if let Some(c) = ceiling {
        for (t, r) in rows.iter_mut() {
            if *t == Target::Switchboard {
                if let (Some(a), Some(b)) = (r.num("rss_per_conn_kib"), c.num("rss_per_conn_kib")) {
                    if b > 0.0 {
                        r.set("vs_ceiling", json!({"rss_per_conn": round2(a / b)}));
                    }
                }
            }
        }
    }
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh HS256 token, signed with the app's secret.
pub fn mint_token(secret: &str, n: u64) -> String {
    static JTI: AtomicU64 = AtomicU64::new(0);
    let now = now_s();
    let claims = json!({
        "sub": n + 1,
        "iat": now,
        "exp": now + 3600,
        "jti": format!("{}-{}", std::process::id(), JTI.fetch_add(1, Ordering::Relaxed)),
        "extras": {"bench": true},
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign token")
}

/// `connect`: N connections, each with a fresh JWT, each waiting for its join ack.
pub async fn connect_target(
    ctx: &Ctx,
    target: Target,
    count: usize,
    concurrency: usize,
) -> Res<Row> {
    ensure_nofile(count + 16)?;
    let server = start(ctx, target, count + 16, &[])?;
    progress(format!(
        "connect {}: {count} connections, {concurrency} at a time",
        target.name()
    ));
    let port = server.port;
    let path = rt_path(ctx);
    // A distinct token per connection, signed before the clock starts: what is
    // timed is the server's work (verify, admit, join), not the bench's signing.
    let mut tokens: Vec<Option<String>> = (0..count)
        .map(|i| Some(mint_token(&ctx.jwt_secret, i as u64)))
        .collect();
    let cpu0 = server.cpu_time();
    let self0 = procs::self_cpu_time();
    let t0 = Instant::now();
    let results = run_bounded(count, concurrency, |i| {
        let path = path.clone();
        let token = tokens[i].take().expect("token");
        async move {
            let start = Instant::now();
            let mut ws = connect(port, &path, Some(&token), 4096).await?;
            // An invalid token would show up as an error frame before the ack.
            request(&mut ws, join_frame("chat/bench-connect"), "join").await?;
            Ok::<(Ws, u64), String>((ws, start.elapsed().as_micros() as u64))
        }
    })
    .await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_time().saturating_sub(cpu0);
    let client_cpu = procs::self_cpu_time().saturating_sub(self0);
    let mut hist = client::new_histogram();
    let mut ok = 0u64;
    let mut first_err = None;
    let mut sockets = Vec::with_capacity(count);
    for r in results {
        match r {
            Ok((ws, us)) => {
                ok += 1;
                hist.saturating_record(us.max(1));
                sockets.push(ws);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let errors = count as u64 - ok;
    let mut row = Row::new(
        "connect",
        target.name(),
        format!("N={count} concurrency={concurrency}"),
    );
    row.set("count", count as u64)
        .set("concurrency", concurrency as u64)
        .set("connections_per_s", round2(ok as f64 / wall.max(1e-9)))
        .set("latency_us", latency_json(&hist))
        .set(
            "server_cpu_pct",
            round2(100.0 * cpu.as_secs_f64() / wall.max(1e-9)),
        )
        .set(
            "server_cpu_us_per_connection",
            round2(cpu.as_secs_f64() * 1e6 / ok.max(1) as f64),
        )
        .set(
            "client_cpu_pct",
            round2(100.0 * client_cpu.as_secs_f64() / wall.max(1e-9)),
        )
        .set("missing", errors)
        .set("errors", errors)
        .set("jwt_verified", target == Target::Switchboard)
        .set("loadavg", procs::loadavg());
    if let Some(e) = first_err {
        eprintln!("connect {}: {errors} failed; first: {e}", target.name());
        row.set("error", e);
    }
    drop(sockets);
    server.stop();
    Ok(row)
}

pub async fn connect_scenario(
    ctx: &Ctx,
    against: Against,
    count: usize,
    concurrency: usize,
) -> Res<Vec<Row>> {
    let mut rows = Vec::new();
    for t in against.targets() {
        rows.push((t, connect_target(ctx, t, count, concurrency).await?));
    }
    ratio_rows(&mut rows, &["connections_per_s"]);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// `cluster`: fan-out with subscribers over two nodes sharing one Redis, beside a
/// single node in the same run (runs interleaved, medians); then the cluster at
/// half its peak for latency.
pub async fn cluster(
    ctx: &Ctx,
    spec: &FanoutSpec,
    half_rate: bool,
    repeat: usize,
) -> Res<Vec<Row>> {
    let Some(redis_bin) = procs::which("redis-server") else {
        let mut row = Row::new("cluster", "switchboard", spec.setup());
        row.set("skipped", true).set(
            "reason",
            "redis-server not found on PATH (apt-get install redis-server)",
        );
        return Ok(vec![row]);
    };
    ensure_nofile(spec.subscribers + 64)?;
    let single = start(ctx, Target::Switchboard, spec.subscribers + 16, &[])?;
    let redis_port = procs::free_port().map_err(|e| e.to_string())?;
    let mut redis = Server::start(
        Spawn {
            name: "redis".into(),
            program: redis_bin,
            args: vec![
                "--port".into(),
                redis_port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--protected-mode".into(),
                "no".into(),
            ],
            env: vec![],
            cpus: ctx.server_cpus.clone(),
            nofile: 65536,
            nice: ctx.nice,
        },
        redis_port,
    )?;
    tokio::task::block_in_place(|| redis.wait_redis(Duration::from_secs(10)))?;
    let env = vec![
        (
            "SWITCHBOARD__CLUSTER__REDIS_URL".to_string(),
            format!("redis://127.0.0.1:{redis_port}/"),
        ),
        (
            "SWITCHBOARD__CLUSTER__PREFIX".to_string(),
            format!("bench{}:", std::process::id()),
        ),
    ];
    let a = start(ctx, Target::Switchboard, spec.subscribers + 16, &env)?;
    let b = start(ctx, Target::Switchboard, spec.subscribers + 16, &env)?;
    let mut singles = Vec::new();
    let mut twos = Vec::new();
    for _ in 0..repeat.max(1) {
        progress("cluster: single node (memory engine)");
        let mut r = fanout_on(
            ctx,
            "cluster",
            Target::Switchboard,
            &[single.port],
            &[&single],
            spec,
        )
        .await?;
        r.set("nodes", 1u64);
        singles.push(r);
        progress("cluster: two nodes + Redis");
        twos.push(
            fanout_on(
                ctx,
                "cluster",
                Target::Switchboard,
                &[a.port, b.port],
                &[&a, &b, &redis],
                spec,
            )
            .await?,
        );
    }
    let single_row = median_row(singles, "deliveries_per_s");
    let mut two = median_row(twos, "deliveries_per_s");
    if let (Some(x), Some(y)) = (
        two.num("deliveries_per_s"),
        single_row.num("deliveries_per_s"),
    ) {
        if y > 0.0 {
            two.set("vs_single_node", round2(x / y));
        }
    }
    let mut rows = vec![single_row, two];
    if half_rate && spec.rate.is_none() {
        if let Some(peak) = rows[1].num("deliveries_per_s") {
            let half = FanoutSpec {
                rate: Some((peak / spec.subscribers as f64 / 2.0).max(1.0)),
                ..spec.clone()
            };
            progress("cluster: two nodes at half their peak");
            let mut r = fanout_on(
                ctx,
                "cluster",
                Target::Switchboard,
                &[a.port, b.port],
                &[&a, &b, &redis],
                &half,
            )
            .await?;
            r.set("half_of_peak_deliveries_per_s", round2(peak));
            rows.push(r);
        }
    }
    single.stop();
    a.stop();
    b.stop();
    redis.stop();
    Ok(rows)
}
