#!/usr/bin/env bash
# The demo page and the admin view in headless Chromium, against a freshly
# started broker (the default config, a random admin token, no rate limit).
#
#   tests/browser/run.sh
#
# Needs Debian's chromium (installed here with apt-get when missing and run as
# root), Node 20+ and npm (`npm ci` here the first time, which this does).
# Env: SWITCHBOARD_BIN (default: <repo>/target/release/switchboard),
#      CHROMIUM_PATH (default /usr/bin/chromium), BROWSER_TEST_WAIT_MS (default 15000).
# Screenshots: tests/browser/artifacts/{demo,demo-sender,admin,admin-charts,admin-channel}.png
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${SWITCHBOARD_BIN:-$ROOT/target/release/switchboard}"
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
cd "$HERE"

if [ ! -x "$BIN" ]; then
  echo "run.sh: broker binary not found at $BIN (build it with: cargo build --release)" >&2
  exit 2
fi

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
      || { apt-get update && apt-get install -y --no-install-recommends chromium fonts-dejavu-core; } \
      || { echo "run.sh: could not install chromium" >&2; exit 2; }
  else
    echo "run.sh: $CHROMIUM not found; install it: sudo apt-get install chromium" >&2
    exit 2
  fi
fi

if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund || exit 2
fi

mkdir -p "$HERE/artifacts"
# A letter first, so the environment override is read as a string, never a TOML number.
TOKEN="adm-$(node -e 'console.log(require("crypto").randomBytes(16).toString("hex"))')"
LOG="$(mktemp -t switchboard-browser.XXXXXX.log)"

# shellcheck source=../broker.sh
source "$ROOT/tests/broker.sh"
SWITCHBOARD__SERVER__ADMIN_TOKEN="$TOKEN" \
SWITCHBOARD__SERVER__DRAIN_S=1 \
SWITCHBOARD__LIMITS__MESSAGES_PER_MINUTE=0 \
SWITCHBOARD__LIMITS__FRAMES_PER_MINUTE=0 \
  start_broker "$LOG" serve --config "$ROOT/config/default.toml"

SWITCHBOARD_URL="http://127.0.0.1:$PORT" SWITCHBOARD_ADMIN_TOKEN="$TOKEN" CHROMIUM_PATH="$CHROMIUM" \
  node --test "$HERE"/*.test.mjs
status=$?
if [ "$status" -ne 0 ]; then
  echo "run.sh: browser test failed (exit $status); broker log kept: $LOG" >&2
else
  echo "run.sh: screenshots in $HERE/artifacts/"
  rm -f "$LOG"
fi
exit "$status"
