//! The processes the bench starts and watches: the broker, the ceiling, Redis.
//! Everything listens on 127.0.0.1 on a free port; every wait is bounded.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Vec<usize> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pin the calling process (and the threads it starts later) to `cpus`.
pub fn pin_self(cpus: &[usize]) -> std::io::Result<()> {
    set_affinity(0, cpus)
}

fn set_affinity(pid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raise RLIMIT_NOFILE to at least `want` if we can (root may raise the hard limit up
/// to fs.nr_open; others up to their hard limit). Answers the soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20);
        let target = want.min(nr_open);
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max.max(target),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return target;
        }
        // Not allowed above the hard limit: take what the hard limit gives.
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max.min(target),
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return soft.rlim_cur;
        }
        lim.rlim_cur
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: a tiny race we accept).
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Where a sibling binary is: `default` if it exists, else next to this executable.
pub fn locate(explicit: Option<&Path>, default: &str, name: &str) -> PathBuf {
    let p = locate_relative(explicit, default, name);
    // Servers run in another directory: make the path absolute.
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn locate_relative(explicit: Option<&Path>, default: &str, name: &str) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let d = PathBuf::from(default);
    if d.exists() {
        return d;
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    d
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// How a server process is started.
pub struct Spawn {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cpus: Option<Vec<usize>>,
    pub nofile: u64,
    /// Scheduling priority (nice); 0 leaves it.
    pub nice: i32,
}

/// A started server; killed when dropped.
pub struct Server {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Server {
    pub fn start(spawn: Spawn, port: u16) -> Result<Server, String> {
        let log = std::env::temp_dir().join(format!(
            "switchboard-bench-{}-{}-{port}.log",
            std::process::id(),
            spawn.name
        ));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&spawn.program);
        cmd.args(&spawn.args)
            .envs(spawn.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            // The embedded default configuration, not whatever config/ the cwd holds.
            .current_dir(std::env::temp_dir());
        let cpus = spawn.cpus.clone();
        let nofile = spawn.nofile;
        let nice = spawn.nice;
        unsafe {
            cmd.pre_exec(move || {
                // The server holds one descriptor per socket.
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                let mut cur: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
                if cur.rlim_cur < nofile && libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    // Not root: at least the hard limit.
                    let soft = libc::rlimit {
                        rlim_cur: cur.rlim_max,
                        rlim_max: cur.rlim_max,
                    };
                    libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
                }
                if nice != 0 {
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                }
                if let Some(cpus) = &cpus {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for &c in cpus {
                        libc::CPU_SET(c, &mut set);
                    }
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", spawn.program.display()))?;
        Ok(Server {
            name: spawn.name,
            port,
            log,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until `GET path` answers 200 (bounded).
    pub fn wait_http(&mut self, path: &str, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before answering {path}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                ));
            }
            if http_get_ok(self.port, path) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer {path} within {within:?}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until a Redis server answers PING.
    pub fn wait_redis(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}): {}",
                    self.log_tail()
                ));
            }
            if redis_ping(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Resident set size in KiB (VmRSS of /proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// User + system CPU time consumed so far (all threads).
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    pub fn threads(&self) -> u64 {
        status_field(self.pid(), "Threads:").unwrap_or(0)
    }

    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:").unwrap_or(0)
}

pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time of this (bench) process.
pub fn self_cpu_time() -> Duration {
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let us = (ru.ru_utime.tv_sec as u64 + ru.ru_stime.tv_sec as u64) * 1_000_000
            + ru.ru_utime.tv_usec as u64
            + ru.ru_stime.tv_usec as u64;
        Duration::from_micros(us)
    }
}

fn http_get_ok(port: u16, path: &str) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf[..n].starts_with(b"HTTP/1.1 200")
}

/// The body of `GET path` (HTTP/1.1, connection close), if it answered 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A gauge or counter from the broker's Prometheus text (`/metrics`), summed over labels.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let body = http_get(port, "/metrics")?;
    let mut found = None;
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let base = key.split('{').next().unwrap_or(key);
        if base == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    found
}

fn redis_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// The 1-minute load average (how busy the shared machine was).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Busy and total jiffies of each CPU (from /proc/stat), indexed by CPU number.
pub fn cpu_jiffies() -> Vec<(u64, u64)> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let Some(Ok(n)) = it.next().map(|c| c.parse::<usize>()) else {
            continue; // the aggregate line
        };
        let v: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let total: u64 = v.iter().take(8).sum();
        if out.len() <= n {
            out.resize(n + 1, (0, 0));
        }
        out[n] = (total - idle, total);
    }
    out
}

/// Busy share (%) of `cpus` between two `cpu_jiffies` samples, summed over the CPUs.
pub fn busy_pct(a: &[(u64, u64)], b: &[(u64, u64)], cpus: &[usize]) -> f64 {
    let mut busy = 0u64;
    let mut total = 0u64;
    for &c in cpus {
        if let (Some(x), Some(y)) = (a.get(c), b.get(c)) {
            busy += y.0.saturating_sub(x.0);
            total += y.1.saturating_sub(x.1);
        }
    }
    if total == 0 {
        return 0.0;
    }
    100.0 * busy as f64 / total as f64 * cpus.len() as f64
}

/// Lower (negative) or raise the scheduling priority of a process (0 = this one).
pub fn set_nice(pid: u32, nice: i32) -> bool {
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, nice) == 0 }
}
