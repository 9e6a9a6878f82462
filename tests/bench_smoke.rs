//! The benchmark's regression check: `switchboard-bench suite --tiny` runs every
//! scenario on small numbers against the broker built for this test run and must
//! lose nothing. It asserts no speed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_bounded(
    mut child: std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bench_suite_tiny_runs_and_loses_nothing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-p", "switchboard-bench"])
        .spawn()
        .expect("run cargo build -p switchboard-bench");
    let status = wait_bounded(
        build,
        Duration::from_secs(1800),
        "cargo build -p switchboard-bench",
    );
    assert!(status.success(), "building switchboard-bench failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bench = target.join("release").join("switchboard-bench");
    assert!(bench.exists(), "{} missing", bench.display());

    let out_path = std::env::temp_dir().join(format!("bench-smoke-{}.out", std::process::id()));
    let err_path = std::env::temp_dir().join(format!("bench-smoke-{}.err", std::process::id()));
    let child = Command::new(&bench)
        .current_dir(&root)
        // The broker built for this test run (debug or release).
        .args([
            "--broker",
            env!("CARGO_BIN_EXE_switchboard"),
            "suite",
            "--tiny",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("start switchboard-bench");
    let status = wait_bounded(
        child,
        Duration::from_secs(180),
        "switchboard-bench suite --tiny",
    );
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    assert!(
        status.success(),
        "suite --tiny failed ({status}):\n{stdout}\n{stderr}"
    );

    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    for scenario in ["fanout", "many-channels", "idle", "connect", "cluster"] {
        let of: Vec<&serde_json::Value> =
            rows.iter().filter(|r| r["scenario"] == scenario).collect();
        assert!(!of.is_empty(), "no JSON line for {scenario}:\n{stdout}");
        for r in of {
            if scenario == "cluster" && r["skipped"] == true {
                // No redis-server on this machine: said so, nothing to check.
                continue;
            }
            assert_eq!(r["missing"], 0, "{scenario} lost deliveries: {r}");
            assert_eq!(r["errors"], 0, "{scenario} had errors: {r}");
        }
    }
    for target in ["switchboard", "ceiling"] {
        assert!(
            rows.iter()
                .any(|r| r["scenario"] == "fanout" && r["target"] == target),
            "no fanout result against {target}"
        );
    }
}
