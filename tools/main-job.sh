#!/usr/bin/env bash
# The main job: the installed CLI end to end — version, then optimizer step
# throughput of every algorithm on this machine.
set -euo pipefail
cli=${1:-batchcore}
"$cli" --version
"$cli" bench optim --params 8000000 --steps 5
