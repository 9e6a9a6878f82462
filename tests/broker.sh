# Sourced by tests/sdk/run.sh and tests/browser/run.sh: start one broker for a
# Node suite and stop it on exit.
#
#   start_broker <log file> <switchboard args...>   (env overrides are inherited)
#
# The broker binds 127.0.0.1:0 and its "listening" log line (--log-format json)
# says which port it got, so no other process can be handed the same port in
# between. Sets BROKER_PID and PORT; exits 2 with the log's tail if the broker
# does not answer /healthz within 20 s. The log is kept for the caller.

BROKER_PID=""
PORT=""

stop_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
}

start_broker() {
  local log="$1"
  shift
  trap stop_broker EXIT
  trap 'exit 130' INT TERM
  RUST_LOG="${RUST_LOG:-info}" SWITCHBOARD__SERVER__LISTEN="127.0.0.1:0" \
    "$BIN" --log-format json "$@" >"$log" 2>&1 &
  BROKER_PID=$!
  local up=""
  for _ in $(seq 1 200); do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then break; fi
    if [ -z "$PORT" ]; then
      PORT="$(sed -n 's/.*"message":"listening","addr":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$log" | head -n 1)"
    fi
    if [ -n "$PORT" ] && curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz" 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "run.sh: broker did not answer /healthz (port ${PORT:-unknown}); its log ($log):" >&2
    tail -n 50 "$log" >&2
    exit 2
  fi
  echo "run.sh: broker up on 127.0.0.1:$PORT (pid $BROKER_PID, log $log)"
}
