#!/usr/bin/env bash
# Quantized weights: decode/prefill tok/s and memory of the default model (SmolLM2-135M
# Q4_1 GGUF) held natively (Q4_1/Q8_0 blocks, int8 activations) vs dequantized to
# float32 in batchcore, vs llama.cpp running the same Q4_1 file (llama-cpp-python).
#   bench/quant.sh [--quick] [MODEL.gguf ...]
# With model files (e.g. /work/models-k/SmolLM2-135M-Instruct.Q4_K_M.gguf) each is run
# native and f32 (and by llama.cpp), rows labelled by the file's type (the name's last
# dotted part); without, the default model.
# Environment: BENCH_PREFIX (install prefix; default a temp dir), BENCH_THREADS (2),
# BENCH_PYTHON (a python with llama_cpp; default python3, installed if missing),
# BENCH_NO_LLAMA=1 (skip llama.cpp). Prints a markdown table (bench/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
reps=3
if [ "${1:-}" = "--quick" ]; then reps=1; shift; fi
prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-quant.XXXXXX)}
out=$prefix/results
mkdir -p "$out"
threads=${BENCH_THREADS:-2}
py=${BENCH_PYTHON:-python3}
log() { echo "[quant.sh] $*" >&2; }

log "building batchcore into $prefix"
make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1 || { tail -20 "$out/build.log" >&2; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
if [ $# -gt 0 ]; then models=("$@"); else models=("$("$repo/tools/fetch-model.sh")"); fi
# shellcheck disable=SC2046
cc -std=c99 -O2 -Wall -Wextra -Werror $(pkg-config --cflags batchcore) -o "$prefix/quant_bench" \
    "$here/quant_bench.c" $(pkg-config --libs batchcore) -lm
res="$out/quant_results.txt"
{
    echo "# machine: nproc=$(nproc), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), threads=$threads, reps=$reps"
    echo "# batchcore: $(pkg-config --modversion batchcore), models: $(for m in "${models[@]}"; do basename "$m"; done | tr '\n' ' ')"
    echo "# load: $(uptime)"
} >"$res"
if [ "${BENCH_NO_LLAMA:-0}" != 1 ] && ! "$py" -c "import llama_cpp, numpy" 2>/dev/null; then
    log "installing llama-cpp-python==0.3.36 (compiles llama.cpp; ~10 min the first time)"
    "$py" -m pip install -q "llama-cpp-python==0.3.36" numpy
fi
for model in "${models[@]}"; do
    label=""
    [ $# -gt 0 ] && label=$(basename "$model" .gguf) && label=${label##*.}
    for w in native f32; do
        log "batchcore, $(basename "$model"), weights $w"
        LD_LIBRARY_PATH="$prefix/lib" "$prefix/quant_bench" "$model" --weights "$w" --threads "$threads" --reps "$reps" \
            ${label:+--label "$label"} | tee -a "$res"
    done
    if [ "${BENCH_NO_LLAMA:-0}" != 1 ]; then
        log "llama.cpp, the same file"
        "$py" "$here/quant_llama.py" "$model" --threads "$threads" --reps "$reps" \
            | sed "s/impl=/impl=${label:+$label:}/" | tee -a "$res"
    fi
done
# One row per implementation: decode tok/s after 128/512-token prompts, prefill tok/s, memory.
awk '
/^RESULT/ {
    impl = ""; kind = ""; n = ""; delete kv
    for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    impl = kv["impl"]; kind = kv["kind"]; n = kv["n"]
    if (!(impl in seen)) { seen[impl] = 1; order[++count] = impl }
    if (kind == "decode") dec[impl, n] = kv["tok_s"]
    if (kind == "prefill") pre[impl, n] = kv["tok_s"]
    if (kind == "memory") { wm[impl] = kv["weight_mib"]; lr[impl] = kv["load_rss_mib"]; pr[impl] = kv["peak_rss_mib"] }
}
END {
    print "| implementation | decode tok/s (128-tok prompt) | decode tok/s (512) | prefill tok/s (128) | prefill tok/s (512) | weights MiB | RSS after load MiB | peak RSS MiB |"
    print "|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= count; i++) {
        m = order[i]
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m, dec[m, 128], dec[m, 512], pre[m, 128], pre[m, 512], wm[m], lr[m], pr[m]
    }
}' "$res" | tee "$out/quant_table.md"
log "raw results: $res; table: $out/quant_table.md"
