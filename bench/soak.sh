#!/usr/bin/env bash
# Soak test of `batchcore batch` (opt-in; NOT part of make test): many requests with
# random prompt lengths, budgets (max_tokens), stop strings, n > 1 samples and some
# malformed lines, under a KV budget small enough to force preemption. Run 0 goes to
# completion; runs 1..RUNS get SIGINT at a random moment (half of all runs use --stream,
# fed by a producer that writes in bursts). Each run checks:
#   - every non-blank input line has exactly one record (its "line"), and nothing else
#     (--stream stopped by SIGINT: every line read, i.e. up to the last one recorded);
#   - no sample ends with finish_reason "error" (preemption, never failure);
#   - exit status 0 (run 0) or 130 (SIGINT; 0 if it finished first);
#   - the run ends within BOUND s, and within STOP_BOUND s of its SIGINT;
#   - run 0: VmRSS (sampled from /proc/PID/status every 0.25 s) stays flat after
#     warm-up: the peak of the second half of the run is within 10% (+8 MB) of the peak
#     of the first half's second quarter.
#   bench/soak.sh [--requests N] [--runs R] [--kv-bytes B] [--threads T] [--seed S] [--bound S]
#   (--bound: seconds a run may take, default 900; raise it on a loaded machine)
# Environment: SOAK_PREFIX (an install prefix with bin/batchcore; default: make install
# into a temp dir), SOAK_OUT (logs; default a temp dir). Prints a markdown table.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
requests=2000 runs=10 kv=30000000 threads=0 seed=1 bound=900 stop_bound=15
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --kv-bytes) kv=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --bound) bound=$2; shift 2 ;;
        *) sed -n '2,17p' "$0"; exit 2 ;;
    esac
done
log() { echo "[soak] $*" >&2; }
out=${SOAK_OUT:-$(mktemp -d /tmp/batchcore-soak.XXXXXX)}
mkdir -p "$out"
prefix=${SOAK_PREFIX:-}
if [ -z "$prefix" ]; then
    prefix="$out/prefix"
    log "installing batchcore into $prefix"
    make -C "$repo" install PREFIX="$prefix" > "$out/build.log" 2>&1 || { tail -20 "$out/build.log" >&2; exit 1; }
fi
cli="$prefix/bin/batchcore"
model=$("$repo/tools/fetch-model.sh")

# workload SEED FILE: REQUESTS lines; ~1% malformed, ~1% blank.
workload() {
    python3 - "$1" "$requests" > "$2" <<'PY'
import json, random, sys
rng = random.Random(int(sys.argv[1]))
words = ("the sea ship wind storm harbor island light night star river stone city road "
         "king queen tree bird song fire water gold silver iron book letter door").split()
prefixes = ["You are a helpful assistant. ", "Translate to French: ", "Summarize: ", ""]
for i in range(int(sys.argv[2])):
    u = rng.random()
    if u < 0.01:
        print('{"prompt": "unterminated'); continue
    if u < 0.02:
        print(""); continue
    n_words = min(200, max(1, int(rng.lognormvariate(3.0, 1.0))))
    req = {"id": f"r{i}", "prompt": rng.choice(prefixes) + " ".join(rng.choice(words) for _ in range(n_words)),
           "max_tokens": rng.choice([1, 1, 2, 3, 4, 6, 8, 12, 16]), "temperature": rng.choice([0, 0.8]),
           "seed": rng.randrange(1 << 32)}
    if rng.random() < 0.2: req["stop"] = rng.choice([".", ",", "\n", ["the", "a"]])
    if rng.random() < 0.1: req["n"] = rng.choice([2, 3, 4])
    if rng.random() < 0.05: req["priority"] = rng.randrange(3)
    print(json.dumps(req))
PY
}

# check PREFIX_OK IN OUT: the records' invariants; prints "records error_records" or
# fails. PREFIX_OK=1 (--stream stopped by SIGINT): lines never read get no record, so
# the records must cover exactly the non-blank lines up to the last one recorded.
check() {
    python3 - "$2" "$3" "$1" <<'PY'
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
if lines and lines[-1] == "": lines.pop()
want = {i + 1 for i, l in enumerate(lines) if l.strip()}
seen, errs, sample_errors = {}, 0, 0
for l in open(sys.argv[2], encoding="utf-8"):
    r = json.loads(l)
    if r["line"] in seen: print("two records for line", r["line"]); sys.exit(1)
    seen[r["line"]] = r
    if "choices" not in r: errs += 1
    else: sample_errors += sum(c["finish_reason"] == "error" for c in r["choices"])
if sys.argv[3] == "1" and seen:
    want = {l for l in want if l <= max(seen)}
if set(seen) != want:
    print("missing lines", sorted(want - set(seen))[:10], "extra", sorted(set(seen) - want)[:10]); sys.exit(1)
if sample_errors: print(sample_errors, "samples finished with error"); sys.exit(1)
print(len(seen), errs)
PY
}

