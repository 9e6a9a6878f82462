#!/usr/bin/env bash
# Every test: Rust unit + integration tests over real sockets, then the Node suite
# that drives the real @xano/js-sdk against the broker binary, the headless-Chromium
# tests of the pages, and the randomized fault run (two fixed seeds).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo test --release
tests/sdk/run.sh
tests/browser/run.sh
scripts/chaos.sh
