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

# A free port: bind :0, read it, release it.
PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
LOG="$(mktemp -t switchboard-sdk.XXXXXX.log)"

BROKER_PID=""
cleanup() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SWITCHBOARD__SERVER__LISTEN="127.0.0.1:$PORT" "$BIN" serve --config "$HERE/sdk.toml" >"$LOG" 2>&1 &
BROKER_PID=$!

# Wait (bounded: 20 s) for /healthz.
up=""
for _ in $(seq 1 200); do
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
  if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "run.sh: broker did not answer /healthz on 127.0.0.1:$PORT; its log ($LOG):" >&2
  tail -n 50 "$LOG" >&2
  exit 2
fi
echo "run.sh: broker up on 127.0.0.1:$PORT (pid $BROKER_PID, log $LOG)"

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
