#!/usr/bin/env bash
# One set of sampling defaults: generate, chat and batch, each left at its defaults
# (sampling at temperature > 0, seed 0), give the same text for the same prompt — so
# the three use the same temperature, top-k, top-p, min-p, penalties and seed. On the
# default model ($STAGE/model-path).
set -uo pipefail
: "${STAGE:?set STAGE to an install prefix}"
cli="$STAGE/bin/batchcore"
model=$(cat "$STAGE/model-path" 2>/dev/null) || { echo "check_cli_defaults: no $STAGE/model-path"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_defaults: $*"; status=1; }
batch_text() { # JSON request on stdin -> the first choice's text (+ a newline unless it ends with one, as generate ends it)
    env -i "$cli" batch -m "$model" -q -t 1 | python3 -c 'import json,sys; t=json.loads(sys.stdin.read())["choices"][0]["text"]; sys.stdout.write(t if t.endswith("\n") else t + "\n")'
}

prompt="The history of the city of"
env -i "$cli" generate -m "$model" -q -t 1 -n 24 -p "$prompt" > "$tmp/generate.txt" || bad "generate failed"
printf '{"prompt": "%s", "max_tokens": 24}\n' "$prompt" | batch_text > "$tmp/batch.txt" || bad "batch failed"
cmp -s "$tmp/generate.txt" "$tmp/batch.txt" || bad "generate and batch differ at their defaults:
$(cat "$tmp/generate.txt")
---
$(cat "$tmp/batch.txt")"
# A sanity check that the comparison can fail: greedy is another text.
env -i "$cli" generate -m "$model" -q -t 1 -n 24 --temp 0 -p "$prompt" > "$tmp/greedy.txt"
cmp -s "$tmp/generate.txt" "$tmp/greedy.txt" && bad "default sampling gave the greedy text: the comparison proves nothing"

message="Name three fruits."
env -i "$cli" generate -m "$model" -q -t 1 -n 24 --chat -p "$message" > "$tmp/generate_chat.txt" || bad "generate --chat failed"
echo "$message" | env -i "$cli" chat -m "$model" -q -t 1 -n 24 > "$tmp/chat.txt" || bad "chat failed"
printf '{"messages": [{"role": "user", "content": "%s"}], "max_tokens": 24}\n' "$message" | batch_text > "$tmp/batch_chat.txt"
cmp -s "$tmp/generate_chat.txt" "$tmp/chat.txt" || bad "generate --chat and chat differ at their defaults"
cmp -s "$tmp/generate_chat.txt" "$tmp/batch_chat.txt" || bad "generate --chat and batch (messages) differ at their defaults"

# Each help states the shared defaults.
for sub in generate chat batch; do
    help=$(env -i "$cli" $sub --help)
    for v in 0.8 40 0.95 0.05; do
        grep -qF -- "$v" <<< "$help" || bad "$sub --help does not state the default $v"
    done
done
exit $status