status=0
echo "| run | mode | SIGINT at (s) | exit | wall (s) | stop→exit (s) | records | error records | preemptions | RSS after warm-up (MB) | RSS peak (MB) | result |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for run in $(seq 0 "$runs"); do
    wl="$out/w$run.jsonl" res="$out/r$run.jsonl" err="$out/e$run.txt" rss="$out/rss$run.txt"
    workload $((seed * 1000 + run)) "$wl"
    mode=plain; [ $((run % 2)) -eq 1 ] && mode=stream
    sig_at=-
    [ "$run" -gt 0 ] && sig_at=$(python3 -c "import random; r = random.Random($seed * 7919 + $run); print(round(r.uniform(3, 40), 1))")
    : > "$rss"
    t0=$(date +%s.%N)
    if [ "$mode" = stream ]; then
        # A producer writing in bursts of 50 lines with short pauses.
        python3 -c "
import sys, time
lines = open('$wl', encoding='utf-8').read().splitlines(True)
for k in range(0, len(lines), 50):
    sys.stdout.write(''.join(lines[k:k + 50])); sys.stdout.flush(); time.sleep(0.05)
" | "$cli" batch --stream -m "$model" -t "$threads" --kv-bytes "$kv" --max-seqs 64 > "$res" 2> "$err" &
    else
        "$cli" batch -m "$model" -t "$threads" --kv-bytes "$kv" --max-seqs 64 < "$wl" > "$res" 2> "$err" &
    fi
    pid=$!
    signalled=0 t_sig=0
    while kill -0 "$pid" 2>/dev/null; do
        now=$(date +%s.%N)
        el=$(echo "$now - $t0" | bc)
        awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null | sed "s/^/$el /" >> "$rss"
        if [ "$sig_at" != - ] && [ $signalled -eq 0 ] && [ "$(echo "$el >= $sig_at" | bc)" = 1 ]; then
            kill -INT "$pid"; signalled=1; t_sig=$now
        fi
        if [ "$(echo "$el > $bound" | bc)" = 1 ]; then kill -KILL "$pid"; break; fi
        sleep 0.25
    done
    wait "$pid"; rc=$?
    t1=$(date +%s.%N)
    wall=$(printf '%.1f' "$(echo "$t1 - $t0" | bc)")
    stop_exit=-
    [ $signalled -eq 1 ] && stop_exit=$(printf '%.1f' "$(echo "$t1 - $t_sig" | bc)")
    verdict=ok
    prefix_ok=0; [ $signalled -eq 1 ] && [ "$mode" = stream ] && prefix_ok=1
    counts=$(check "$prefix_ok" "$wl" "$res") || { verdict="FAIL: $counts"; counts="- -"; }
    want_rc=0; [ $signalled -eq 1 ] && want_rc=130
    [ "$rc" -eq "$want_rc" ] || verdict="FAIL: exit $rc (want $want_rc)"
    [ "$(echo "$wall > $bound" | bc)" = 1 ] && verdict="FAIL: over $bound s"
    [ "$stop_exit" != - ] && [ "$(echo "$stop_exit > $stop_bound" | bc)" = 1 ] && verdict="FAIL: $stop_exit s from SIGINT to exit"
    pre=$(grep -oE '[0-9]+ preemptions' "$err" | tail -1 | cut -d' ' -f1)
    read -r warm peak flat < <(python3 - "$rss" <<'PY'
import sys
s = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
if len(s) < 8: print("- - 1"); sys.exit()
n = len(s)
warm = max(v for _, v in s[n // 4:n // 2]) / 1024
late = max(v for _, v in s[n // 2:]) / 1024
print(f"{warm:.0f} {late:.0f} {int(late <= warm * 1.10 + 8)}")
PY
)
    [ "$run" -eq 0 ] && [ "$flat" != 1 ] && verdict="FAIL: RSS grew from $warm to $peak MB after warm-up"
    [ "$verdict" = ok ] || status=1
    echo "| $run | $mode | $sig_at | $rc | $wall | $stop_exit | ${counts% *} | ${counts#* } | ${pre:--} | $warm | $peak | $verdict |"
done
log "logs in $out"
exit $status
