#!/usr/bin/env bash
# Soak: an hour (by default) of mixed traffic with churn against a locally started
# broker, checking that nothing grows. Not run in CI.
#
#   scripts/soak.sh             one node, everything in memory
#   scripts/soak.sh --cluster   two nodes and a redis-server (must be on PATH)
#
# Load (scripts/soak-load.mjs, node + the `ws` package from tests/sdk/node_modules):
# steady publishers (each with a subscriber, on the other node in a cluster) that
# must lose nothing; every SOAK_WAVE_S seconds a wave of SOAK_WAVE_CLIENTS clients
# that connect, join rooms shared by every wave and channels of their own wave, chat,
# leave and join, and go (a normal close, a dropped TCP connection, or a stop in
# reading first); backend events over HTTP every second (one to a room, one to
# `soak/*`).
#
# Every SOAK_SAMPLE_S seconds (60) it samples each broker: RSS (/proc/<pid>/status),
# open descriptors (/proc/<pid>/fd), live channel actors and open sockets (/metrics:
# switchboard_channels_live, switchboard_connections). It also samples each time a
# wave has left ("quiet" points: only the steady clients are connected; the next wave
# waits until the sample is taken). At the end it prints start against end and fails
# (exit 1) when, on any node:
#   - RSS at the last quiet point exceeds the "start" quiet point by more than
#     SOAK_RSS_TOL_PCT (20) %. Start is the first quiet point after SOAK_WARMUP_S
#     (120 s): by then the allocator has seen a few waves and the retained history of
#     past waves' channels has reached its steady state (history_ttl_s = 60 here, swept
#     every 60 s). Growth before that is warm-up, not a leak; it is printed too;
#   - descriptors at the last quiet point exceed the start by more than
#     SOAK_FD_TOL_PCT (10) % (and 2);
#   - live channels or open sockets at the last quiet point differ from the baseline
#     (before the first wave: the steady channels and clients only);
#   - a steady subscriber missed, repeated or reordered a message its publisher got
#     back (accepted), or a broker died.
#
# Environment: SOAK_SECONDS (3600), SOAK_SAMPLE_S (60), SOAK_WARMUP_S (120), SOAK_WAVE_S (30),
# SOAK_WAVE_CLIENTS (200), SOAK_STEADY (8 channels), SOAK_STEADY_MS (100),
# SOAK_RSS_TOL_PCT (20), SOAK_FD_TOL_PCT (10), SWITCHBOARD_BIN (target/release/switchboard,
# built when missing), SOAK_KEEP=1 keeps the work directory (configs, logs, samples).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER=0
for arg in "$@"; do
  case "$arg" in
    --cluster) CLUSTER=1 ;;
    -h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

SOAK_SECONDS="${SOAK_SECONDS:-3600}"
SOAK_SAMPLE_S="${SOAK_SAMPLE_S:-60}"
SOAK_WARMUP_S="${SOAK_WARMUP_S:-120}"
SOAK_WAVE_S="${SOAK_WAVE_S:-30}"
SOAK_WAVE_CLIENTS="${SOAK_WAVE_CLIENTS:-200}"
SOAK_STEADY="${SOAK_STEADY:-8}"
SOAK_STEADY_MS="${SOAK_STEADY_MS:-100}"
SOAK_RSS_TOL_PCT="${SOAK_RSS_TOL_PCT:-20}"
SOAK_FD_TOL_PCT="${SOAK_FD_TOL_PCT:-10}"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/release/switchboard}"
ADMIN_TOKEN="soak-admin-token"
API_KEY="soak-api-key-0123"

for tool in node curl awk; do
  command -v "$tool" >/dev/null || { echo "soak.sh: $tool is required" >&2; exit 2; }
done
if [ "$CLUSTER" = 1 ] && ! command -v redis-server >/dev/null; then
  echo "soak.sh: --cluster needs redis-server on PATH" >&2; exit 2
fi
if [ ! -d "$ROOT/tests/sdk/node_modules/ws" ]; then
  (cd "$ROOT/tests/sdk" && npm ci --no-audit --no-fund) || exit 2
fi
if [ ! -x "$BIN" ]; then
  (cd "$ROOT" && cargo build --release -p switchboard) || exit 2
fi

WORK="$(mktemp -d -t switchboard-soak.XXXXXX)"
STATUS="$WORK/status"
ACK="$WORK/ack"
SAMPLES="$WORK/samples.tsv"
: >"$STATUS"; : >"$ACK"
PIDS=()        # brokers and redis, to stop at the end
LOAD_PID=""

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

