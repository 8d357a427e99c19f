#!/usr/bin/env bash
# delay.sh — gradient delay experiment (issue 14): SGD with momentum vs Adaptive Braking
# (bc_optimizer) when each gradient is computed on weights D = 0, 8, 32 steps old.
# Builds batchcore, compiles bench/delay.c against the installed header and writes the
# Markdown table (final loss per learning rate) and the loss curves of the best lr (CSV).
#
#   bench/delay.sh                  # 2000 steps, 2 seeds (~10 min on 2 busy cores)
#   DELAY_STEPS=300 DELAY_SEEDS=1 bench/delay.sh   # a quick check
#
# Environment: BENCH_PREFIX (install prefix; default a fresh temp dir; reused without
# rebuilding when DELAY_REUSE=1 and it holds an install), BENCH_OUT (default $BENCH_PREFIX/results).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
log() { echo "[delay] $*" >&2; }
prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-delay.XXXXXX)}
out=${BENCH_OUT:-$prefix/results}
mkdir -p "$prefix" "$out"
if [ "${DELAY_REUSE:-0}" = 1 ] && [ -f "$prefix/lib/pkgconfig/batchcore.pc" ]; then
    log "reusing the batchcore installed in $prefix"
else
    log "building batchcore into $prefix"
    make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1 || { tail -20 "$out/build.log" >&2; exit 1; }
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic -o "$out/delay" "$here/delay.c" \
    $(pkg-config --cflags --libs batchcore) -lm
LD_LIBRARY_PATH="$prefix/lib" "$out/delay" --steps "${DELAY_STEPS:-2000}" --seeds "${DELAY_SEEDS:-2}" \
    --csv "$out/delay-curves.csv" | tee "$out/delay.md"
log "table: $out/delay.md; curves of the best lr per cell: $out/delay-curves.csv"
