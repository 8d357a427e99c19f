#!/usr/bin/env bash
# The main job: the installed CLI end to end — fetch the default model into the
# cache (first run only), describe it, and generate text for a prompt.
set -euo pipefail
cli=${1:-batchcore}
"$cli" --version
"$cli" info
"$cli" generate --chat -n 96 --temp 0 -p "Write a haiku about the sea."