cleanup() {
  if [ -n "$LOAD_PID" ] && kill -0 "$LOAD_PID" 2>/dev/null; then
    kill -TERM "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" 2>/dev/null
  fi
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
  if [ "${SOAK_KEEP:-0}" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- brokers -----------------------------------------------------------------

REDIS_URL=""
if [ "$CLUSTER" = 1 ]; then
  RPORT="$(free_port)"
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 100); do
    redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1
  done
  REDIS_URL="redis://127.0.0.1:$RPORT"
fi

write_config() {
  cat <<EOF
[server]
# Port 0: the node's "listening" log line says which port it got (no race with
# another process for a port picked in advance).
listen = "127.0.0.1:0"
drain_s = 2
admin_token = "$ADMIN_TOKEN"

[limits]
max_channels_per_socket = 100
messages_per_minute = 0
frames_per_minute = 0
send_queue_bytes = 1048576
ping_interval_s = 25
pong_timeout_s = 60

[cluster]
redis_url = "$REDIS_URL"
presence_ttl_s = 10
# Every wave has channels of its own, and history outlives a channel by design
# (history_ttl_s, a day by default): expire it within the soak, or the retained
# history of past waves would read as growth.
history_ttl_s = 60

[[apps]]
name = "Soak"
hash = "soak"
api_key = "$API_KEY"

[apps.jwt]
algorithm = "HS256"
secret = "soak-secret-0123456789abcdef0123456789"

[[apps.channels]]
pattern = "soak/*"
public_messaging = { active = true }
private_messaging = { active = true }
settings = { anonymous_clients = true, presence = true, message_history = 25 }
EOF
}

NODES=1
[ "$CLUSTER" = 1 ] && NODES=2
PORTS=()
BROKERS=()
for n in $(seq 1 "$NODES"); do
  write_config >"$WORK/node$n.toml"
  # RUST_LOG: warnings, plus the one info line that names the bound address.
  env $(env | awk -F= '/^SWITCHBOARD__/{print "-u " $1}') RUST_LOG=warn,switchboard=info \
    "$BIN" --log-format json serve --config "$WORK/node$n.toml" >"$WORK/node$n.log" 2>&1 &
  pid=$!
  PIDS+=("$pid"); BROKERS+=("$pid")
  ok=0
  port=""
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    if [ -z "$port" ]; then
      port="$(sed -n 's/.*"message":"listening","addr":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' "$WORK/node$n.log" | head -n 1)"
    fi
    if [ -n "$port" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then ok=1; break; fi
    sleep 0.1
  done
  if [ "$ok" != 1 ]; then
    echo "soak.sh: node $n did not become ready; its log:" >&2; cat "$WORK/node$n.log" >&2; exit 1
  fi
  PORTS+=("$port")
done

# --- sampling ----------------------------------------------------------------

# sample <node index> -> "rss_kib fds channels sockets"
sample() {
  local i="$1" pid="${BROKERS[$1]}" port="${PORTS[$1]}" rss fds metrics channels sockets
  rss="$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null)"
  fds="$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"
  metrics="$(curl -s --max-time 5 "http://127.0.0.1:$port/metrics")"
  channels="$(awk '/^switchboard_channels_live /{print $2}' <<<"$metrics")"
  sockets="$(awk '/^switchboard_connections\{/{s+=$2} END{print s+0}' <<<"$metrics")"
  echo "${rss:-0} ${fds:-0} ${channels:-0} ${sockets:-0}"
}

record() { # $1 = label
  local t=$(( $(date +%s) - START ))
  for i in "${!BROKERS[@]}"; do
    if ! kill -0 "${BROKERS[$i]}" 2>/dev/null; then
      echo "soak.sh: node $((i+1)) died; its log:" >&2; tail -50 "$WORK/node$((i+1)).log" >&2
      DIED=1
      continue
    fi
    read -r rss fds ch so <<<"$(sample "$i")"
    printf '%s\t%s\tnode%s\t%s\t%s\t%s\t%s\n' "$t" "$1" "$((i+1))" "$rss" "$fds" "$ch" "$so" >>"$SAMPLES"
    printf '%6ss  %-9s node%s  rss %7s KiB  fds %5s  channels %5s  sockets %5s\n' \
      "$t" "$1" "$((i+1))" "$rss" "$fds" "$ch" "$so"
  done
}

# --- run ---------------------------------------------------------------------

URLS=""; HTTP=""
for port in "${PORTS[@]}"; do
  URLS="${URLS:+$URLS,}ws://127.0.0.1:$port/rt/soak"
  HTTP="${HTTP:+$HTTP,}http://127.0.0.1:$port"
done

echo "soak: $NODES node(s)$([ "$CLUSTER" = 1 ] && echo " + redis"), ${SOAK_SECONDS}s, a wave of $SOAK_WAVE_CLIENTS clients every ${SOAK_WAVE_S}s, $SOAK_STEADY steady channels, samples every ${SOAK_SAMPLE_S}s"
START=$(date +%s)
DIED=0
SOAK_URLS="$URLS" SOAK_HTTP="$HTTP" SOAK_APP=soak SOAK_API_KEY="$API_KEY" \
  SOAK_SECONDS="$SOAK_SECONDS" SOAK_WAVE_S="$SOAK_WAVE_S" SOAK_WAVE_CLIENTS="$SOAK_WAVE_CLIENTS" \
  SOAK_STEADY="$SOAK_STEADY" SOAK_STEADY_MS="$SOAK_STEADY_MS" SOAK_STATUS="$STATUS" SOAK_ACK="$ACK" \
  node "$ROOT/scripts/soak-load.mjs" >"$WORK/load.out" 2>"$WORK/load.err" &
LOAD_PID=$!

seen_lines=0
next_sample=$(( START + SOAK_SAMPLE_S ))
finished=0
while [ "$finished" = 0 ]; do
  if ! kill -0 "$LOAD_PID" 2>/dev/null; then
    echo "soak.sh: the load generator stopped early:" >&2; cat "$WORK/load.err" >&2; exit 1
  fi
  # Status lines from the load generator: baseline, quiet <n>, done.
  total="$(wc -l <"$STATUS")"
  while [ "$seen_lines" -lt "$total" ]; do
    seen_lines=$((seen_lines + 1))
    line="$(sed -n "${seen_lines}p" "$STATUS")"
    case "$line" in
      baseline*) record baseline ;;
      quiet*) record "quiet$(awk '{print $2}' <<<"$line")" ;;
      done*) finished=1 ;;
    esac
    echo "$line" >>"$ACK" # the generator waits for this before it goes on
  done
  if [ "$(date +%s)" -ge "$next_sample" ]; then
    record minute
    next_sample=$(( next_sample + SOAK_SAMPLE_S ))
  fi
  [ "$DIED" = 1 ] && exit 1
  sleep 0.2
