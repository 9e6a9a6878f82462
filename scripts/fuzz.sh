#!/usr/bin/env bash
# Fuzz Switchboard's parsers and rule engine with cargo-fuzz (libFuzzer), each target for a
# bounded time. Not part of CI (CI replays the committed corpus: tests/fuzz_corpus.rs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Targets (fuzz/fuzz_targets/, their checks in fuzz/src/lib.rs):
#   frame_parser   protocol::parse_inbound + join_request on client text frames
#   config_loader  Config::from_toml_with_env (TOML + SWITCHBOARD__ overrides after a
#                  `#--env--` line); inputs naming channels_dir/xano_export are skipped
#   rule_matcher   RuleSet::find/covers_prefix and every permission check, differentially
#                  against a reference (text input: `pattern flags…` lines, `? name` lines)
#   xanoscript     xano::xs::parse_str, and write_xs → parse_str round trips
#
# Seeds are fuzz/corpus/<target>/ (committed, small). New inputs the fuzzer finds go to
# fuzz/corpus-new/<target>/ (not committed). FUZZ_MERGE=1 afterwards merges into the
# committed corpus only the new inputs that add coverage (libFuzzer -merge=1): review
# and keep it small. Findings land in fuzz/artifacts/<target>/; the script exits non-zero
# and prints how to replay them. A finding copied into fuzz/corpus/<target>/ becomes a CI
# regression test once fixed.
#
# Toolchains, as found on this project's machines (checked 2026-11 on the `rust` kind):
# - The machine's toolchain is stable (1.95). cargo-fuzz (installed below from crates.io,
#   ~40 s) works on stable with `--sanitizer none`: libfuzzer-sys builds libFuzzer with
#   the system C++ compiler, and the SanitizerCoverage instrumentation libFuzzer needs is
#   set through stable `-C` flags. Verified here: coverage counters load and grow, about
#   100k execs/s on frame_parser. This is the default.
# - What stable cannot do is `-Zsanitizer=address` (AddressSanitizer). The code these
#   targets reach is safe Rust (src/'s only `unsafe` is the socket code in
#   src/http/linger.rs, which no target calls), so ASan would add little: panics,
#   integer overflow (the build enables debug assertions and overflow checks), stack
#   overflow, timeouts (-timeout) and runaway memory (-rss_limit_mb) are all caught on
#   stable.
# - FUZZ_SANITIZER=address uses `cargo +nightly fuzz` with ASan (own target directory,
#   fuzz/target-asan). It needs a nightly toolchain already installed (`rustup toolchain
#   list`); this workplace cannot download one and a new machine has only stable, so
#   without one the script refuses rather than tries. Where a nightly happened to be
#   installed (1.97.0-nightly), this built in ~5 min and ran, about 20x slower than the
#   stable build.
#
# Environment: FUZZ_SECONDS (per target, if no argument), FUZZ_SANITIZER (none|address),
# FUZZ_MAX_LEN (bytes, default 8192), FUZZ_MERGE=1, FUZZ_JOBS (cargo build jobs, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(frame_parser config_loader rule_matcher xanoscript)
seconds="${FUZZ_SECONDS:-60}"
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then
  seconds="$1"
  shift
fi
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "unknown target $t (have: ${ALL_TARGETS[*]})" >&2; exit 2; }
done

sanitizer="${FUZZ_SANITIZER:-none}"
max_len="${FUZZ_MAX_LEN:-8192}"
jobs="${FUZZ_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz from crates.io"
  cargo install cargo-fuzz --locked --version '^0.13'
fi

toolchain=()
target_dir=fuzz/target
case "$sanitizer" in
  none) ;;
  address)
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
      echo "FUZZ_SANITIZER=address needs a nightly toolchain, and none is installed" >&2
      echo "(this machine cannot download one). Run without it: stable, no sanitizer." >&2
      exit 2
    fi
    toolchain=(+nightly)
    target_dir=fuzz/target-asan
    ;;
  *) echo "FUZZ_SANITIZER must be none or address" >&2; exit 2 ;;
esac
fuzz=(cargo "${toolchain[@]}" fuzz)
build_flags=(--sanitizer "$sanitizer" --release --debug-assertions --target-dir "$target_dir")

echo "== $(cargo "${toolchain[@]}" --version), $(cargo fuzz --version), sanitizer $sanitizer"
echo "== building ${targets[*]} (the first build takes several minutes)"
for t in "${targets[@]}"; do
  CARGO_BUILD_JOBS="$jobs" "${fuzz[@]}" build "${build_flags[@]}" "$t"
done

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus-new/$t" "fuzz/artifacts/$t"
  dict=()
  [[ -f "fuzz/dict/$t.dict" ]] && dict=("-dict=fuzz/dict/$t.dict")
  log="fuzz/artifacts/$t/last-run.log"
  echo "== $t: ${seconds}s (log: $log)"
  # The first corpus directory receives new inputs; the committed one is only read.
  if "${fuzz[@]}" run "${build_flags[@]}" "$t" "fuzz/corpus-new/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
      -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$log" | tr '\n' ' '
    echo "cov: $(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
  else
    echo "!! $t found a failure:"
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" | head -8 | sed 's/^/   /'
    failed+=("$t")
  fi
  if [[ "${FUZZ_MERGE:-0}" == 1 ]]; then
    before=$(ls "fuzz/corpus/$t" | wc -l)
    "${fuzz[@]}" run "${build_flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/corpus-new/$t" -- \
      -merge=1 -max_len="$max_len" >>"$log" 2>&1
    echo "   merged into fuzz/corpus/$t: $before -> $(ls "fuzz/corpus/$t" | wc -l) files"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo
  echo "FAILED: ${failed[*]}. Replay a finding with"
  echo "  cargo fuzz run ${build_flags[*]} TARGET fuzz/artifacts/TARGET/crash-…"
  echo "and minimise it with 'cargo fuzz tmin … TARGET fuzz/artifacts/TARGET/crash-…'."
  exit 1
fi
echo "== no failures in ${targets[*]} (${seconds}s each)"
