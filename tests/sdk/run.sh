#!/usr/bin/env bash
# Run the @xano/js-sdk suite against a freshly started Switchboard broker.
#
#   tests/sdk/run.sh [test files...]   (default: every *.test.mjs here)
#
# Env: SWITCHBOARD_BIN (default: <repo>/target/release/switchboard),
#      SDK_TEST_WAIT_MS (bound on each await in the tests, default 5000).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/release/switchboard}"
cd "$HERE"

if [ ! -x "$BIN" ]; then
  echo "run.sh: broker binary not found at $BIN (build it with: cargo build --release)" >&2
  exit 2
fi

if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund || exit 2
fi

LOG="$(mktemp -t switchboard-sdk.XXXXXX.log)"

# shellcheck source=../broker.sh
source "$ROOT/tests/broker.sh"
start_broker "$LOG" serve --config "$HERE/sdk.toml"

if [ "$#" -gt 0 ]; then
  FILES=("$@")
else
  FILES=("$HERE"/*.test.mjs)
fi
SWITCHBOARD_PORT="$PORT" node --test "${FILES[@]}"
status=$?
if [ "$status" -ne 0 ]; then
  echo "run.sh: tests failed (exit $status); broker log kept: $LOG" >&2
else
  rm -f "$LOG"
fi
exit "$status"
