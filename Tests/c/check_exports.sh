#!/usr/bin/env bash
# The set of functions exported by the installed libbatchcore.so must equal the set
# of functions declared in batchcore.h, and every fallible function (one returning
# bc_status) must be exercised with invalid arguments (a CHECK_ERR) by some C test
# and, succeeding, by test_last_error.c's KEEPS (bc_last_error() stays as it was).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
header="$STAGE/include/batchcore.h"
abi=$(sed -n 's/^#define BC_ABI_VERSION \([0-9]*\)$/\1/p' "$header")
lib="$STAGE/lib/libbatchcore.so.$abi"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Declarations: strip comments, then take identifiers followed by '('.
sed -e 's://.*$::' "$header" | perl -0pe 's:/\*.*?\*/::gs' > "$tmp/h"
grep -oE '\bbc_[a-z0-9_]+[[:space:]]*\(' "$tmp/h" | tr -d ' (' | sort -u > "$tmp/declared"
nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' \
    | grep -vE "^(_end|_edata|__bss_start|_init|_fini|BATCHCORE_$abi)\$" | sort -u > "$tmp/exported"
status=0
if ! diff -u "$tmp/declared" "$tmp/exported" > "$tmp/diff"; then
    echo "exported symbols differ from header declarations (- header only, + library only):"
    cat "$tmp/diff"
    status=1
fi
echo "header declares $(wc -l < "$tmp/declared") functions; library exports $(wc -l < "$tmp/exported")"
# Fallible functions: 'bc_status bc_name(' in the header.
perl -0ne 'while (/\bbc_status\s+(bc_[a-z0-9_]+)\s*\(/g) { print "$1\n" }' "$tmp/h" | sort -u > "$tmp/fallible"
while read -r fn; do
    if ! grep -hE "CHECK_ERR\(\s*$fn\(" "$here"/test_*.c > /dev/null; then
        echo "no C test calls $fn with invalid arguments (CHECK_ERR($fn(...)))"
        status=1
    fi
    # The bc_last_error() policy (a success leaves the message) is tested per function.
    if ! grep -hE "KEEPS\(\s*$fn\(" "$here"/test_last_error.c > /dev/null; then
        echo "test_last_error.c does not check that a successful $fn leaves bc_last_error() (KEEPS($fn(...)))"
        status=1
    fi
done < "$tmp/fallible"
echo "$(wc -l < "$tmp/fallible") fallible functions checked for invalid-argument tests"
exit $status
