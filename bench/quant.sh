#!/usr/bin/env bash
# Quantized weights: prefill/decode tok/s (batch 1) and peak RSS, batchcore vs llama.cpp on the
# SAME GGUF file, for every weight type present (default model Q4_1 + the files of
# BATCHCORE_MODELS_DIR, see tools/reference/llama_quant_fixtures.py), in ONE run:
#   batchcore native weights (F32 KV, and its own F16 KV), batchcore dequantized to f32 (Q4_1 only),
#   llama.cpp (llama-cpp-python) with F32 KV, and with its defaults (F16 KV, flash attention on).
# Interleaved: every round runs each (type, implementation) once as its own process (reps 1), the
# order rotating per round; the table shows the median over rounds and the ratio of batchcore
# native to the FASTER llama.cpp configuration.
#   bench/quant.sh [--quick]           (--quick: 1 round, Q4_1 only)
# Environment: BENCH_PREFIX (install prefix; default a temp dir), BENCH_THREADS (2), BENCH_ROUNDS (3),
# BENCH_TYPES ("Q4_1 Q8_0 Q4_0 Q4_K Q5_K Q6_K F16 BF16"), BATCHCORE_MODELS_DIR (~/.cache/batchcore/models),
# BENCH_PYTHON (a python with llama_cpp; default python3, installed if missing),
# BENCH_NO_LLAMA=1 (skip llama.cpp). Prints a markdown table (bench/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
rounds=${BENCH_ROUNDS:-3}
types=${BENCH_TYPES:-Q4_1 Q8_0 Q4_0 Q4_K Q5_K Q6_K F16 BF16}
if [ "${1:-}" = "--quick" ]; then rounds=1; types=Q4_1; fi
prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-quant.XXXXXX)}
out=$prefix/results
mkdir -p "$out"
threads=${BENCH_THREADS:-2}
py=${BENCH_PYTHON:-python3}
models=${BATCHCORE_MODELS_DIR:-$HOME/.cache/batchcore/models}
log() { echo "[quant.sh] $*" >&2; }

if [ ! -f "$prefix/lib/pkgconfig/batchcore.pc" ]; then
    log "building batchcore into $prefix"
    make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1 || { tail -20 "$out/build.log" >&2; exit 1; }
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
default_model=$("$repo/tools/fetch-model.sh")
# shellcheck disable=SC2046
cc -std=c99 -O2 -Wall -Wextra -Werror $(pkg-config --cflags batchcore) -o "$prefix/quant_bench" \
    "$here/quant_bench.c" $(pkg-config --libs batchcore) -lm
if [ "${BENCH_NO_LLAMA:-0}" != 1 ] && ! "$py" -c "import llama_cpp, numpy" 2>/dev/null; then
    log "installing llama-cpp-python==0.3.36 (compiles llama.cpp; ~10 min the first time)"
    "$py" -m pip install -q "llama-cpp-python==0.3.36" numpy
fi
res="$out/quant_results.txt"
{
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), machine: nproc=$(nproc), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), threads=$threads, rounds=$rounds"
    echo "# batchcore: $(pkg-config --modversion batchcore) ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))"
    echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$res"

# The (type, implementation) runs of one round, one per line: TYPE MODEL IMPL
plan=()
for t in $types; do
    m="$models/SmolLM2-135M-Instruct.$t.gguf"
    [ "$t" = Q4_1 ] && [ ! -f "$m" ] && m=$default_model
    [ -f "$m" ] || { log "$t: $m missing, skipped"; continue; }
    if ! LD_LIBRARY_PATH="$prefix/lib" "$prefix/quant_bench" "$m" --reps 0 >/dev/null 2>"$out/probe_$t.txt"; then
        log "$t: batchcore cannot load it ($(tail -1 "$out/probe_$t.txt")); llama.cpp only"
        echo "# $t: batchcore: $(tail -1 "$out/probe_$t.txt")" >>"$res"
    else
        plan+=("$t $m bc-native" "$t $m bc-native-f16kv")
        [ "$t" = Q4_1 ] && plan+=("$t $m bc-f32")
    fi
    if [ "${BENCH_NO_LLAMA:-0}" != 1 ]; then plan+=("$t $m llama-f32kv" "$t $m llama-defaults"); fi
done
n=${#plan[@]}
for ((r = 1; r <= rounds; r++)); do
    for ((i = 0; i < n; i++)); do
        read -r t m impl <<<"${plan[$(( (i + (r - 1) * 2) % n ))]}"
        log "round $r/$rounds: $t $impl"
        case $impl in
            bc-native) cmd=(env LD_LIBRARY_PATH="$prefix/lib" "$prefix/quant_bench" "$m" --weights native) ;;
            bc-native-f16kv) cmd=(env LD_LIBRARY_PATH="$prefix/lib" "$prefix/quant_bench" "$m" --weights native --kv f16) ;;
            bc-f32) cmd=(env LD_LIBRARY_PATH="$prefix/lib" "$prefix/quant_bench" "$m" --weights f32) ;;
            llama-f32kv) cmd=("$py" "$here/quant_llama.py" "$m" --kv f32) ;;
            llama-defaults) cmd=("$py" "$here/quant_llama.py" "$m" --kv f16) ;;
        esac
        "${cmd[@]}" --threads "$threads" --reps 1 | sed "s/^RESULT /RESULT type=$t round=$r /" >>"$res"
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$res"
grep '^#' "$res"
"$py" "$here/quant_table.py" "$res" | tee "$out/quant_table.md"
log "raw results: $res; table: $out/quant_table.md"
