#!/usr/bin/env bash
# make install / uninstall into a fresh prefix; a program built only with
# `cc app.c $(pkg-config --cflags --libs batchcore)` runs with an empty environment.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make -s -C "$root" install PREFIX="$prefix" > /dev/null
for f in lib/libbatchcore.so.0 lib/libbatchcore.so include/batchcore.h lib/pkgconfig/batchcore.pc bin/batchcore; do
    [ -e "$prefix/$f" ] || { echo "install: missing $f"; exit 1; }
done
readelf -d "$prefix/lib/libbatchcore.so.0" | grep -q 'SONAME.*\[libbatchcore.so.0\]' || { echo "install: SONAME is not libbatchcore.so.0"; exit 1; }
# No dependency on the Swift toolchain's shared runtime.
if readelf -d "$prefix/lib/libbatchcore.so.0" | grep -E 'NEEDED.*(swift|Foundation|dispatch|BlocksRuntime)'; then
    echo "install: library needs the Swift runtime"; exit 1
fi
cat > "$prefix/app.c" <<'C'
#include <batchcore.h>
#include <stdio.h>
int main(void) { printf("%s %u\n", bc_version(), bc_abi_version()); return bc_abi_version() == BC_ABI_VERSION ? 0 : 1; }
C
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" bash -c 'cc "$1/app.c" -o "$1/app" $(pkg-config --cflags --libs batchcore)' _ "$prefix"
env -i "$prefix/app" > /dev/null || { echo "install: app did not run with env -i"; exit 1; }
make -s -C "$root" uninstall PREFIX="$prefix" > /dev/null
left=$(cd "$prefix" && find . -type f ! -name 'app*' | sort)
[ -z "$left" ] || { echo "uninstall left: $left"; exit 1; }
