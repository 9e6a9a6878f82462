#!/usr/bin/env bash
# Build the broker and the benchmark in release mode, then run the benchmark suite
# (every scenario, sized for a 2-core machine, < 10 min). Extra arguments go to
# `switchboard-bench suite`, e.g. `scripts/bench.sh --tiny` or `scripts/bench.sh --no-pin`.
# Results: a table on stdout and one JSON line per result; see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p switchboard -p switchboard-bench
# The bench raises its own descriptor limit (and the servers') when it may; for a
# non-root user take at least what the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/switchboard-bench suite "$@"
