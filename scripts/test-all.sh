#!/usr/bin/env bash
# Every test: Rust unit + integration tests over real sockets (the cluster suites
# on one Redis, then on two shards, then on a 3-master Redis Cluster), then the Node suite
# that drives the real @xano/js-sdk against the broker binary, the headless-Chromium
# tests of the pages, and the randomized fault run (two fixed seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo test --release
# The cluster suites again, on two independent Redis shards (docs/protocol.md section 11).
SWITCHBOARD_TEST_REDIS=shards cargo test --release \
  --test cluster --test server_api_cluster --test webhooks_cluster
# And on a Redis Cluster of three masters (redis-cli --cluster create).
SWITCHBOARD_TEST_REDIS=cluster cargo test --release \
  --test cluster --test server_api_cluster --test webhooks_cluster
tests/sdk/run.sh
tests/browser/run.sh
scripts/chaos.sh
