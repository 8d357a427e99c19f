#!/usr/bin/env bash
# Before/after benchmark of two batchcore revisions in ONE run: the model bench (prefill
# 128/512, decode at batch 1) and the engine bench (continuous batching of a
# ShareGPT-shaped workload), the two builds alternating round by round.
#   bench/ab.sh BASE_REV [--rounds R] [--requests N] [--threads T]
# BASE_REV is built in a temporary git worktree with the bench sources OF THAT REVISION
# (the C ABI may differ between the two); the working tree is the "new" side.
# Environment: AB_DIR (default /tmp/batchcore-ab) keeps the builds, so a re-run with the
# same BASE_REV skips rebuilding it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
base_rev=$1; shift
rounds=2 requests=24 threads=2
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "ab.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
dir=${AB_DIR:-/tmp/batchcore-ab}
log() { echo "[ab.sh] $*" >&2; }
pkg-config --exists openblas 2>/dev/null || { log "needs libopenblas-dev (bench/run.sh model installs it)"; exit 1; }
model=$("$repo/tools/fetch-model.sh")

# build SIDE SRC: installs SRC's library under $dir/SIDE/prefix and compiles its benches.
build() {
    local side=$1 src=$2 prefix="$dir/$1/prefix"
    log "building $side from $src"
    make -C "$src" install PREFIX="$prefix" >"$dir/$side/build.log" 2>&1 || { tail -20 "$dir/$side/build.log" >&2; exit 1; }
    local pc="$prefix/lib/pkgconfig"
    # shellcheck disable=SC2046
    cc -std=c99 -O2 $(PKG_CONFIG_PATH=$pc pkg-config --cflags batchcore openblas) -o "$dir/$side/model_bench" \
        "$src/bench/model_bench.c" $(PKG_CONFIG_PATH=$pc pkg-config --libs batchcore openblas) -lm
    # shellcheck disable=SC2046
    cc -std=c99 -O2 $(PKG_CONFIG_PATH=$pc pkg-config --cflags batchcore) -o "$dir/$side/engine_bench" \
        "$src/bench/engine_bench.c" $(PKG_CONFIG_PATH=$pc pkg-config --libs batchcore) -lm
}

mkdir -p "$dir/base" "$dir/new"
base_sha=$(git -C "$repo" rev-parse "$base_rev")
if [ "$(cat "$dir/base/sha" 2>/dev/null)" != "$base_sha" ] || [ ! -x "$dir/base/engine_bench" ]; then
    rm -rf "$dir/base/src"
    git -C "$repo" worktree add --detach "$dir/base/src" "$base_sha" >/dev/null
    build base "$dir/base/src"
    git -C "$repo" worktree remove --force "$dir/base/src"
    echo "$base_sha" >"$dir/base/sha"
fi
build new "$repo"

wl="$dir/workload.jsonl" res="$dir/results.txt"
"$dir/new/engine_bench" "$model" --make-workload "$wl" --text "$here/pd_text.txt" --requests "$requests" --seed 1 >&2
{
    echo "# date: $(date -u '+%Y-%m-%d %H:%M UTC'), base $base_sha, new $(git -C "$repo" rev-parse HEAD)$(git -C "$repo" diff --quiet || echo ' + uncommitted changes')"
    echo "# load before: $(cat /proc/loadavg)"
} >"$res"
for r in $(seq 1 "$rounds"); do
    # The side that goes first alternates between rounds.
    sides="base new"; [ $((r % 2)) -eq 0 ] && sides="new base"
    for side in $sides; do
        log "round $r/$rounds: $side"
        "$dir/$side/model_bench" "$model" --threads "$threads" --reps 3 | grep '^RESULT impl=batchcore' | sed "s/^RESULT /RESULT side=$side round=$r /" | tee -a "$res"
        "$dir/$side/engine_bench" "$model" --workload "$wl" --mode continuous --threads "$threads" --kv-bytes 4294967296 \
            | grep '^RESULT' | sed "s/^RESULT /RESULT side=$side round=$r /" | tee -a "$res"
    done
done
echo "# load after: $(cat /proc/loadavg)" >>"$res"
python3 - "$res" <<'EOF'
import re, sys
rows = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(sys.argv[1]) if l.startswith("RESULT ")]
for l in open(sys.argv[1]):
    if l.startswith("#"): print("-", l[2:].strip())
def metric(r):
    if "tok_s" in r and r.get("kind") in ("prefill", "decode"):
        return f"{r['kind']} {r['n']} (tok/s)", float(r["tok_s"])
    if r.get("impl", "").startswith("batchcore-"):
        return f"engine {r['impl'][10:]}, {r['requests']} requests (output tok/s)", float(r["tok_s"])
    return None, None
table = {}
for r in rows:
    name, v = metric(r)
    if name: table.setdefault(name, {}).setdefault(r["side"], []).append(v)
print("\n| metric | base (each round) | new (each round) | new/base (best) |\n|---|---|---|---:|")
for name, sides in table.items():
    b, n = sides.get("base", []), sides.get("new", [])
    ratio = f"{max(n) / max(b):.2f}x" if b and n else "n/a"
    print(f"| {name} | {', '.join(f'{x:.1f}' for x in b)} | {', '.join(f'{x:.1f}' for x in n)} | {ratio} |")
EOF
