#!/usr/bin/env bash
# Long-prompt prefill vs llama.cpp (issue 16): one prompt of each length prefilled in chunks
# of 512 on the SAME F32 GGUF with the same thread count, four rows per length, run one
# after the other in this order: batchcore F32 KV, llama.cpp F32 KV (flash attention off),
# batchcore F16 KV, llama.cpp defaults (F16 KV + flash attention). Prints a markdown table.
#   bench/prefill.sh [MODEL.gguf]
# Environment:
#   PREFILL_THREADS  threads of both sides (default 2)
#   PREFILL_LENGTHS  prompt lengths (default "2048 4096 8190")
#   PREFILL_PYTHON   python with llama-cpp-python (default /work/venv-llama/bin/python if present, else python3)
#   BENCH_PREFIX     an existing batchcore install to use (default: make install into a fresh temp dir)
#   BENCH_OUT        where the raw log goes (default: $BENCH_PREFIX/results)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
model=${1:-/work/models-k/SmolLM2-135M-Instruct.F32.gguf}
threads=${PREFILL_THREADS:-2}
lengths=${PREFILL_LENGTHS:-"2048 4096 8190"}
python=${PREFILL_PYTHON:-python3}
[ -n "${PREFILL_PYTHON:-}" ] || { [ -x /work/venv-llama/bin/python ] && python=/work/venv-llama/bin/python; }
[ -f "$model" ] || { echo "prefill.sh: no model file '$model' (an F32 GGUF, e.g. tools/reference/gguf_float.py's)" >&2; exit 2; }

prefix=${BENCH_PREFIX:-}
if [ -z "$prefix" ]; then
    prefix=$(mktemp -d /tmp/batchcore-prefill.XXXXXX)
    make -C "$repo" install PREFIX="$prefix" >&2
fi
out=${BENCH_OUT:-$prefix/results}
mkdir -p "$out"
log=$out/prefill.log
: > "$log"
bin=$out/prefill_bench
PKG_CONFIG_PATH=$prefix/lib/pkgconfig cc -std=c99 -O2 -I"$here" "$here/prefill_bench.c" \
    $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs batchcore) -lm -o "$bin"

echo "[prefill.sh] $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg), threads $threads, model $model" | tee -a "$log" >&2
for n in $lengths; do
    LD_LIBRARY_PATH=$prefix/lib "$bin" "$model" --threads "$threads" --kv f32 --length "$n" | tee -a "$log"
    "$python" "$here/prefill_llama.py" "$model" --threads "$threads" --kv f32 --length "$n" | tee -a "$log"
    LD_LIBRARY_PATH=$prefix/lib "$bin" "$model" --threads "$threads" --kv f16 --length "$n" | tee -a "$log"
    "$python" "$here/prefill_llama.py" "$model" --threads "$threads" --kv f16 --length "$n" | tee -a "$log"
    echo "[prefill.sh] n=$n done, load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$log" >&2
done

python3 - "$log" <<'EOF'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT"):
        f = dict(kv.split("=", 1) for kv in line.split()[1:])
        rows.setdefault(int(f["n"]), {})[f["impl"]] = (float(f["seconds"]), float(f["tok_s"]))
impls = ["batchcore-f32kv", "llama.cpp-f32kv", "batchcore-f16kv", "llama.cpp-defaults"]
print("| prompt tokens | " + " | ".join(f"{i} s (tok/s)" for i in impls)
      + " | bc F32 KV ÷ llama F32 KV | bc F32 KV ÷ llama defaults | bc F16 KV ÷ llama defaults |")
print("|---:|" + "---:|" * (len(impls) + 3))
for n in sorted(rows):
    r = rows[n]
    cell = lambda i: f"{r[i][0]:.2f} ({r[i][1]:.1f})" if i in r else "–"
    ratio = lambda a, b: f"{r[a][1] / r[b][1]:.2f}×" if a in r and b in r else "–"
    print(f"| {n} | " + " | ".join(cell(i) for i in impls) + f" | {ratio(impls[0], impls[1])} | "
          f"{ratio(impls[0], impls[3])} | {ratio(impls[2], impls[3])} |")
EOF
