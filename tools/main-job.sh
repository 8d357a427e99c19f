#!/usr/bin/env bash
# The main job: shows the installed CLI working end to end.
set -euo pipefail
cli=${1:-batchcore}
"$cli" --version
