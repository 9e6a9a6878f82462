#!/usr/bin/env bash
# A randomized fault run with a checker (docs/protocol.md section 9): N brokers on one
# Redis (or shards, or a Redis Cluster), clients over several channels with presence,
# faults from a seeded schedule (SIGKILL / SIGTERM / SIGSTOP of a broker, SIGKILL of
# Redis or of a cluster master, a slot migrated), then a check of every client's log:
# nothing accepted lost, duplicated or reordered, presence converged.
#
#   scripts/chaos.sh                       the CI run: fixed seeds, 60 s each (one with SDK
#                                          clients, one on two shards, one on a Redis Cluster)
#   scripts/chaos.sh --minutes 60          one long run with a fresh seed
#   scripts/chaos.sh --seed 42 --seconds 300   replay a seed (same schedule)
#
# Any other flags go to switchboard-chaos (--nodes, --clients, --channels, --faults,
# --shards, --redis-cluster, --sdk-clients, --send-every-ms).
# Needs redis-server on PATH. Exit code 0 when every run passed.
set -uo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin switchboard || exit 2
# The checker's own tests first: a run is only as good as the checker.
cargo test --release -p switchboard-chaos --quiet || exit 2
cargo build --release -p switchboard-chaos || exit 2
BIN=target/release/switchboard-chaos

args=()
minutes=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -n "$minutes" ]; then
  exec "$BIN" --seconds "$((minutes * 60))" "${args[@]}"
fi
if [ "${#args[@]}" -gt 0 ]; then
  exec "$BIN" "${args[@]}"
fi

status=0
"$BIN" --seed 1 --seconds 60 || status=1
# Four of the clients are the real @xano/js-sdk (tests/sdk's npm packages).
"$BIN" --seed 7 --seconds 60 --sdk-clients 4 || status=1
# The same on two Redis shards (the redis fault kills one of them).
"$BIN" --seed 3 --seconds 60 --shards 2 || status=1
# On a 3-master Redis Cluster: masters SIGKILLed and restarted, a channel's slot migrated.
"$BIN" --seed 5 --seconds 60 --redis-cluster --faults kill,term,pause,redis,migrate,stall || status=1
exit "$status"
