#!/usr/bin/env bash
# The engine examples, built as a user would against the INSTALLED library (pkg-config
# from $STAGE) and run on the default model ($STAGE/model-path):
#  - examples/engine/engine_loop.c (strict C99): built-in prompts and prompts from argv;
#    it must exit 0 and report every request finished;
#  - examples/rust (cargo, std only, --offline): its #[repr(C)] mirrors must have the C
#    compiler's sizes and offsets, and on the same prompts it must print the same texts
#    as the C program (greedy decoding). Skipped only when cargo is not installed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${STAGE:?set STAGE to an install prefix}"
export PKG_CONFIG_PATH="$STAGE/lib/pkgconfig"
out="$STAGE/examples"
mkdir -p "$out"
model=$(cat "$STAGE/model-path" 2>/dev/null) || { echo "check_examples: no $STAGE/model-path"; exit 1; }
[ -f "$model" ] || { echo "check_examples: model $model not found"; exit 1; }
export ENGINE_MAX_TOKENS=16
status=0
bad() { echo "check_examples: $*"; status=1; }

# Expects "summary: N of N requests finished" with N = $2 in file $1.
expect_finished() {
    if ! grep -q "^summary: $2 of $2 requests finished" "$1"; then
        bad "$3: expected 'summary: $2 of $2 requests finished' in its output:"
        tail -n 20 "$1"
    fi
    local n
    n=$(grep -c '^\[[0-9]*\] finished: ' "$1")
    [ "$n" -eq "$2" ] || bad "$3: $n '[id] finished:' lines, expected $2"
}

# ---------------------------------------------------------------- C
cflags=$(pkg-config --cflags batchcore) && libs=$(pkg-config --libs batchcore) || { echo "pkg-config batchcore failed"; exit 1; }
if cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic $cflags -o "$out/engine_loop" "$root/examples/engine/engine_loop.c" $libs; then
    # Built-in prompts (4), model from the environment.
    if env -i BATCHCORE_MODEL="$model" ENGINE_MAX_TOKENS=16 "$out/engine_loop" > "$out/engine_loop.builtin.txt" 2>&1; then
        expect_finished "$out/engine_loop.builtin.txt" 4 "engine_loop (built-in prompts)"
    else
        bad "engine_loop (built-in prompts) failed:"; tail -n 20 "$out/engine_loop.builtin.txt"
    fi
    # Prompts from argv, model from argv[1].
    if env -i ENGINE_MAX_TOKENS=16 "$out/engine_loop" "$model" "Hi" "What is 2+2?" "Name a fruit." \
        > "$out/engine_loop.argv.txt" 2>&1; then
        expect_finished "$out/engine_loop.argv.txt" 3 "engine_loop (argv prompts)"
    else
        bad "engine_loop (argv prompts) failed:"; tail -n 20 "$out/engine_loop.argv.txt"
    fi
    # No model at all: a usage error (2), not a crash.
    env -i "$out/engine_loop" > /dev/null 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || bad "engine_loop without a model exited $rc, expected 2"
else
    bad "examples/engine/engine_loop.c does not compile"
fi

# ---------------------------------------------------------------- Rust
cargo=$(command -v cargo || true)
[ -z "$cargo" ] && [ -x "${HOME:-/root}/.cargo/bin/cargo" ] && cargo="${HOME:-/root}/.cargo/bin/cargo"
if [ -z "$cargo" ]; then
    echo "check_examples: cargo not installed: Rust example skipped"
else
    export CARGO_TARGET_DIR="$STAGE/cargo-target"
    if (cd "$root/examples/rust" && "$cargo" build --offline --release --quiet); then
        bin="$CARGO_TARGET_DIR/release/engine-loop"
        # Struct layouts: Rust's #[repr(C)] mirrors against the C compiler.
        if cc -std=c99 -Wall -Wextra -Werror -pedantic $cflags -o "$out/layout" "$root/examples/rust/layout.c"; then
            "$out/layout" > "$out/layout.c.txt"
            "$bin" --print-layout > "$out/layout.rust.txt"
            diff -u "$out/layout.c.txt" "$out/layout.rust.txt" || bad "Rust struct layouts differ from C's (- C, + Rust)"
            [ -s "$out/layout.c.txt" ] || bad "empty layout output"
        else
            bad "examples/rust/layout.c does not compile"
        fi
        if env -i ENGINE_MAX_TOKENS=16 "$bin" "$model" "Hi" "What is 2+2?" "Name a fruit." > "$out/engine_loop.rust.txt" 2>&1; then
            expect_finished "$out/engine_loop.rust.txt" 3 "Rust engine-loop"
            # Same engine, same greedy requests: the same texts as the C program.
            if [ -f "$out/engine_loop.argv.txt" ]; then
                diff <(grep '^\[[0-9]*\] text: ' "$out/engine_loop.argv.txt") \
                     <(grep '^\[[0-9]*\] text: ' "$out/engine_loop.rust.txt") > /dev/null \
                    || bad "the Rust and C examples print different texts for the same prompts"
            fi
        else
            bad "Rust engine-loop failed:"; tail -n 20 "$out/engine_loop.rust.txt"
        fi
        env -i BATCHCORE_MODEL="$model" ENGINE_MAX_TOKENS=4 "$bin" > /dev/null 2>&1 || bad "Rust engine-loop with built-in prompts failed"
    else
        bad "examples/rust does not build (cargo build --offline --release)"
    fi
fi
exit $status
