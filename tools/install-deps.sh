#!/usr/bin/env bash
# Installs the system packages batchcore builds against, when missing.
set -euo pipefail
need=()
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/ffi.h ] || [ -e /usr/include/x86_64-linux-gnu/ffi.h ] || need+=(libffi-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libopenblas-dev libffi-dev pkg-config >/dev/null
fi
