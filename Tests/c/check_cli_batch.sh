#!/usr/bin/env bash
# `batchcore batch` records on the default model ($STAGE/model-path): every record
# carries its input line; duplicate ids (explicit, or the default line-number id meeting
# an explicit one) give an error record for the later line.
set -uo pipefail
: "${STAGE:?set STAGE to an install prefix}"
cli="$STAGE/bin/batchcore"
model=$(cat "$STAGE/model-path" 2>/dev/null) || { echo "check_cli_batch: no $STAGE/model-path"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_batch: $*"; status=1; }

# run_batch NAME [options]: input $tmp/NAME.jsonl -> $tmp/NAME.out, stderr $tmp/NAME.err, exit in $rc.
run_batch() {
    local name=$1; shift
    env -i "$cli" batch -m "$model" -q -t 1 "$@" < "$tmp/$name.jsonl" > "$tmp/$name.out" 2> "$tmp/$name.err"
    rc=$?
}
# expect PY-CONDITIONS NAME: python checks over recs (line -> record) and raw (list of records).
expect() {
    python3 - "$tmp/$2.out" "$2" "$1" <<'PY' || { bad "$2: records wrong:"; cat "$tmp/$2.out"; }
import json, sys
raw = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8").read().splitlines()]
recs = {}
ok = True
for r in raw:
    if not isinstance(r.get("line"), int):
        print("record without an integer line:", r); ok = False
        if not isinstance(r.get("id"), int): continue
        r["line"] = r["id"] # so that the checks below still say what else is wrong
    if r["line"] in recs:
        print("two records for line", r["line"]); ok = False
    recs[r["line"]] = r
for cond in sys.argv[3].split("\n"):
    cond = cond.strip()
    if not cond: continue
    try:
        good = eval(cond)
    except (KeyError, TypeError, IndexError) as e:
        good = False
    if not good:
        print("failed:", cond); ok = False
sys.exit(0 if ok else 1)
PY
}

# ---------------------------------------------------------------- line field, duplicate ids
cat > "$tmp/ids.jsonl" <<'J'
{"prompt": "a", "max_tokens": 1}
{"id": 1, "prompt": "b", "max_tokens": 1}
{"id": "x", "prompt": "c", "max_tokens": 1}
{"id": "x", "prompt": "d", "max_tokens": 1}

{"id": 7, "prompt": "e", "max_tokens": 1}
{"prompt": "f", "max_tokens": 1}
{"id": "1", "prompt": "g", "max_tokens": 1}
{"id": 1.0, "prompt": "h", "max_tokens": 1}
{"id": 2, "max_tokens": 1}
J
run_batch ids
[ "$rc" -eq 0 ] || bad "ids: exit $rc"
expect '
sorted(recs) == [1, 2, 3, 4, 6, 7, 8, 9, 10]
"choices" in recs[1] and recs[1]["id"] == 1
"duplicate id 1" in recs[2]["error"]["message"] and "line 1" in recs[2]["error"]["message"] and "choices" not in recs[2]
"choices" in recs[3] and recs[3]["id"] == "x"
"duplicate id" in recs[4]["error"]["message"] and "line 3" in recs[4]["error"]["message"]
"choices" in recs[6] and recs[6]["id"] == 7
recs[7]["id"] == 7 and "duplicate id 7" in recs[7]["error"]["message"] and "line 6" in recs[7]["error"]["message"]
"choices" in recs[8] and recs[8]["id"] == "1"
"choices" in recs[9]
"missing" in recs[10]["error"]["message"]
' ids

# ---------------------------------------------------------------- many lines with stop strings
# The requests array grows while lines are parsed; each request's stop-string list used
# to be a pointer into the array taken at parse time, left dangling by the growth (a
# soak run crashed, or got "stop_strings[0] is NULL"; 100 such lines crashed). 200 lines with stop strings:
# every one runs.
python3 -c '
for i in range(200): print("{\"prompt\": \"a\", \"max_tokens\": 1, \"stop\": [\"xyz\", \"q%d\"]}" % i)' > "$tmp/stops.jsonl"
run_batch stops
[ "$rc" -eq 0 ] || { bad "stops: exit $rc"; tail -3 "$tmp/stops.err"; }
expect '
sorted(recs) == list(range(1, 201))
all("choices" in r and "error" not in r for r in raw)
' stops

# ---------------------------------------------------------------- n > 1 outgrowing the KV budget
# 4 samples of 48 tokens cannot all fit a 4.5 MB KV budget (each alone does): they are
# preempted and recomputed in turn, never failed (issue 17: they used to finish with
# "error" and a top-level error). Every sample finishes normally and, seeded, each text
# equals the one a run with ample KV gives.
cat > "$tmp/squeeze.jsonl" <<'J'
{"id": "p", "messages": [{"role": "user", "content": "Write a long essay about the sea."}], "n": 4, "max_tokens": 48, "temperature": 1, "seed": 5}
J
cp "$tmp/squeeze.jsonl" "$tmp/ample.jsonl"
run_batch ample
[ "$rc" -eq 0 ] || bad "ample: exit $rc"
env -i "$cli" batch -m "$model" -t 1 --kv-bytes 4500000 < "$tmp/squeeze.jsonl" > "$tmp/squeeze.out" 2> "$tmp/squeeze.err"
rc=$?
[ "$rc" -eq 0 ] || { bad "squeeze: exit $rc"; cat "$tmp/squeeze.err"; }
grep -qE ', [1-9][0-9]* preemptions' "$tmp/squeeze.err" || { bad "squeeze: the KV budget forced no preemption"; cat "$tmp/squeeze.err"; }
expect '
list(recs) == [1] and recs[1]["id"] == "p" and "error" not in recs[1]
[c["index"] for c in recs[1]["choices"]] == list(range(4))
all(c["finish_reason"] in ("length", "stop") for c in recs[1]["choices"])
[c["text"] for c in recs[1]["choices"]] == [c["text"] for c in json.loads(open(sys.argv[1].replace("squeeze", "ample")).read())["choices"]]
' squeeze

# ---------------------------------------------------------------- --stream
# A producer writes one request, then waits: with --stream the first record must come
# out while stdin is still open (without it, batch waits for EOF). Then the producer
# writes a second request and closes stdin: both records, exit 0.
mkfifo "$tmp/pipe"
trap '' PIPE # should batch exit early, writing to the pipe fails instead of ending this script
( env -i "$cli" batch --stream -m "$model" -q -t 1 < "$tmp/pipe" > "$tmp/stream.out" 2> "$tmp/stream.err"; echo $? > "$tmp/stream.rc" ) &
exec 3> "$tmp/pipe"
echo '{"id": "first", "prompt": "Hello", "max_tokens": 3}' >&3
for _ in $(seq 1200); do [ -s "$tmp/stream.out" ] && break; sleep 0.1; done
[ -s "$tmp/stream.out" ] || bad "stream: no record within 120 s while stdin stayed open"
echo '{"id": "second", "prompt": "Bye", "max_tokens": 3}' >&3
exec 3>&-
wait
trap - PIPE
[ "$(cat "$tmp/stream.rc")" = 0 ] || { bad "stream: exit $(cat "$tmp/stream.rc")"; cat "$tmp/stream.err"; }
expect '
sorted(recs) == [1, 2]
recs[1]["id"] == "first" and recs[2]["id"] == "second"
raw[0]["id"] == "first"
all(c["finish_reason"] in ("length", "stop") for r in raw for c in r["choices"])
' stream
# The same input through --stream and without it: the same texts (and duplicate ids
# rejected line by line the same way).
printf '%s\n' '{"id": 1, "prompt": "The sea", "max_tokens": 5}' '{"id": 1, "prompt": "x"}' \
    '{"prompt": "Stars", "max_tokens": 5, "seed": 3}' '{"id": 3, "prompt": "y"}' > "$tmp/sstream.jsonl"
cp "$tmp/sstream.jsonl" "$tmp/snostream.jsonl"
run_batch sstream --stream
[ "$rc" -eq 0 ] || bad "sstream: exit $rc"
run_batch snostream
expect '
sorted(recs) == [1, 2, 3, 4]
"duplicate id 1" in recs[2]["error"]["message"] and "line 1" in recs[2]["error"]["message"]
"duplicate id 3" in recs[4]["error"]["message"] and "line 3" in recs[4]["error"]["message"]
(lambda o: all(recs[k].get("choices") == o[k].get("choices") and recs[k].get("error") == o[k].get("error") for k in recs))({json.loads(l)["line"]: json.loads(l) for l in open(sys.argv[1].replace("sstream", "snostream"))})
' sstream
# ---------------------------------------------------------------- hostile values
# Line 1 starts with a UTF-8 BOM (skipped); line 2 holds a raw NUL byte; seeds at and
# above 2^64; a top_p that rounds to 0 as a float.
{
    printf '\xef\xbb\xbf{"prompt": "a", "max_tokens": 1}\n'
    printf '{"prompt": "a\0b", "max_tokens": 1}\n'
    printf '{"prompt": "a", "max_tokens": 1, "seed": 18446744073709551616}\n'
    printf '{"prompt": "a", "max_tokens": 1, "seed": 18446744073709551615}\n'
    printf '{"prompt": "a", "max_tokens": 1, "seed": 1e3}\n'
    printf '{"prompt": "a", "max_tokens": 1, "seed": 1e30}\n'
    printf '{"prompt": "a", "max_tokens": 1, "top_p": 1e-50}\n'
    printf '{"prompt": "a", "max_tokens": 0}\n'
} > "$tmp/values.jsonl"
run_batch values
[ "$rc" -eq 0 ] || bad "values: exit $rc"
expect '
sorted(recs) == list(range(1, 9))
"choices" in recs[1]
"NUL" in recs[2]["error"]["message"]
recs[3]["error"]["message"] == "\x27seed\x27 must be an integer in [0, 18446744073709551615]"
"choices" in recs[4] and "choices" in recs[5]
"18446744073709551615" in recs[6]["error"]["message"]
"top_p" in recs[7]["error"]["message"] and "topP" not in recs[7]["error"]["message"]
"max_tokens" in recs[8]["error"]["message"]
' values

# LoRA adapters: a PEFT directory (r 2 on q_proj, random A and B) written here; requests
# name it with "adapter"; unknown names and non-strings are error records; requests
# with and without the adapter run in the same engine.
n_layer=$(env -i "$cli" info -m "$model" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["layers"])')
n_embd=$(env -i "$cli" info -m "$model" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["embedding"])')
mkdir -p "$tmp/adapter"
python3 - "$tmp/adapter" "$n_layer" "$n_embd" <<'PY'
import json, random, struct, sys
d, layers, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(1)
tensors, blobs, off = {}, [], 0
for l in range(layers):
    for part, shape in (("lora_A", [2, dim]), ("lora_B", [dim, 2])):
        name = f"base_model.model.model.layers.{l}.self_attn.q_proj.{part}.weight"
        n = shape[0] * shape[1]
        blobs.append(struct.pack(f"<{n}f", *[random.uniform(-0.5, 0.5) for _ in range(n)]))
        tensors[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + 4 * n]}
        off += 4 * n
