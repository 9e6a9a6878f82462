#!/usr/bin/env bash
# Prove that vendor/actix-http differs from the crates.io release only by the
# Switchboard patch (vendor/README.md): downloads the release .crate and diffs.
#
#   scripts/check-vendor.sh        exit 0: only the expected lines differ
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/vendor/actix-http/Cargo.toml" | head -n 1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

curl -sSfL "https://static.crates.io/crates/actix-http/actix-http-$version.crate" | tar -xz -C "$tmp"
diff -r "$tmp/actix-http-$version" "$root/vendor/actix-http" >"$tmp/diff" || true

# The patch: the two buffer constants of the HTTP/1 dispatcher, and nothing else.
expected='diff -r ORIG/src/h1/dispatcher.rs VENDOR/src/h1/dispatcher.rs
39,40c39,41
< const LW_BUFFER_SIZE: usize = 1024;
< const HW_BUFFER_SIZE: usize = 1024 * 8;
---
> // Switchboard patch (vendor/README.md): 256 and 1 KiB instead of 1 KiB and 8 KiB.
> const LW_BUFFER_SIZE: usize = 256;
> const HW_BUFFER_SIZE: usize = 1024;'
actual=$(sed -e "s|$tmp/actix-http-$version|ORIG|g" -e "s|$root/vendor/actix-http|VENDOR|g" "$tmp/diff")
if [ "$actual" = "$expected" ]; then
  echo "check-vendor: vendor/actix-http = actix-http $version + the buffer-size patch, nothing else"
else
  echo "check-vendor: vendor/actix-http differs from actix-http $version beyond the patch:" >&2
  echo "$actual" >&2
  exit 1
fi
