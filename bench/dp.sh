#!/usr/bin/env bash
# Data-parallel step time vs ranks on one machine (examples/mpi over Open MPI), SmolLM2
# default model, full fine-tuning, AdamW: the same global batch of 2 micro-batches of
# TOKENS tokens as 1 rank x accumulation 2 (BENCH_THREADS threads) and as 2 ranks x
# accumulation 1 (BENCH_THREADS / 2 threads each, so both use the same cores).
#   bench/dp.sh PREFIX     PREFIX: a batchcore install (make install PREFIX=...)
# Prints each run's step lines and the mean time of the steps after the first (warm-up).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
prefix=${1:?usage: bench/dp.sh PREFIX}
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig" LD_LIBRARY_PATH="$prefix/lib"
threads=${BENCH_THREADS:-2}
tokens=${TOKENS:-256}
steps=${STEPS:-4}
out=${BENCH_OUT:-$prefix/dp}
mkdir -p "$out"
make -s -C "$repo/examples/mpi" OUT="$out"
model=$("$repo/tools/fetch-model.sh")
mpi=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
run() {   # NAME NP ACCUM THREADS
    "${mpi[@]}" -np "$2" "$out/train_mpi" "$model" "$repo/bench/data/pp_train.txt" --tokens "$tokens" --accum "$3" \
        --threads "$4" --steps "$steps" --lr 1e-5 > "$out/$1.txt"
    cat "$out/$1.txt"
    awk -v name="$1" '/^step / && $2 > 1 {t += $8; r += $11; n++}
        END {printf "RESULT %s step_ms=%.0f allreduce_ms=%.0f steps=%d\n", name, t / n, r / n, n}' "$out/$1.txt"
}
run ranks1 1 2 "$threads"
run ranks2 2 1 $(( threads / 2 > 0 ? threads / 2 : 1 ))
