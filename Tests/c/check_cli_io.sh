#!/usr/bin/env bash
# The installed CLI's input/output edges on the default model ($STAGE/model-path):
# a NUL on generate's stdin and -n 0 are usage errors; generate's text ends with a
# newline; output that cannot be written (/dev/full) is a failure with a message;
# chat refuses unknown /commands and tells an over-long message from an over-long
# conversation; no message names a C function or a Swift identifier.
set -uo pipefail
: "${STAGE:?set STAGE to an install prefix}"
cli="$STAGE/bin/batchcore"
model=$(cat "$STAGE/model-path" 2>/dev/null) || { echo "check_cli_io: no $STAGE/model-path"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_io: $*"; status=1; }
# run NAME STDIN-FILE args...: stdout $tmp/NAME.out, stderr $tmp/NAME.err, exit in $rc.
run() {
    local name=$1 in=$2; shift 2
    env -i "$cli" "$@" < "$in" > "$tmp/$name.out" 2> "$tmp/$name.err"
    rc=$?
}
no_internal_names() { # FILE WHAT
    if grep -qE 'bc_[a-z_]+:|writeDefault|topP|minP|topK' "$1"; then bad "$2: message names an internal identifier: $(cat "$1")"; fi
}

printf 'Hello\0 world' > "$tmp/nul.txt"
run nul "$tmp/nul.txt" generate -m "$model" -q -n 4
[ "$rc" -eq 2 ] || bad "generate with a NUL on stdin: exit $rc, want 2"
grep -q "NUL" "$tmp/nul.err" || bad "generate with a NUL on stdin: no message about it: $(cat "$tmp/nul.err")"

run n0 /dev/null generate -m "$model" -q -n 0 -p "Hello"
[ "$rc" -eq 2 ] || bad "generate -n 0: exit $rc, want 2"

run text /dev/null generate -m "$model" -q -n 5 --temp 0 -p "The capital of France is"
[ "$rc" -eq 0 ] || bad "generate: exit $rc"
[ -s "$tmp/text.out" ] && [ "$(tail -c 1 "$tmp/text.out" | od -An -c | tr -d ' ')" = '\n' ] \
    || bad "generate: the text does not end with a newline"

for cmd in "info -m $model" "tokenize -m $model hello" "generate -m $model -q -n 4 -p Hello" "version"; do
    env -i "$cli" $cmd < /dev/null > /dev/full 2> "$tmp/full.err"
    rc=$?
    [ "$rc" -eq 1 ] || bad "$cmd > /dev/full: exit $rc, want 1"
    grep -q "writ" "$tmp/full.err" || bad "$cmd > /dev/full: no message: $(cat "$tmp/full.err")"
done

printf '/foo\n' > "$tmp/cmd.txt"
run cmd "$tmp/cmd.txt" chat -m "$model" -q -n 4
[ "$rc" -eq 0 ] || bad "chat /foo: exit $rc"
grep -q "unknown command '/foo'" "$tmp/cmd.err" || bad "chat /foo: no unknown-command message: $(cat "$tmp/cmd.err")"
[ -s "$tmp/cmd.out" ] && bad "chat /foo: sent to the model: $(cat "$tmp/cmd.out")"

# Context 64: a first short turn fits; then one message far longer than the context is
# refused as such (the conversation is fine, no /reset advice); then the conversation
# goes on. A conversation that outgrows the context is told to /reset.
{ echo "Hi"; for i in $(seq 60); do printf 'word%d ' "$i"; done; echo; echo "Hi again"; } > "$tmp/long.txt"
run long "$tmp/long.txt" chat -m "$model" -q -n 8 -c 64 --temp 0
[ "$rc" -eq 0 ] || bad "chat over-long message: exit $rc"
grep -q "this message" "$tmp/long.err" || bad "chat over-long message: not reported as such: $(cat "$tmp/long.err")"
grep -q "/reset" "$tmp/long.err" && bad "chat over-long message: told to /reset: $(cat "$tmp/long.err")"
no_internal_names "$tmp/long.err" "chat over-long message"
{ for i in $(seq 12); do echo "Say hi"; done; } > "$tmp/conv.txt"
run conv "$tmp/conv.txt" chat -m "$model" -q -n 8 -c 64 --temp 0
grep -q "conversation is too long.*/reset" "$tmp/conv.err" || bad "chat conversation too long: not reported: $(cat "$tmp/conv.err")"
no_internal_names "$tmp/conv.err" "chat conversation too long"

exit $status
