#!/usr/bin/env bash
# The installed CLI under SIGINT/SIGTERM (on the default model, $STAGE/model-path):
#  - batch: a signal after the first record stops the batch cleanly: every input line
#    gets exactly one record (unfinished ones finish_reason "cancelled"), the summary is
#    printed, the exit status is 128 + signo (130 SIGINT, 143 SIGTERM);
#  - batch: a signal while stdin is still open stops reading; the lines read get records;
#  - generate: interrupted, its text ends with a newline and it exits 130;
#  - chat: SIGINT while waiting for input ends it with 130; SIGINT during a reply stops
#    only that reply (ended with a newline), the chat goes on.
set -uo pipefail
set -m # background jobs get the default SIGINT disposition (not ignored)
: "${STAGE:?set STAGE to an install prefix}"
cli="$STAGE/bin/batchcore"
model=$(cat "$STAGE/model-path" 2>/dev/null) || { echo "check_cli_signals: no $STAGE/model-path"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_signals: $*"; status=1; }

# wait_nonempty FILE SECONDS: 0 once FILE is non-empty.
wait_nonempty() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do [ -s "$1" ] && return 0; sleep 0.05; done
    return 1
}
# wait_result FILE SECONDS: 0 once FILE holds a result record (one with "choices").
wait_result() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do grep -q '"choices"' "$1" 2>/dev/null && return 0; sleep 0.05; done
    return 1
}
# reap PID SECONDS: waits for PID (killed after SECONDS), its exit status in $rc.
reap() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$1" 2>/dev/null; then bad "pid $1 still running $2 s after the signal"; kill -KILL "$1"; fi
    wait "$1"
    rc=$?
}
# check_records INPUT OUTPUT WHAT: every non-blank input line has exactly one record
# (records carry the id "L<line>" or, for a line without one, the line number), and at
# least one is cancelled.
check_records() {
    python3 - "$1" "$2" <<'PY' || bad "$3: records do not match the input lines"
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8").read().split("\n")]
want = {}
for n, l in enumerate(lines, 1):
    if l.strip():
        want["L%d" % n] = n
seen = {}
ok = True
for rec in open(sys.argv[2], encoding="utf-8").read().splitlines():
    r = json.loads(rec)
    key = r["id"] if isinstance(r["id"], str) else "L%d" % r["id"]
    seen[key] = seen.get(key, 0) + 1
for k in want:
    if seen.get(k, 0) != 1:
        print("line %s: %d records" % (k, seen.get(k, 0))); ok = False
for k in seen:
    if k not in want:
        print("record for unknown id %s" % k); ok = False
cancelled = sum(1 for rec in open(sys.argv[2]).read().splitlines()
                if any(c.get("finish_reason") == "cancelled" for c in json.loads(rec).get("choices", [])))
if cancelled == 0:
    print("no cancelled record"); ok = False
sys.exit(0 if ok else 1)
PY
}

# ---------------------------------------------------------------- batch, signal mid-run
python3 - > "$tmp/req.jsonl" <<'PY'
import json
print(json.dumps({"id": "L1", "prompt": "Hi", "max_tokens": 1}))
print("")
print("{not json")                                  # line 3: error record, id 3
for n in range(4, 30):
    r = {"id": "L%d" % n, "messages": [{"role": "user", "content": "Write a long essay about the number %d." % n}],
         "max_tokens": 400, "temperature": 0}
    if n == 5: r["n"] = 3
    print(json.dumps(r))
