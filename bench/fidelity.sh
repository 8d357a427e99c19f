#!/usr/bin/env bash
# Fidelity against llama.cpp on the same quantized GGUF files (issue #15): for each weight type
# whose file exists, batchcore (native weights, F32 KV) and llama.cpp (llama-cpp-python, F32 KV)
# run the same token ids: perplexity of bench/pd_text.txt, greedy 64-token continuations of ten
# prompts, argmax at every position and the last row's logits of six prompts (the prompts of
# Tests/fixtures/llama/quant/prompts.json). One markdown table row per type.
#   bench/fidelity.sh
# Environment: BATCHCORE_MODELS_DIR (default ~/.cache/batchcore/models: SmolLM2-135M-Instruct.<TYPE>.gguf,
# made by tools/reference/llama_quant_fixtures.py; Q4_1 falls back to tools/fetch-model.sh),
# BENCH_TYPES (default "Q4_1 Q8_0 Q4_0 Q4_K Q5_K Q6_K F16 BF16"), BENCH_PREFIX, BENCH_THREADS (2),
# BENCH_PYTHON (a python with llama_cpp and numpy; default python3), BENCH_LLAMA_FROM (a previous
# results directory: reuse its <TYPE>/llama.txt and <TYPE>/llama/ instead of running llama.cpp again,
# e.g. to compare two batchcore builds against one llama.cpp run; llama.cpp is deterministic on
# these files). Types name files, so BENCH_TYPES="Q4_K_M Q5_K_M" with
# BATCHCORE_MODELS_DIR=/work/models-k reads SmolLM2-135M-Instruct.Q4_K_M.gguf etc.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-fidelity.XXXXXX)}
out=$prefix/fidelity
mkdir -p "$out"
threads=${BENCH_THREADS:-2}
py=${BENCH_PYTHON:-python3}
models=${BATCHCORE_MODELS_DIR:-$HOME/.cache/batchcore/models}
types=${BENCH_TYPES:-Q4_1 Q8_0 Q4_0 Q4_K Q5_K Q6_K F16 BF16}
log() { echo "[fidelity.sh] $*" >&2; }

if [ ! -f "$prefix/lib/pkgconfig/batchcore.pc" ]; then
    log "building batchcore into $prefix"
    make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1 || { tail -20 "$out/build.log" >&2; exit 1; }
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# shellcheck disable=SC2046
cc -std=c99 -O2 -Wall -Wextra -Werror $(pkg-config --cflags batchcore) -o "$prefix/fidelity_bench" \
    "$here/fidelity_bench.c" $(pkg-config --libs batchcore) -lm
"$py" "$here/fidelity_llama.py" --ids "$repo/Tests/fixtures/llama/quant/prompts.json" "$out/ids.txt"
{
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), nproc=$(nproc), threads=$threads, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# batchcore $(pkg-config --modversion batchcore) ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))"
} >"$out/header.txt"
ran=""
for t in $types; do
    m="$models/SmolLM2-135M-Instruct.$t.gguf"
    [ "$t" = Q4_1 ] && [ ! -f "$m" ] && m=$("$repo/tools/fetch-model.sh")
    if [ ! -f "$m" ]; then log "$t: $m missing, skipped"; continue; fi
    mkdir -p "$out/$t/batchcore" "$out/$t/llama"
    log "$t: batchcore"
    LD_LIBRARY_PATH="$prefix/lib" "$prefix/fidelity_bench" "$m" "$out/ids.txt" "$out/$t/batchcore" --threads "$threads" \
        >"$out/$t/batchcore.txt" || log "$t: fidelity_bench exit $? (see $out/$t/batchcore.txt)"
    if [ -n "${BENCH_LLAMA_FROM:-}" ] && [ -s "$BENCH_LLAMA_FROM/$t/llama.txt" ]; then
        log "$t: llama.cpp from $BENCH_LLAMA_FROM"
        cp "$BENCH_LLAMA_FROM/$t/llama.txt" "$out/$t/llama.txt"
        cp "$BENCH_LLAMA_FROM/$t/llama/"*.f32 "$out/$t/llama/"
    else
        log "$t: llama.cpp"
        "$py" "$here/fidelity_llama.py" "$m" "$out/ids.txt" "$out/$t/llama" --threads "$threads" >"$out/$t/llama.txt"
    fi
    ran="$ran $t"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/header.txt"
cat "$out/header.txt"
# shellcheck disable=SC2086
"$py" "$here/fidelity_table.py" "$out" $ran | tee "$out/fidelity_table.md"
log "results: $out"
