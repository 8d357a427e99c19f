#!/usr/bin/env bash
# Installs the system packages the build and tests use, when missing (the library
# itself links only libc/libstdc++; the bench installs its own extras).
set -euo pipefail
need=()
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/ffi.h ] || [ -e /usr/include/x86_64-linux-gnu/ffi.h ] || need+=(libffi-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
