#!/usr/bin/env bash
# batchcore benchmarks.
#   bench/run.sh [optim] [model] [kv] [engine] [offline] [train] [lora] [prefix] [--quick]
# With no bench name, every bench runs (optim, model, kv, engine, offline, train, lora, prefix). --quick uses small sizes.
# Environment:
#   BENCH_PREFIX     install prefix for batchcore (default: a fresh temp dir)
#   BENCH_OUT        where raw logs and the table go (default: $BENCH_PREFIX/results)
#   BENCH_IDLE_WAIT  max seconds to wait for the machine to go idle first (default 120; 0 = don't)
#   BENCH_THREADS    threads of both sides (kv, engine, train: 2; model: nproc)
#   BENCH_ROUNDS     rounds of the alternating benches (optim 2; train 2, --quick 1)
#   BENCH_TRAIN_STEPS, BENCH_TRAIN_WARMUP  timed / warm-up steps per train process (5, 1; --quick 2, 1)
#   BENCH_COMPUTE     train/lora arithmetic classes ("f32 bf16"): bf16 = batchcore --compute bf16
#                     vs PyTorch autocast bf16
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
benches=()
quick=()
for arg in "$@"; do
    case "$arg" in
        --quick) quick=(--quick) ;;
        optim|model|kv|engine|offline|train|lora|prefix) benches+=("$arg") ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$arg' (benches: optim, model, kv, engine, offline, train, lora, prefix; flags: --quick)" >&2; exit 2 ;;
    esac