PY
for sig in INT TERM; do
    want=$([ $sig = INT ] && echo 130 || echo 143)
    : > "$tmp/out.jsonl"
    "$cli" batch -m "$model" --max-seqs 2 -t 1 < "$tmp/req.jsonl" > "$tmp/out.jsonl" 2> "$tmp/err.txt" &
    pid=$!
    wait_result "$tmp/out.jsonl" 60 || bad "batch (SIG$sig): no result record within 60 s"
    kill -$sig $pid
    reap $pid 20
    [ "$rc" -eq "$want" ] || bad "batch (SIG$sig): exit $rc, want $want"
    check_records "$tmp/req.jsonl" "$tmp/out.jsonl" "batch (SIG$sig)"
    grep -q "^batch: .* requests" "$tmp/err.txt" || { bad "batch (SIG$sig): no summary on stderr"; cat "$tmp/err.txt"; }
done

# ---------------------------------------------------------------- batch, signal while reading
# stdin stays open (a slow producer): the signal stops reading; the complete lines get records.
mkfifo "$tmp/fifo"
: > "$tmp/out2.jsonl"
"$cli" batch -m "$model" -q < "$tmp/fifo" > "$tmp/out2.jsonl" 2> "$tmp/err2.txt" &
pid=$!
exec 7> "$tmp/fifo"
head -n 6 "$tmp/req.jsonl" >&7
printf '{"id": "partial", "prom' >&7   # an incomplete line: not read as a request
sleep 1
kill -INT $pid
reap $pid 20
exec 7>&-
[ "$rc" -eq 130 ] || bad "batch (SIGINT while reading): exit $rc, want 130"
head -n 6 "$tmp/req.jsonl" > "$tmp/req6.jsonl"
check_records "$tmp/req6.jsonl" "$tmp/out2.jsonl" "batch (SIGINT while reading)"

# ---------------------------------------------------------------- generate
: > "$tmp/gen.txt"
"$cli" generate -m "$model" -q --temp 0 -n 2000 -p "Once upon a time, in a small village by the sea," > "$tmp/gen.txt" 2> "$tmp/gen.err" &
pid=$!
wait_nonempty "$tmp/gen.txt" 60 || bad "generate: no output within 60 s"
sleep 0.3
kill -INT $pid
reap $pid 20
[ "$rc" -eq 130 ] || bad "generate (SIGINT): exit $rc, want 130"
[ "$(tail -c 1 "$tmp/gen.txt" | od -An -c | tr -d ' ')" = '\n' ] || bad "generate (SIGINT): output does not end with a newline"

# ---------------------------------------------------------------- chat
mkfifo "$tmp/chatin"
"$cli" chat -m "$model" < "$tmp/chatin" > "$tmp/chat.txt" 2> "$tmp/chat.err" &
pid=$!
exec 8> "$tmp/chatin"
# After "loaded ..." the chat is waiting for its first line (not killed by a default action).
for ((i = 0; i < 1200; i++)); do grep -q '^loaded' "$tmp/chat.err" && break; sleep 0.05; done
sleep 0.5
kill -INT $pid
reap $pid 20
exec 8>&-
[ "$rc" -eq 130 ] || bad "chat (SIGINT at the prompt): exit $rc, want 130"

# SIGINT during a reply stops that reply only: the chat goes on to the next line.
mkfifo "$tmp/chatin2"
: > "$tmp/chat2.txt"
"$cli" chat -m "$model" -q -n 2000 --temp 0 < "$tmp/chatin2" > "$tmp/chat2.txt" 2> "$tmp/chat2.err" &
pid=$!
exec 8> "$tmp/chatin2"
echo "Write a very long essay about the history of the sea." >&8
wait_nonempty "$tmp/chat2.txt" 60 || bad "chat: no reply within 60 s"
sleep 0.3
kill -INT $pid
sleep 0.5
kill -0 $pid 2>/dev/null || bad "chat: SIGINT during a reply ended the chat"
echo "/exit" >&8
reap $pid 20
exec 8>&-
[ "$rc" -eq 0 ] || bad "chat (SIGINT during a reply, then /exit): exit $rc, want 0"
[ "$(tail -c 1 "$tmp/chat2.txt" | od -An -c | tr -d ' ')" = '\n' ] || bad "chat: the interrupted reply does not end with a newline"

exit $status
