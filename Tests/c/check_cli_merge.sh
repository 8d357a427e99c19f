#!/usr/bin/env bash
# The installed CLI's `merge` (bc_merge_adapter, bc_weights_average):
#  - a PEFT adapter of the fixtures (Tests/fixtures/lora/plain, made by PEFT) merged into
#    the tiny Hugging Face model: exit 0, the result loads with batchcore info; --scale 0
#    of two different adapters gives the same bytes (the base), --scale 1 other bytes;
#  - a GGUF output of a Hugging Face model, a missing adapter, an adapter for another
#    model shape: exit 1 with the library's message, nothing written;
#  - --average of the default model with itself (weights 1 and 3, F16): exit 0, loads;
#  - usage errors exit 2; --help names every option.
set -uo pipefail
: "${STAGE:?set STAGE to an install prefix}"
here=$(cd "$(dirname "$0")" && pwd)
cli="$STAGE/bin/batchcore"
model="$here/../fixtures/train/tiny_tied"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_merge: $*"; status=1; }
run() { "$cli" merge "$@" > "$tmp/out" 2> "$tmp/err"; rc=$?; }

run -m "$model" --lora "$here/../fixtures/lora/plain" -o "$tmp/m1" --format hf
[ "$rc" -eq 0 ] || bad "merge exit $rc: $(cat "$tmp/err")"
"$cli" info -q -m "$tmp/m1" > "$tmp/info" 2>&1 || bad "merged model does not load: $(cat "$tmp/info")"
grep -q "layers: 3" "$tmp/info" || bad "merged model info: $(cat "$tmp/info")"
run -m "$model" --lora "$here/../fixtures/lora/plain" --scale 0 -o "$tmp/z1" --format hf
[ "$rc" -eq 0 ] || bad "scale 0 exit $rc"
run -m "$model" --lora "$here/../fixtures/lora/pattern" --scale 0 -o "$tmp/z2" --format hf
[ "$rc" -eq 0 ] || bad "scale 0 (pattern) exit $rc"
cmp -s "$tmp/z1/model.safetensors" "$tmp/z2/model.safetensors" || bad "scale 0 of two adapters differs"
cmp -s "$tmp/z1/model.safetensors" "$tmp/m1/model.safetensors" && bad "scale 1 equals scale 0"

run -m "$model" --lora "$here/../fixtures/lora/plain" -o "$tmp/x.gguf"
[ "$rc" -eq 1 ] && grep -q "GGUF" "$tmp/err" || bad "GGUF output of an HF model: exit $rc, $(cat "$tmp/err")"
run -m "$model" --lora "$tmp/none" -o "$tmp/x" --format hf
[ "$rc" -eq 1 ] || bad "missing adapter: exit $rc"
mkdir -p "$tmp/other"
cp "$here/../fixtures/lora/plain/adapter_config.json" "$tmp/other/"
cp "$here/../fixtures/lora/plain/adapter_model.safetensors" "$tmp/other/"
sed -i 's/"r": 4/"r": 5/' "$tmp/other/adapter_config.json"
run -m "$model" --lora "$tmp/other" -o "$tmp/x" --format hf
[ "$rc" -eq 1 ] && grep -q "shape" "$tmp/err" || bad "mismatched adapter: exit $rc, $(cat "$tmp/err")"
[ -e "$tmp/x" ] || [ -e "$tmp/x.gguf" ] && bad "a failed merge wrote output"

if [ -f "$STAGE/model-path" ]; then
    gguf=$(cat "$STAGE/model-path")
    run --average "$gguf:1" "$gguf:3" -o "$tmp/soup.gguf" --format gguf-f16
    [ "$rc" -eq 0 ] || bad "average exit $rc: $(cat "$tmp/err")"
    "$cli" info -q -m "$tmp/soup.gguf" > "$tmp/info" 2>&1 || bad "soup does not load: $(cat "$tmp/info")"
else
    bad "no $STAGE/model-path (run through make test-c)"
fi

run --average -o "$tmp/s.gguf"
[ "$rc" -eq 2 ] || bad "average of nothing: exit $rc"
run -m "$model" -o "$tmp/s"
[ "$rc" -eq 2 ] || bad "no --lora: exit $rc"
run -m "$model" --lora "$here/../fixtures/lora/plain" -o "$tmp/s" --scale nan
[ "$rc" -eq 2 ] || bad "--scale nan: exit $rc"
run -m "$model" --lora "$here/../fixtures/lora/plain" -o "$tmp/s" --format q4
[ "$rc" -eq 2 ] || bad "--format q4: exit $rc"
run --bogus
[ "$rc" -eq 2 ] || bad "unknown option: exit $rc"
run --help
for opt in --model --lora --scale --average --out --format --help; do
    grep -q -- "$opt" "$tmp/out" || bad "--help does not name $opt"
done
[ "$status" -eq 0 ] && echo "check_cli_merge: ok"
exit "$status"
