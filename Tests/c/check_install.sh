#!/usr/bin/env bash
# make install / uninstall into a fresh prefix; a program built only with
# `cc app.c $(pkg-config --cflags --libs batchcore)` runs with an empty environment.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s -C "$root" install PREFIX="$prefix" > /dev/null
# One number tells the ABI generation: BC_ABI_VERSION, the SONAME libbatchcore.so.N, the
# installed file name and the symbol version node BATCHCORE_N.
abi=$(sed -n 's/^#define BC_ABI_VERSION \([0-9]*\)$/\1/p' "$prefix/include/batchcore.h")
[ -n "$abi" ] || { echo "install: no BC_ABI_VERSION in the header"; exit 1; }
so="libbatchcore.so.$abi"
for f in lib/$so lib/libbatchcore.so include/batchcore.h lib/pkgconfig/batchcore.pc bin/batchcore; do
    [ -e "$prefix/$f" ] || { echo "install: missing $f"; exit 1; }
done
[ "$(readlink "$prefix/lib/libbatchcore.so")" = "$so" ] || { echo "install: libbatchcore.so does not point to $so"; exit 1; }
readelf -d "$prefix/lib/$so" | grep -q "SONAME.*\[$so\]" || { echo "install: SONAME is not $so"; exit 1; }
nodes=$(readelf -V "$prefix/lib/$so" | sed -n 's/.*Name: \(BATCHCORE_[0-9A-Za-z_]*\).*/\1/p' | sort -u)
[ "$nodes" = "BATCHCORE_$abi" ] || { echo "install: symbol version nodes '$nodes', expected BATCHCORE_$abi"; exit 1; }
# No dependency on the Swift toolchain's shared runtime.
if readelf -d "$prefix/lib/$so" | grep -E 'NEEDED.*(swift|Foundation|dispatch|BlocksRuntime)'; then
    echo "install: library needs the Swift runtime"; exit 1
fi
cat > "$prefix/app.c" <<'C'
#include <batchcore.h>
#include <stdio.h>
int main(void) { printf("%s %u\n", bc_version(), bc_abi_version()); return bc_abi_version() == BC_ABI_VERSION ? 0 : 1; }
C
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" bash -c 'cc "$1/app.c" -o "$1/app" $(pkg-config --cflags --libs batchcore)' _ "$prefix"
env -i "$prefix/app" > /dev/null || { echo "install: app did not run with env -i"; exit 1; }
readelf -d "$prefix/app" | grep -q "NEEDED.*\[$so\]" || { echo "install: app does not need $so"; exit 1; }
make -s -C "$root" uninstall PREFIX="$prefix" > /dev/null
left=$(cd "$prefix" && find . -type f ! -name 'app*' | sort)
[ -z "$left" ] || { echo "uninstall left: $left"; exit 1; }