done
[ ${#benches[@]} -gt 0 ] || benches=(optim model kv engine offline train lora prefix)

prefix=${BENCH_PREFIX:-$(mktemp -d /tmp/batchcore-bench.XXXXXX)}
out=${BENCH_OUT:-$prefix/results}
mkdir -p "$prefix" "$out"
log() { echo "[run.sh] $*" >&2; }

# --- Python + torch (the CPU wheel only; pip is configured with --find-links /opt/wheels) ---
need_torch() {
    local want_torch="2.13.0+cpu"
    if ! python3 -c "import torch, sys; sys.exit(torch.__version__ != '$want_torch')" 2>/dev/null; then
        log "installing torch==$want_torch"
        python3 -m pip install -q "torch==$want_torch"
    fi
}

# --- transformers + gguf on top of torch (the versions tools/reference/train_fixtures.py pins) ---
need_transformers() {
    need_torch
    local missing=() spec mod
    for spec in transformers==5.24.0 safetensors==0.8.0 gguf==0.19.0 numpy; do
        mod=${spec%%==*}
        python3 -c "import $mod" 2>/dev/null || missing+=("$spec")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        python3 -m pip install -q "${missing[@]}"
    fi
}

# --- llama.cpp through llama-cpp-python (builds llama.cpp from source: ~10 minutes once) ---
need_llama() {
    if ! python3 -c "import llama_cpp, gguf, numpy" 2>/dev/null; then
        log "installing llama-cpp-python==0.3.36 and gguf (compiles llama.cpp; ~10 min the first time)"
        CMAKE_ARGS="-DGGML_NATIVE=ON" python3 -m pip install -q "llama-cpp-python==0.3.36" "gguf==0.19.0" numpy
    fi
}

# --- batchcore: build and install to the prefix (retry: SwiftPM may be busy/locked) ---
log "building batchcore into $prefix"
ok=0
for attempt in 1 2 3; do
    if make -C "$repo" install PREFIX="$prefix" >"$out/build.log" 2>&1; then ok=1; break; fi
    log "build attempt $attempt failed (see $out/build.log); retrying in 30 s"
    tail -5 "$out/build.log" >&2 || true
    sleep 30
done
[ "$ok" = 1 ] || { log "build failed"; cat "$out/build.log" >&2; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

machine_info() {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: nproc=$(nproc), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
         "L3: $(lscpu 2>/dev/null | sed -n 's/^L3 cache:[[:space:]]*//p'), RAM: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "torch: $(python3 -c 'import torch; print(torch.__version__)'), batchcore: $(pkg-config --modversion batchcore)"
}

# Waits (bounded) until the 1-minute load average is below 0.5, so other jobs on
# this small machine do not distort the numbers; warns if it never gets there.
wait_idle() {
    local max=${BENCH_IDLE_WAIT:-120} waited=0 load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v l="$load" 'BEGIN { exit !(l < 0.5) }'; then return 0; fi
        if [ "$waited" -ge "$max" ]; then
            log "WARNING: load average is $load (other processes running): results may be noisy"
            return 0
        fi
        [ "$waited" -eq 0 ] && log "waiting up to ${max}s for load average ($load) to drop below 0.5"
        sleep 5
        waited=$((waited + 5))
    done
}

run_optim() {
    need_torch
    local bin="$prefix/optim_bench" res="$out/optim_results.txt"
    log "compiling optim_bench.c against the installed header (pkg-config batchcore)"
    # shellcheck disable=SC2046
    cc -std=c99 -O3 -march=native -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
        -o "$bin" "$here/optim_bench.c" $(pkg-config --libs batchcore) -lpthread -lm
    wait_idle
    {
        machine_info | sed 's/^/# /'
        echo "# load before: $(cat /proc/loadavg)"
    } >"$res"
    # The machine's memory bandwidth drifts over minutes (a shared host), so the two sides
    # alternate per (size, threads) and the whole sequence runs BENCH_ROUNDS times (default 2);
    # the table keeps each row's best round and the best bandwidth bound.
    local rounds=${BENCH_ROUNDS:-2} sizes="10M 30M 100M" s t r
    [ ${#quick[@]} -gt 0 ] && sizes="1M 10M"
    # Which side goes first alternates between rounds, and the STREAM run (which frees
    # 1.5 GiB on exit) comes last in a round: the process right after it ran measurably slow.
    for r in $(seq 1 "$rounds"); do
        log "round $r/$rounds: batchcore and torch alternating per size and thread count, then the STREAM bound"
        for s in $sizes; do
            for t in 1 2; do
                if [ $((r % 2)) -eq 1 ]; then
                    "$bin" "${quick[@]}" --sizes "$s" --threads "$t" --no-stream | tee -a "$res"
                    python3 "$here/optim_torch.py" --sizes "$s" --threads "$t" | tee -a "$res"
                else
                    python3 "$here/optim_torch.py" --sizes "$s" --threads "$t" | tee -a "$res"
                    "$bin" "${quick[@]}" --sizes "$s" --threads "$t" --no-stream | tee -a "$res"
                fi
            done
        done
        "$bin" --stream-only "${quick[@]}" | tee -a "$res"
    done
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    python3 - "$res" >"$out/optim_table.md" <<'EOF'
import re, sys
rows, bound, header = [], {}, []
for line in open(sys.argv[1]):
    if line.startswith("# date") or line.startswith("# machine") or line.startswith("# torch:") or line.startswith("# load"):
        header.append(line[2:].strip())
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if line.startswith("BOUND "):
        t = int(kv["threads"])
        bound[t] = max(bound.get(t, 0.0), float(kv["gbps"]))
    elif line.startswith("RESULT "):
        rows.append(kv)
# Best round per row (impl, algo, size, threads, check).
best = {}
for r in rows:
    key = (r["impl"], r["algo"], r["n"], r["threads"], r.get("check", "0"))
    if key not in best or float(r["params_per_s"]) > float(best[key]["params_per_s"]):
        best[key] = r
rounds = max(1, sum(1 for r in rows if r["impl"] == "batchcore") // max(1, len({k for k in best if k[0] == "batchcore"})))
rows = list(best.values())
def human(n):
    n = int(n)
    return f"{n / 1e6:g}M" if n >= 1e6 else f"{n / 1e3:g}K"
base = {(r["n"], r["algo"], r["threads"]): float(r["params_per_s"])
        for r in rows if r["impl"] == "batchcore" and r["check"] == "0"}
order = {"batchcore": 0, "torch-fused": 1, "torch-foreach": 2, "torch-forloop": 3}
rows.sort(key=lambda r: (int(r["n"]), r["algo"], int(r["threads"]), order.get(r["impl"], 9), r["check"]))
for h in header:
    print(f"- {h}")
print(f"- rounds: {rounds} (batchcore and torch alternating per size and thread count; best round per row)")
print("- bandwidth bound (best STREAM-like kernel and round, same thread count): "
      + ", ".join(f"{t} thread{'s' if t > 1 else ''} = {g:.1f} GB/s" for t, g in sorted(bound.items())))
print()
print("| size | algo | threads | impl | params/s | GB/s | % of bw | vs batchcore |")
print("|---:|---|---:|---|---:|---:|---:|---:|")
for r in rows:
    impl = r["impl"] + (" (check_finite=1)" if r["impl"] == "batchcore" and r["check"] == "1" else "")
    t = int(r["threads"]); pps = float(r["params_per_s"]); gbps = float(r["gbps"])
    pct = f"{100 * gbps / bound[t]:.0f}%" if t in bound else "n/a"
    b = base.get((r["n"], r["algo"], r["threads"]))
    ratio = f"{pps / b:.2f}x" if b else "n/a"
    print(f"| {human(r['n'])} | {r['algo']} | {t} | {impl} | {pps / 1e6:,.0f}M | {gbps:.1f} | {pct} | {ratio} |")
print()
print("GB/s = params/s x bytes per param (AdamW 28: read p,g,m,v + write p,m,v; SGD-momentum 16: read p,g,buf + write p,buf); "
      "'vs batchcore' = params/s / batchcore(check_finite=0) params/s, > 1 means faster than batchcore.")
EOF
    echo
    cat "$out/optim_table.md"
    log "raw results: $res; table: $out/optim_table.md"
}

run_model() {
    need_llama
    if ! pkg-config --exists openblas 2>/dev/null; then
        log "installing libopenblas-dev (model_bench measures the sgemm peak with it)"
        SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
        # A fresh machine has no package lists yet: install fails until apt-get update ran.
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev >/dev/null 2>&1 ||
            { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev >/dev/null; }
    fi
    local bin="$prefix/model_bench" res="$out/model_results.txt" model threads=${BENCH_THREADS:-$(nproc)}
    model=$("$repo/tools/fetch-model.sh")
    log "compiling model_bench.c against the installed header (pkg-config batchcore) and cblas"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -Wall -Wextra -Werror $(pkg-config --cflags batchcore openblas) \
        -o "$bin" "$here/model_bench.c" $(pkg-config --libs batchcore openblas) -lm
    local reps=3
    [ ${#quick[@]} -gt 0 ] && reps=1
    # llama.cpp first: its first run also writes the F32 GGUF it needs (~540 MB, once).
    python3 "$here/model_llama.py" "$model" --threads "$threads" --reps 1 --decode 4 >/dev/null
    wait_idle
    { machine_info | sed 's/^/# /'; echo "# load before: $(cat /proc/loadavg)"; } >"$res"
    log "running model_bench (batchcore) and model_llama.py (llama.cpp), $threads threads, $reps reps"
    "$bin" "$model" --threads "$threads" --reps "$reps" | tee -a "$res"
    python3 "$here/model_llama.py" "$model" --threads "$threads" --reps "$reps" | tee -a "$res"
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    python3 "$here/model_table.py" "$res" >"$out/model_table.md"
    echo
    cat "$out/model_table.md"
    log "raw results: $res; table: $out/model_table.md"
}

run_kv() {
    local bin="$prefix/kv_bench" res="$out/kv_results.txt" model threads=${BENCH_THREADS:-2}
    model=$("$repo/tools/fetch-model.sh")
    log "compiling kv_bench.c against the installed header (pkg-config batchcore)"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
        -o "$bin" "$here/kv_bench.c" $(pkg-config --libs batchcore) -lm
    wait_idle
    {
        echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "# machine: nproc=$(nproc), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
             "L3: $(lscpu 2>/dev/null | sed -n 's/^L3 cache:[[:space:]]*//p'), RAM: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
        echo "# batchcore: $(pkg-config --modversion batchcore), model: $(basename "$model")"
        echo "# load before: $(cat /proc/loadavg)"
    } >"$res"
    log "running kv_bench (capacity, prefix-cache TTFT, KV-config perplexity), $threads threads (~4-5 min)"
    "$bin" "$model" "$here/pd_text.txt" --threads "$threads" | tee -a "$res"
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    python3 "$here/kv_table.py" "$res" >"$out/kv_table.md"
    echo
    cat "$out/kv_table.md"
    log "raw results: $res; table: $out/kv_table.md"
}

run_engine() {
    need_llama
    local bin="$prefix/engine_bench" res="$out/engine_results.txt" wl="$out/engine_workload.jsonl" model
    local threads=${BENCH_THREADS:-2} requests=200
    [ ${#quick[@]} -gt 0 ] && requests=40
    model=$("$repo/tools/fetch-model.sh")
    log "compiling engine_bench.c against the installed header (pkg-config batchcore)"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
        -o "$bin" "$here/engine_bench.c" $(pkg-config --libs batchcore) -lm
    {
        echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "# machine: nproc=$(nproc), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
             "L3: $(lscpu 2>/dev/null | sed -n 's/^L3 cache:[[:space:]]*//p'), RAM: $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
        echo "# batchcore: $(pkg-config --modversion batchcore), model: $(basename "$model")"
    } >"$res"
    "$bin" "$model" --make-workload "$wl" --text "$here/pd_text.txt" --requests "$requests" --seed 1 | tee -a "$res"
    wait_idle
    echo "# load before: $(cat /proc/loadavg)" >>"$res"
    # Both batchcore modes get 4 GiB of F32 KV (64 sequences of ~500 tokens need ~1.5 GiB).
    log "running engine_bench (continuous, static) and engine_llama.py (sequential), $threads threads, $requests requests"
    "$bin" "$model" --workload "$wl" --mode continuous --threads "$threads" --kv-bytes 4294967296 | tee -a "$res"
    "$bin" "$model" --workload "$wl" --mode static --threads "$threads" --kv-bytes 4294967296 | tee -a "$res"
    python3 "$here/engine_llama.py" "$model" "$wl" --threads "$threads" | tee -a "$res"
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    python3 "$here/engine_table.py" "$res" >"$out/engine_table.md"
    echo
    cat "$out/engine_table.md"
    log "raw results: $res; table: $out/engine_table.md"
}

# Offline batch mode (issue 16): the same shuffled batch of requests sharing long prefixes,
# online vs bc_engine_params.offline, both modes in one process, alternating per round.
run_offline() {
    local bin="$prefix/offline_bench" res="$out/offline_results.txt" model threads=${BENCH_THREADS:-2}
    local requests=96 rounds=${BENCH_ROUNDS:-2} max_tokens=32
    if [ ${#quick[@]} -gt 0 ]; then requests=32; rounds=${BENCH_ROUNDS:-1}; max_tokens=16; fi
    model=$("$repo/tools/fetch-model.sh")
    log "compiling offline_bench.c against the installed header (pkg-config batchcore)"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
        -o "$bin" "$here/offline_bench.c" $(pkg-config --libs batchcore) -lm
    wait_idle
    {
        echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "# machine: nproc=$(nproc), CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
        echo "# batchcore: $(pkg-config --modversion batchcore), model: $(basename "$model")"
        echo "# load before: $(cat /proc/loadavg)"
    } >"$res"
    log "running offline_bench: $requests requests, online vs offline, $rounds rounds, $threads threads"
    "$bin" "$model" --text "$here/pd_text.txt" --requests "$requests" --groups 4 --max-tokens "$max_tokens" \
        --rounds "$rounds" --threads "$threads" | tee -a "$res"
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    log "raw results: $res"
}

# Full fine-tuning (forward + backward + AdamW) and forward-only tokens/s, batchcore
# (train_bench.c) vs PyTorch + transformers eager (train_torch.py), same weights, token
# ids and threads. Every configuration runs in its own process (peak RSS per
# configuration); per configuration the two sides run back to back, batchcore first in
# odd rounds and PyTorch first in even ones; each round starts and ends with the sgemm
# peak (torch.mm 2048x2048 float32, same threads).
run_train() {
    need_transformers
    local bin="$prefix/train_bench" res="$out/train_results.txt" model threads=${BENCH_THREADS:-2}
    local rounds=${BENCH_ROUNDS:-2} steps=${BENCH_TRAIN_STEPS:-5} warmup=${BENCH_TRAIN_WARMUP:-1}
    local shapes="4x256 8x512" r shape mode d l impl
    if [ ${#quick[@]} -gt 0 ]; then
        shapes="4x256"; rounds=${BENCH_ROUNDS:-1}; steps=${BENCH_TRAIN_STEPS:-2}
    fi
    model=$("$repo/tools/fetch-model.sh")
    log "compiling train_bench.c against the installed header (pkg-config batchcore)"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
        -o "$bin" "$here/train_bench.c" $(pkg-config --libs batchcore) -lm
    wait_idle
    {
        machine_info | sed 's/^/# /'
        echo "# model: $(basename "$model")"
        echo "# threads: $threads (bc_set_num_threads / torch.set_num_threads), rounds: $rounds, steps: $warmup warm-up + $steps timed per process"
        echo "# load before: $(cat /proc/loadavg)"
    } >"$res"
    # One side, one configuration, one process; its per-step lines go to a log.
    train_one() {  # impl mode docs len round lora-rank-or-empty compute
        local logf="$out/train_$1_$2_$3x$4_r$5${6:+_lora$6}_$7.log"
        local args=("$model" --mode "$2" --docs "$3" --len "$4" --steps "$steps" --warmup "$warmup" --threads "$threads"
                    --compute "$7")
        [ -z "${6:-}" ] || args+=(--lora "$6")
        log "round $5/$rounds: $1 $2 $3x$4 $7"
        if [ "$1" = batchcore ]; then
            "$bin" "${args[@]}" 2>"$logf" | tee -a "$res" || log "WARNING: train_bench failed (see $logf)"
        else
            python3 "$here/train_torch.py" "${args[@]}" 2>"$logf" | tee -a "$res" || log "WARNING: train_torch.py failed (see $logf)"
        fi
    }
    # BENCH_COMPUTE: the arithmetic classes to run, each side in its own: f32 (default
    # float32) and bf16 (batchcore --compute bf16 vs PyTorch autocast bf16).
    local computes=${BENCH_COMPUTE:-"f32 bf16"} c
    for r in $(seq 1 "$rounds"); do
        python3 "$here/train_torch.py" --peak --threads "$threads" | tee -a "$res"
        for shape in $shapes; do
            d=${shape%x*}; l=${shape#*x}
            for c in $computes; do
                if [ -n "${lora_rank:-}" ]; then
                    if [ $((r % 2)) -eq 1 ]; then
                        for impl in batchcore torch; do train_one "$impl" train "$d" "$l" "$r" "$lora_rank" "$c"; done
                    else
                        for impl in torch batchcore; do train_one "$impl" train "$d" "$l" "$r" "$lora_rank" "$c"; done
                    fi
                    continue
                fi
                for mode in train forward; do
                    if [ $((r % 2)) -eq 1 ]; then
                        for impl in batchcore torch; do train_one "$impl" "$mode" "$d" "$l" "$r" "" "$c"; done
                    else
                        for impl in torch batchcore; do train_one "$impl" "$mode" "$d" "$l" "$r" "" "$c"; done
                    fi
                done
            done
        done
        python3 "$here/train_torch.py" --peak --threads "$threads" | tee -a "$res"
    done
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    python3 "$here/train_table.py" "$res" >"$out/train_table.md"
    echo
    cat "$out/train_table.md"
    log "raw results: $res; per-step logs: $out/train_*.log; table: $out/train_table.md"
}

# LoRA training (forward + backward + AdamW over the adapters) tokens/s and peak RSS,
# batchcore (train_bench.c --lora 16) vs PyTorch + transformers + PEFT (train_torch.py
# --lora 16: LoraConfig r=16, alpha 32, q,k,v,o,gate,up,down): run_train's procedure
# (same weights, ids, threads; alternating order per round), results in lora_*.
run_lora() {
    need_transformers
    python3 -c "import peft" 2>/dev/null || { log "installing peft==0.21.2"; python3 -m pip install -q "peft==0.21.2"; }
    mkdir -p "$out/lora"
    out="$out/lora" lora_rank=16 run_train
}

# Shared-prefix attention on vs off (bc_engine_params.shared_prefix_attention), one process,
# interleaved: 64 and 256 requests sharing a 1,024-token prefix, 64 output tokens each.
run_prefix() {
    need_llama
    local bin="$prefix/shared_prefix_bench" res="$out/prefix_results.txt" model threads=${BENCH_THREADS:-2}
    model=$("$repo/tools/fetch-model.sh")
    log "compiling shared_prefix_bench.c against the installed header (pkg-config batchcore)"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags batchcore) \
        -o "$bin" "$here/shared_prefix_bench.c" $(pkg-config --libs batchcore) -lm
    local sizes=(64 256) tokens=64 samples=32
    [ ${#quick[@]} -gt 0 ] && { sizes=(16); tokens=16; samples=8; }
    wait_idle
    { machine_info | sed 's/^/# /'; echo "# load before: $(cat /proc/loadavg)"; } >"$res"
    # Rows (a) shared-prefix attention + offline mode vs (b) today's default, one process,
    # interleaved; (c) llama.cpp one request at a time on the largest size's exported prompts.
    for n in "${sizes[@]}"; do
        log "running shared_prefix_bench: $n requests, $threads threads"
        "$bin" "$model" --requests "$n" --prefix 1024 --max-tokens "$tokens" --threads "$threads" --offline 1 \
            --text "$here/pd_text.txt" --export "$out/prefix_requests.json" | tee -a "$res"
    done
    log "running shared_prefix_llama.py: llama.cpp one request at a time, ${sizes[-1]} requests"
    python3 "$here/shared_prefix_llama.py" "$model" "$out/prefix_requests.json" --threads "$threads" | tee -a "$res"
    log "running shared_prefix_bench: n = 8 samples of $samples prompts"
    "$bin" "$model" --requests "$samples" --n 8 --prefix 1024 --max-tokens "$tokens" --threads "$threads" --offline 1 \
        --text "$here/pd_text.txt" | tee -a "$res"
    echo "# load after: $(cat /proc/loadavg)" >>"$res"
    log "raw results: $res"
}

for b in "${benches[@]}"; do
    "run_$b"
done
