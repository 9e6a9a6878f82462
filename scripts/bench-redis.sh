#!/usr/bin/env bash
# What Redis pays per publish, on one Redis and spread over shards (docs/protocol.md
# section 11). Starts its own redis-server(s), runs `switchboard-bench many-channels`
# (C channels, a publisher each) against a broker pointed at them, and reads each
# server's INFO before and after:
#   script_us_per_publish  time inside the publish script per message (commandstats:
#                          EVALSHA/EVAL usec over the PUBLISH calls the scripts made)
#   cpu_us_per_publish     the redis-server process's CPU (user+sys) per message,
#                          network I/O and everything else included
#   publishes_per_call     broadcasts one script call carried (the writer's batches)
#   share                  each shard's part of all Redis CPU (even: 1/N each)
# One line of JSON per Redis, then a summary line with the spread (max deviation of a
# shard's CPU from the mean, in %).
#
#   scripts/bench-redis.sh [shards (default 1)] [channels (default 2000)] [rate per channel (default 20)]
#   scripts/bench-redis.sh cluster [channels] [rate]   (a 3-master Redis Cluster instead)
# Environment: DURATION (s, default 10), BROKER (the broker binary to measure),
# HISTORY=1 (keep the demo rule's history of 100: the script then also appends history).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${1:-1}
CLUSTER=
if [ "$SHARDS" = cluster ]; then CLUSTER=1; SHARDS=3; fi
CHANNELS=${2:-2000}
RATE=${3:-20}
DURATION=${DURATION:-10}
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
[ -x target/release/switchboard-bench ] || cargo build --release --bins

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

ports=()
for i in $(seq 1 "$SHARDS"); do
  # A free port whose cluster bus port (+10000) is free too.
  port=$(python3 -c '
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p + 10000 < 65536:
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError: pass')
  cluster_args=()
  [ -n "$CLUSTER" ] && cluster_args=(--cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf")
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    "${cluster_args[@]}" >"$dir/redis-$port.log" 2>&1 &
  pids+=($!)
  ports+=("$port")
done
for port in "${ports[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
done

urls=$(printf '"redis://127.0.0.1:%s",' "${ports[@]}")
if [ -n "$CLUSTER" ]; then
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 \
    --cluster-yes >/dev/null
  for port in "${ports[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "$port" cluster info | grep -q cluster_state:ok && break; sleep 0.05
    done
  done
  export SWITCHBOARD__CLUSTER__REDIS_CLUSTER="[${urls%,}]"
else
  export SWITCHBOARD__CLUSTER__REDIS_SHARDS="[${urls%,}]"
fi

# commandstats and process CPU of one server, as "script_usec publish_calls cpu_usec script_calls".
sample() {
  redis-cli -p "$1" info all | tr -d '\r' | awk -F'[:=,]' '
    /^cmdstat_evalsha:|^cmdstat_eval:/ { for (i = 2; i <= NF; i++) { if ($i == "usec") script += $(i+1); if ($i == "calls") calls += $(i+1) } }
    /^cmdstat_publish:|^cmdstat_spublish:/ { for (i = 2; i <= NF; i++) if ($i == "calls") publishes += $(i+1) }
    /^used_cpu_sys:|^used_cpu_user:/ { cpu += $2 * 1000000 }
    END { printf "%d %d %d %d\n", script, publishes, cpu, calls }'
}

declare -A before
for port in "${ports[@]}"; do before[$port]=$(sample "$port"); done
target/release/switchboard-bench many-channels ${BROKER:+--broker "$BROKER"} ${HISTORY:+--keep-history} --channels "$CHANNELS" --subscribers-per-channel 1 \
  --rate "$RATE" --duration "$DURATION" --extra-cycles 0 | grep '"target":"switchboard"' || true

total_cpu=0
declare -A cpu_of
lines=()
for port in "${ports[@]}"; do
  read -r s0 p0 c0 k0 <<<"${before[$port]}"
  read -r s1 p1 c1 k1 <<<"$(sample "$port")"
  script=$((s1 - s0)); publishes=$((p1 - p0)); cpu=$((c1 - c0)); calls=$((k1 - k0))
  cpu_of[$port]=$cpu
  total_cpu=$((total_cpu + cpu))
  lines+=("$port $script $publishes $cpu $calls")
done
all_publishes=0
max_dev=0
for line in "${lines[@]}"; do
  read -r port script publishes cpu calls <<<"$line"
  all_publishes=$((all_publishes + publishes))
  python3 - "$port" "$script" "$publishes" "$cpu" "$total_cpu" "$SHARDS" "$calls" <<'EOF'
import json, sys
port, script, publishes, cpu, total, shards, calls = map(int, sys.argv[1:])
print(json.dumps({
    "redis": port, "publishes": publishes,
    "script_us_per_publish": round(script / publishes, 2) if publishes else None,
    "cpu_us_per_publish": round(cpu / publishes, 2) if publishes else None,
    "publishes_per_call": round(publishes / calls, 2) if calls else None,
    "share": round(cpu / total, 3) if total else None,
}))
EOF
done
python3 - "$total_cpu" "$SHARDS" "$all_publishes" "${cpu_of[@]}" <<'EOF'
import json, sys
total, shards, publishes, *cpus = map(int, sys.argv[1:])
mean = total / shards if shards else 0
spread = max(abs(c - mean) / mean * 100 for c in cpus) if mean else 0
print(json.dumps({"shards": shards, "publishes": publishes,
                  "redis_cpu_us_per_publish": round(total / publishes, 2) if publishes else None,
                  "max_deviation_from_mean_pct": round(spread, 1)}))
EOF
