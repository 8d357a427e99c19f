#!/usr/bin/env bash
# C-level ABI tests. Each Tests/c/test_*.c is compiled twice against the INSTALLED
# header and library (pkg-config from $STAGE): as strict C99 and as C++, and run with
# an empty environment. Then the exported symbol set is compared with the header,
# and the installed CLI is exercised.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${STAGE:?set STAGE to an install prefix}"
export PKG_CONFIG_PATH="$STAGE/lib/pkgconfig"
out="$STAGE/tests"
mkdir -p "$out"
cflags=$(pkg-config --cflags batchcore) || { echo "pkg-config batchcore failed"; exit 1; }
libs=$(pkg-config --libs batchcore)
passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }

for src in "$here"/test_*.c; do
    name=$(basename "$src" .c)
    # Some tests need a fixture directory or data: passed as argv[1].
    if cc -std=c99 -O1 -g -Wall -Wextra -Werror -pedantic $cflags -I"$here" -o "$out/$name" "$src" $libs -lm -lpthread; then
        if env -i "$out/$name" "$here/../fixtures"; then pass "$name (C99)"; else fail "$name (C99)"; fi
    else
        fail "$name (C99 compile)"
    fi
    if c++ -x c++ -std=c++17 -O1 -Wall -Wextra -Werror $cflags -I"$here" -o "$out/$name.cxx" "$src" $libs -lm -lpthread; then
        if env -i "$out/$name.cxx" "$here/../fixtures" >/dev/null; then pass "$name (C++)"; else fail "$name (C++)"; fi
    else
        fail "$name (C++ compile)"
    fi
done

for script in "$here"/check_*.sh; do
    name=$(basename "$script" .sh)
    if STAGE="$STAGE" bash "$script"; then pass "$name"; else fail "$name"; fi
done

echo "C ABI tests: $passed passed, $failed failed"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
