#!/usr/bin/env bash
# Installs the system packages the build and tests use, when missing (the library
# itself links only libc/libstdc++; the bench installs its own extras). Open MPI is
# only for examples/mpi and its test (Tests/c/check_mpi.sh); the library never links it.
set -euo pipefail
need=()
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/ffi.h ] || [ -e /usr/include/x86_64-linux-gnu/ffi.h ] || need+=(libffi-dev)
command -v mpirun >/dev/null || need+=(openmpi-bin)
pkg-config --exists ompi-c 2>/dev/null || need+=(libopenmpi-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
