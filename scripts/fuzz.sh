#!/usr/bin/env bash
# Builds and runs the coverage-guided fuzz targets (fuzz/) on stable Rust: libFuzzer from the
# libfuzzer-sys crate, LLVM SanitizerCoverage switched on with rustc's stable `-C passes` and
# `-C llvm-args` flags (docs/fuzzing.md, docs/adr/0031-fuzzing-on-stable.md). No nightly, no
# cargo-fuzz: the only tools needed are cargo and a C++ compiler for libFuzzer's sources.
# Usage:
#   scripts/fuzz.sh build                   build every target (release, debug assertions on)
#   scripts/fuzz.sh smoke [SECONDS]         replay each committed corpus, then fuzz each target
#                                           for SECONDS (default 3) from it; fails on a crash
#   scripts/fuzz.sh run TARGET [ARGS...]    fuzz TARGET with libFuzzer ARGS (e.g.
#                                           -max_total_time=600), its working corpus in
#                                           target/fuzz-corpus/TARGET seeded from fuzz/corpus
#   scripts/fuzz.sh list                    the target names
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

TARGETS=(signaling rtmp media_config codec rtp_rewrite shard rtsp)
HOST="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
BIN_DIR="$CARGO_TARGET_DIR/$HOST/release"
# The flags cargo-fuzz passes for `--sanitizer none`, all stable: coverage counters, the PC
# table and comparison tracing for libFuzzer, and `cfg(fuzzing)` for code that wants it.
# `--target` keeps them off build scripts and proc macros, which are not linked with libFuzzer.
SANCOV="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

build() {
  RUSTFLAGS="$SANCOV" cargo build --manifest-path fuzz/Cargo.toml --locked --release \
    --target "$HOST" --bins
}

# Copies the committed seeds of $1 into its working corpus.
working_corpus() {
  local dir="$CARGO_TARGET_DIR/fuzz-corpus/$1"
  mkdir -p "$dir"
  cp -n fuzz/corpus/"$1"/* "$dir"/ 2>/dev/null || true
  printf '%s' "$dir"
}

case "${1:-}" in
  build) build ;;
  list) printf '%s\n' "${TARGETS[@]}" ;;
  smoke)
    seconds="${2:-3}"
    build
    log="$CARGO_TARGET_DIR/fuzz-smoke.log"
    for t in "${TARGETS[@]}"; do
      # Every committed seed and reproducer (fuzz/artifacts/TARGET) first, then fuzzing.
      inputs=(fuzz/corpus/"$t")
      [ -d fuzz/artifacts/"$t" ] && inputs+=(fuzz/artifacts/"$t")
      "$BIN_DIR/$t" -runs=0 "${inputs[@]}" >"$log" 2>&1 ||
        { cat "$log" >&2; echo "fuzz target $t failed on a committed input" >&2; exit 1; }
      dir="$(working_corpus "$t")"
      "$BIN_DIR/$t" -max_total_time="$seconds" -rss_limit_mb=1024 -print_final_stats=1 \
        -artifact_prefix="$CARGO_TARGET_DIR/fuzz-artifacts-" "$dir" >"$log" 2>&1 ||
        { tail -n 40 "$log" >&2; echo "fuzz target $t failed (input in $CARGO_TARGET_DIR)" >&2; exit 1; }
      printf '%-13s %s\n' "$t" "$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
    done
    ;;
  run)
    t="${2:?target name}"
    shift 2
    [ -x "$BIN_DIR/$t" ] || build
    dir="$(working_corpus "$t")"
    mkdir -p "$CARGO_TARGET_DIR/fuzz-artifacts/$t"
    exec "$BIN_DIR/$t" -rss_limit_mb=1024 -print_final_stats=1 \
      -artifact_prefix="$CARGO_TARGET_DIR/fuzz-artifacts/$t/" "$@" "$dir" fuzz/corpus/"$t"
    ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
