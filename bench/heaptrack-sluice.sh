#!/usr/bin/env bash
# Runs `sluice` under heaptrack's allocation tracker (Debian: apt-get install -y heaptrack)
# with the server keeping this script's PID, so `sluice-bench` measures and stops the server
# itself. Pass it as the bench's server binary (docs/benchmarks.md, "Memory per subscriber"):
#   SLUICE_REAL_BIN=target/release/sluice HEAPTRACK_OUT=/tmp/sluice.heaptrack.gz \
#     target/release/sluice-bench --sluice-bin bench/heaptrack-sluice.sh --no-floor --steps 50,100
# then group what was live at the peak by call stack:
#   heaptrack_print -f /tmp/sluice.heaptrack.gz --flamegraph-cost-type peak -F /tmp/stacks.txt
#   bench/heap-by-contributor.py /tmp/stacks.txt 100
set -euo pipefail
: "${SLUICE_REAL_BIN:?the sluice binary to run}"
out="${HEAPTRACK_OUT:-/tmp/sluice.heaptrack.$$.gz}"
libexec=/usr/lib/heaptrack/libexec
preload=/usr/lib/heaptrack/libheaptrack_preload.so
[ -x "$libexec/heaptrack_interpret" ] && [ -f "$preload" ] || {
  echo "heaptrack is not installed (apt-get install -y heaptrack)" >&2
  exit 1
}
pipe=$(mktemp -u /tmp/sluice-heaptrack-fifo.XXXXXX)
mkfifo "$pipe"
# The interpreter reads the preload's trace until the server exits; the pipe's name goes
# once both ends are open.
"$libexec/heaptrack_interpret" <"$pipe" | gzip -c >"$out" &
(sleep 5 && rm -f "$pipe") &
exec env LD_PRELOAD="$preload" DUMP_HEAPTRACK_OUTPUT="$pipe" "$SLUICE_REAL_BIN" "$@"
