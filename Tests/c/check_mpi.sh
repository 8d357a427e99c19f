#!/usr/bin/env bash
# Data-parallel training over Open MPI (examples/mpi), against the INSTALLED library on
# the tiny fixture model (Tests/fixtures/train/tiny_tied):
#  - libbatchcore.so links no MPI (the collectives are the caller's callbacks);
#  - examples/mpi builds with its Makefile (mpicc + pkg-config);
#  - 2 ranks x accumulation 1 end with the weights of 1 rank x accumulation 2 over the
#    same data after 6 steps: max |a-b| / max |b| <= 1e-6 with SGD (momentum 0.9). The
#    gradients differ only in float summation order (dW accumulated in the kernel vs
#    summed by the all-reduce); AdamW's first steps are ~lr * sign(g), which turns that
#    order difference in near-zero gradient elements into ~3e-5 relative, so AdamW is
#    checked at <= 1e-4;
#  - a checkpoint written by the 2-rank run after step 3 resumes on 1 rank (accumulation
#    2, the same global batch) and ends with the same weights (<= 1e-6, both optimizers).
# Open MPI comes from tools/install-deps.sh (make test runs it first).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${STAGE:?set STAGE to an install prefix}"
export PKG_CONFIG_PATH="$STAGE/lib/pkgconfig"
export LD_LIBRARY_PATH="$STAGE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
out="$STAGE/examples/mpi"
rm -rf "$out"
mkdir -p "$out"
command -v mpirun >/dev/null && command -v mpicc >/dev/null || { echo "check_mpi: Open MPI is not installed (tools/install-deps.sh)"; exit 1; }
status=0
bad() { echo "check_mpi: $*"; status=1; }

if readelf -d "$STAGE/lib/libbatchcore.so" | grep -i 'NEEDED.*mpi'; then bad "libbatchcore.so links MPI"; fi

make -s -C "$root/examples/mpi" OUT="$out" > "$out/build.txt" 2>&1 || { cat "$out/build.txt"; echo "check_mpi: build failed"; exit 1; }

cat > "$out/compare.c" <<'C'
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
/* compare A B TOL: max |a-b| / max |b| over two raw float32 files of equal size. */
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    FILE *fa = fopen(argv[1], "rb"), *fb = fopen(argv[2], "rb");
    if (!fa || !fb) { fprintf(stderr, "cannot open the weights\n"); return 1; }
    float a, b;
    double d = 0, m = 0;
    long n = 0;
    while (fread(&a, 4, 1, fa) == 1) {
        if (fread(&b, 4, 1, fb) != 1) { fprintf(stderr, "sizes differ\n"); return 1; }
        d = fmax(d, fabs((double)a - b));
        m = fmax(m, fabs((double)b));
        n++;
    }
    if (fread(&b, 4, 1, fb) == 1 || n == 0 || !(m > 0)) { fprintf(stderr, "sizes differ or empty\n"); return 1; }
    printf("%ld floats, max relative difference %.3g\n", n, d / m);
    return d / m <= atof(argv[3]) ? 0 : 1;
}
C
cc -O2 -o "$out/compare" "$out/compare.c" -lm || { echo "check_mpi: compare build failed"; exit 1; }

words=(the cat sat on a mat and dog ran far Away big)
seed=7
for i in $(seq 1 32); do
    line=""
    seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
    n=$(( 3 + (seed >> 16) % 7 ))
    for k in $(seq 1 $n); do
        seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
        line+="${line:+ }${words[$(( (seed >> 16) % 12 ))]}"
    done
    echo "{\"text\": \"$line.\"}"
done > "$out/data.jsonl"

mpi=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
model="$root/Tests/fixtures/train/tiny_tied"
common=(--tokens 64 --lr 3e-3 --seed 5 --threads 1)
run() {   # NAME NP ARGS...
    local name=$1 np=$2
    shift 2
    if ! timeout 300 "${mpi[@]}" -np "$np" "$out/train_mpi" "$model" "$out/data.jsonl" "${common[@]}" "$@" > "$out/$name.txt" 2>&1; then
        bad "$name failed:"; tail -n 20 "$out/$name.txt"; return 1
    fi
}
for opt in sgd adamw; do
    tol=1e-6
    [ "$opt" = adamw ] && tol=1e-4
    run one-$opt 1 --optimizer $opt --accum 2 --steps 6 --weights-out "$out/one-$opt.bin"
    run two-$opt 2 --optimizer $opt --accum 1 --steps 6 --weights-out "$out/two-$opt.bin" --checkpoint-at 3 "$out/ckpt-$opt"
    run resumed-$opt 1 --optimizer $opt --accum 2 --steps 3 --resume "$out/ckpt-$opt" --weights-out "$out/resumed-$opt.bin"
    grep -q '^ranks 2,' "$out/two-$opt.txt" || bad "$opt: the 2-rank run did not report 2 ranks"
    [ "$(grep -c '^step ' "$out/two-$opt.txt")" -eq 6 ] || bad "$opt: the 2-rank run did not take 6 steps"
    grep -q '^step 4 ' "$out/resumed-$opt.txt" || bad "$opt: the resumed run did not start at step 4"
    # Each step's global target count is the same on 1 and 2 ranks.
    paste -d' ' <(awk '/^step /{print $2, $6}' "$out/one-$opt.txt") <(awk '/^step /{print $2, $6}' "$out/two-$opt.txt") |
        awk '$1 != $3 || $2 != $4 {bad = 1} END {exit bad}' || bad "$opt: steps or target counts differ between 1 and 2 ranks"
    echo -n "$opt, 2 ranks vs 1: "
    "$out/compare" "$out/one-$opt.bin" "$out/two-$opt.bin" $tol || bad "$opt: 2 ranks x accum 1 differ from 1 rank x accum 2"
    echo -n "$opt, resumed on 1 rank vs 2 ranks: "
    "$out/compare" "$out/resumed-$opt.bin" "$out/two-$opt.bin" 1e-6 || bad "$opt: the 2-rank checkpoint resumed on 1 rank differs"
done
exit $status