header = json.dumps(tensors).encode()
with open(d + "/adapter_model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + b"".join(blobs))
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]},
          open(d + "/adapter_config.json", "w"))
PY
{
    echo '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "adapter": "a"}'
    echo '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}'
    echo '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "adapter": "zz"}'
    echo '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "adapter": 5}'
    echo '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "adapter": "a", "adapter_scale": 1}'
    echo '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "adapter": "a", "adapter_scale": 0}'
} > "$tmp/adapter.jsonl"
run_batch adapter --adapter "a=$tmp/adapter"
[ "$rc" -eq 0 ] || { bad "adapter: exit $rc"; cat "$tmp/adapter.err"; }
expect '
sorted(recs) == list(range(1, 7))
"choices" in recs[1] and "choices" in recs[2] and "choices" in recs[5] and "choices" in recs[6]
"unknown adapter" in recs[3]["error"]["message"]
"adapter" in recs[4]["error"]["message"]
recs[1]["choices"][0]["text"] == recs[5]["choices"][0]["text"]
recs[6]["choices"][0]["text"] == recs[2]["choices"][0]["text"]
recs[1]["choices"][0]["text"] != recs[2]["choices"][0]["text"]
' adapter
cp "$tmp/adapter.jsonl" "$tmp/adapter2.jsonl"
run_batch adapter2 --adapter "no-equals-sign"
[ "$rc" -eq 2 ] || bad "adapter: --adapter without NAME= exits $rc, not 2"
run_batch adapter2 --adapter "a=$tmp/missing"
[ "$rc" -eq 1 ] || bad "adapter: a missing adapter directory exits $rc, not 1"

# --help documents the three shapes.
help=$(env -i "$cli" batch --help)
for word in '"line"' 'partial failure' 'preempted' '--stream' 'duplicate id' 'SIGINT' 'SIGTERM' '130' '143'; do
    grep -qF -- "$word" <<< "$help" || bad "batch --help does not mention $word"
done

exit $status
