#!/usr/bin/env bash
# learn.sh — does full fine-tuning learn? Builds batchcore, compiles bench/train_learn.c
# against the installed header, fine-tunes the default model (SmolLM2-135M-Instruct) on
# Pride and Prejudice ch. 1-12 (bench/data) and writes the held-out (ch. 13-14) and the
# forget (Darwin) perplexity curve as a markdown table.
#
#   bench/learn.sh                 # the settings below
#   LEARN_STEPS=3 bench/learn.sh   # a quick end-to-end check
#
# Environment:
#   BENCH_PREFIX         install prefix for batchcore (default: a fresh temp dir; an existing
#                        prefix with lib/pkgconfig/batchcore.pc is reused without rebuilding
#                        when LEARN_REUSE=1)
#   BENCH_OUT            where results go (default: $BENCH_PREFIX/results)
#   BATCHCORE_MODEL      the GGUF model (default: tools/fetch-model.sh, the default model)
#   LEARN_STEPS (60)   LEARN_TOKENS (256: micro-batch tokens = document length)
#   LEARN_ACCUM (1)    LEARN_LR (1e-4)   LEARN_EVAL_EVERY (15)   LEARN_THREADS (0 = all cores)
#   LEARN_TRAIN / LEARN_HELDOUT / LEARN_FORGET   the three text files (bench/data/...)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
log() { echo "[learn] $*" >&2; }

prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-learn.XXXXXX)}
out=${BENCH_OUT:-$prefix/results}
mkdir -p "$prefix" "$out"

if [ "${LEARN_REUSE:-0}" = 1 ] && [ -f "$prefix/lib/pkgconfig/batchcore.pc" ]; then
    log "reusing the batchcore installed in $prefix"
else
    log "building batchcore into $prefix"
    ok=0
    for attempt in 1 2 3; do
        if make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1; then ok=1; break; fi
        log "build attempt $attempt failed (see $out/build.log); retrying in 30 s"
        tail -5 "$out/build.log" >&2 || true
        sleep 30
    done
    [ "$ok" = 1 ] || { log "build failed"; cat "$out/build.log" >&2; exit 1; }
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

bin="$prefix/train_learn"
log "compiling train_learn.c against the installed header (pkg-config batchcore)"
# shellcheck disable=SC2046
cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
    "$here/train_learn.c" $(pkg-config --libs batchcore) -lm -o "$bin"

model=${BATCHCORE_MODEL:-$("$repo/tools/fetch-model.sh")}
train=${LEARN_TRAIN:-$here/data/pp_train.txt}
heldout=${LEARN_HELDOUT:-$here/data/pp_heldout.txt}
forget=${LEARN_FORGET:-$here/data/darwin_forget.txt}
steps=${LEARN_STEPS:-60} tokens=${LEARN_TOKENS:-256} accum=${LEARN_ACCUM:-1}
lr=${LEARN_LR:-1e-4} every=${LEARN_EVAL_EVERY:-15} threads=${LEARN_THREADS:-0}

res="$out/learn_results.txt" md="$out/learn_results.md"
args=("$model" "$train" "$heldout" "$forget" --steps "$steps" --micro-batch-tokens "$tokens"
      --accumulation "$accum" --lr "$lr" --eval-every "$every" --threads "$threads")
log "running: train_learn ${args[*]}"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
"$bin" "${args[@]}" >"$res" 2> >(tee "$out/learn_log.txt" >&2)
t1=$(date +%s)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

{
    echo "## Learning curve: full fine-tuning of $(basename "$model")"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: nproc=$(nproc)," \
         "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
         "RAM $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "- load average (1/5/15 min) before: $load_before; after: $load_after; wall time $((t1 - t0)) s"
    echo "- train: $(basename "$train"), held-out: $(basename "$heldout"), forget: $(basename "$forget")"
    echo "- settings: steps=$steps, micro-batch tokens=$tokens (= document length), accumulation=$accum," \
         "AdamW lr=$lr (warmup 10 %, cosine to lr/10), weight decay 0.01, clip 1.0, seed 1, threads=$threads"
    echo "- $(grep '^# ' "$out/learn_log.txt" | grep -m1 'parameters;' | sed 's/^# //')"
    echo
    sed -n '/^TABLE$/,$p' "$res" | sed '1d' | grep -v '^RESULT'
    echo
    grep '^RESULT' "$res" || true
} >"$md"
cat "$md"
log "results: $md (raw: $res, log: $out/learn_log.txt)"