done

# Stop the load (the steady clients close; the generator prints its statistics).
kill -TERM "$LOAD_PID"
wait "$LOAD_PID"; LOAD_RC=$?
LOAD_PID=""
LOAD_STATS="$(tail -1 "$WORK/load.out")"

# --- verdict -------------------------------------------------------------------

echo
echo "load: $LOAD_STATS"
FAIL=0
[ "$LOAD_RC" = 0 ] || { echo "FAIL: a steady subscriber missed, repeated or reordered an accepted message (load exit $LOAD_RC)"; FAIL=1; }
for i in "${!BROKERS[@]}"; do
  node="node$((i+1))"
  base="$(awk -v n="$node" '$3==n && $2=="baseline"' "$SAMPLES" | head -1)"
  quiets="$(awk -v n="$node" '$3==n && $2 ~ /^quiet/' "$SAMPLES")"
  first_quiet="$(head -1 <<<"$quiets")"
  last="$(tail -1 <<<"$quiets")"
  # Start: the first quiet point after the warm-up (the last one if none is that late).
  first="$(awk -v w="$SOAK_WARMUP_S" '$1>=w' <<<"$quiets" | head -1)"
  [ -n "$first" ] || first="$last"
  if [ -z "$base" ] || [ -z "$first" ]; then echo "FAIL: $node: no baseline or quiet sample"; FAIL=1; continue; fi
  read -r _ _ _ b_rss b_fds b_ch b_so <<<"$base"
  read -r t0 l0 _ q_rss q_fds _ _ <<<"$first_quiet"
  read -r t1 l1 _ s_rss s_fds s_ch s_so <<<"$first"
  read -r t2 l2 _ e_rss e_fds e_ch e_so <<<"$last"
  max_rss="$(awk -v n="$node" '$3==n{if($4>m)m=$4} END{print m}' "$SAMPLES")"
  echo "$node: baseline rss $b_rss KiB, fds $b_fds, channels $b_ch, sockets $b_so"
  echo "$node: warm-up  ($l0 at ${t0}s) rss $q_rss KiB, fds $q_fds"
  echo "$node: start ($l1 at ${t1}s) rss $s_rss KiB, fds $s_fds, channels $s_ch, sockets $s_so"
  echo "$node: end   ($l2 at ${t2}s) rss $e_rss KiB, fds $e_fds, channels $e_ch, sockets $e_so (max rss seen $max_rss KiB)"
  awk -v s="$s_rss" -v e="$e_rss" -v tol="$SOAK_RSS_TOL_PCT" 'BEGIN{exit !(e > s*(1+tol/100))}' \
    && { echo "FAIL: $node: RSS grew from $s_rss to $e_rss KiB (> ${SOAK_RSS_TOL_PCT} %)"; FAIL=1; }
  awk -v s="$s_fds" -v e="$e_fds" -v tol="$SOAK_FD_TOL_PCT" 'BEGIN{exit !(e > s*(1+tol/100) && e > s+2)}' \
    && { echo "FAIL: $node: descriptors grew from $s_fds to $e_fds (> ${SOAK_FD_TOL_PCT} %)"; FAIL=1; }
  [ "$e_ch" = "$b_ch" ] || { echo "FAIL: $node: $e_ch live channels after the last wave, $b_ch before the first"; FAIL=1; }
  [ "$e_so" = "$b_so" ] || { echo "FAIL: $node: $e_so open sockets after the last wave, $b_so before the first"; FAIL=1; }
done
if [ "$FAIL" = 0 ]; then echo "soak: OK"; else echo "soak: FAILED"; fi
exit "$FAIL"
