#!/usr/bin/env bash
# noise.sh — the gradient noise scale and the noise-driven batch-size controller on the
# default model (SmolLM2-135M-Instruct): `batchcore finetune --batch-control noise` on the
# first NOISE_BYTES of Pride and Prejudice ch. 1-12 (bench/data/pp_train.txt), one epoch,
# and a markdown table of the estimate and the chosen batch over the steps (from the
# run's JSON lines). No plot: the table is the result (matplotlib is not needed).
#
#   bench/noise.sh                        # the settings below (~10 min at 8 tok/s: 2 cores under load 12)
#   NOISE_BYTES=8000 bench/noise.sh       # a quick end-to-end check
#
# Environment:
#   BENCH_PREFIX   install prefix for batchcore (default: a fresh temp dir; reused without
#                  rebuilding when NOISE_REUSE=1 and it holds bin/batchcore)
#   BENCH_OUT      where results go (default: $BENCH_PREFIX/results)
#   BATCHCORE_MODEL  the GGUF model (default: tools/fetch-model.sh)
#   NOISE_BYTES (20000, ~4.7K tokens)  NOISE_TOKENS (128: micro-batch tokens = document length)
#   NOISE_MIN (2)  NOISE_MAX (8)  NOISE_LR (1e-4)  NOISE_EMA (0.9)  NOISE_WARMUP (3)
#   NOISE_THREADS (0 = all cores)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
log() { echo "[noise] $*" >&2; }

prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-noise.XXXXXX)}
out=${BENCH_OUT:-$prefix/results}
mkdir -p "$prefix" "$out"
if [ "${NOISE_REUSE:-0}" = 1 ] && [ -x "$prefix/bin/batchcore" ]; then
    log "reusing the batchcore installed in $prefix"
else
    log "building batchcore into $prefix"
    make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1 || { log "build failed"; tail -20 "$out/build.log" >&2; exit 1; }
fi

model=${BATCHCORE_MODEL:-$("$repo/tools/fetch-model.sh")}
bytes=${NOISE_BYTES:-20000} tokens=${NOISE_TOKENS:-128}
min=${NOISE_MIN:-2} max=${NOISE_MAX:-8} lr=${NOISE_LR:-1e-4} ema=${NOISE_EMA:-0.9} warmup=${NOISE_WARMUP:-3}
threads=${NOISE_THREADS:-0}
head -c "$bytes" "$here/data/pp_train.txt" > "$out/noise_train.txt"

args=(finetune -m "$model" --data "$out/noise_train.txt" --out "$out/run" --micro-batch-tokens "$tokens"
      --max-tokens "$tokens" --accumulation "$min" --batch-control noise --min-micro-batches "$min"
      --max-micro-batches "$max" --noise-ema "$ema" --noise-warmup "$warmup" --lr "$lr" --seed 1 -t "$threads")
log "running: batchcore ${args[*]}"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
"$prefix/bin/batchcore" "${args[@]}" >"$out/noise.jsonl" 2>"$out/noise_log.txt"
t1=$(date +%s)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

md="$out/noise_results.md"
{
    echo "## Gradient noise scale and noise-driven batch: full fine-tuning of $(basename "$model")"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: nproc=$(nproc)," \
         "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "- load average (1/5/15 min) before: $load_before; after: $load_after; wall time $((t1 - t0)) s"
    echo "- data: first $bytes bytes of pp_train.txt, documents of $tokens tokens, 1 epoch; AdamW lr=$lr" \
         "(x sqrt(kappa)), clip 1.0, seed 1; controller: noise, $min..$max micro-batches of $tokens tokens," \
         "EMA decay $ema, warmup $warmup estimates"
    echo "- B = target tokens. B_small = the first micro-batch's targets, B_big = the step's;" \
         "|G|^2 and tr(Sigma) are the step's raw unbiased estimates, B_simple the ratio of their EMAs."
    echo
    echo "| step | micro-batches | B_big | B_small | loss | lr | raw abs(G)^2 | raw tr(Sigma) | B_simple (EMA) | next micro-batches |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    grep '^{"step":[0-9]*,"steps"' "$out/noise.jsonl" | awk '
        function v(k,   m) { if (match($0, "\"" k "\":[^,}]*")) return substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); return "" }
        function f(x, fmt) { return x == "null" || x == "" ? "-" : sprintf(fmt, x) }
        { printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", v("step"), v("micro_batches"), v("targets"),
              v("small_targets"), f(v("loss"), "%.4f"), f(v("lr"), "%.3g"), f(v("grad_sq"), "%.4g"), f(v("trace"), "%.4g"),
              f(v("noise_scale"), "%.0f"), v("next_micro_batches") }'
    echo
    grep '^{"summary"' "$out/noise.jsonl" | sed 's/^/summary: /' || true
} >"$md"
cat "$md"
log "results: $md (raw: $out/noise.jsonl, log: $out/noise_log.txt)"
