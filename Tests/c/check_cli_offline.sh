#!/usr/bin/env bash
# `batchcore batch --offline` on the default model ($STAGE/model-path), on a JSONL whose
# requests share two long system prompts (shuffled among each other, singles, a bad line,
# a duplicate id, a blank line): exactly one record per non-blank line, in input order;
# the same records (ids, texts, finish reasons, errors) as the online run; fewer batched
# (computed) tokens and a higher prefix hit rate than online. --offline refuses --stream
# and --static (usage error).
set -uo pipefail
: "${STAGE:?set STAGE to an install prefix}"
cli="$STAGE/bin/batchcore"
model=$(cat "$STAGE/model-path" 2>/dev/null) || { echo "check_cli_offline: no $STAGE/model-path"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_offline: $*"; status=1; }

python3 - > "$tmp/in.jsonl" <<'PY'
import json, random
topics = ["the sea", "mountains", "bread", "rivers", "the moon", "owls", "glass", "bridges", "tea", "snow"]
systems = [
    "You are a careful assistant for a maritime museum. Answer in one short sentence, plainly, "
    "without lists. Visitors ask about ships, harbours, lighthouses, knots, navigation by the stars, "
    "the history of sailing and the people who worked at sea. Keep a friendly tone and never invent dates. " * 2,
    "You are a terse kitchen helper. Reply with a single practical tip. The user cooks at home with "
    "simple tools: one pan, one pot, an oven, a knife and a wooden spoon. Prefer cheap ingredients, "
    "seasonal vegetables and short cooking times. Say nothing about nutrition or brands. " * 2,
]
lines = []
for g, system in enumerate(systems):
    for k, topic in enumerate(topics[:6]):
        lines.append({"id": f"g{g}-{k}", "messages": [{"role": "system", "content": system},
                                                      {"role": "user", "content": f"Tell me about {topic}."}]})
lines += [{"id": "single", "prompt": "The quick brown fox"}, {"id": "single-2", "prompt": [1, 2, 3, 4]}]
random.Random(7).shuffle(lines)
out = [json.dumps(dict(l, max_tokens=6, temperature=0)) for l in lines]
out.insert(5, '{"id": "broken", "prompt": ')          # invalid JSON: an error record
out.insert(9, "")                                       # blank: no record
out.insert(11, json.dumps({"id": "g0-1", "prompt": "dup", "max_tokens": 2}))  # duplicate id
print("\n".join(out))
PY

run() {  # name [options]
    local name=$1; shift
    env -i "$cli" batch -m "$model" -t 1 "$@" < "$tmp/in.jsonl" > "$tmp/$name.out" 2> "$tmp/$name.err"
    rc=$?
}
run online
[ "$rc" -eq 0 ] || { bad "online: exit $rc"; cat "$tmp/online.err"; }
run offline --offline
[ "$rc" -eq 0 ] || { bad "offline: exit $rc"; cat "$tmp/offline.err"; }
grep -q "(offline)" "$tmp/offline.err" || bad "offline: the summary does not say offline"

python3 - "$tmp" <<'PY' || status=1
import json, re, sys
tmp = sys.argv[1]
src = open(f"{tmp}/in.jsonl").read().splitlines()
want = [i + 1 for i, l in enumerate(src) if l.strip()]
ok = True
def fail(*a):
    global ok
    print("check_cli_offline:", *a); ok = False
def records(name):
    return [json.loads(l) for l in open(f"{tmp}/{name}.out").read().splitlines()]
def summary(name):
    err = open(f"{tmp}/{name}.err").read()
    m = re.search(r"prefix hit rate ([0-9.]+)%, \d+ preemptions, (\d+) batched tokens", err)
    if not m: fail(name, "no summary line:", err); return (0.0, 0)
    return float(m.group(1)), int(m.group(2))
on, off = records("online"), records("offline")
if [r["line"] for r in off] != want: fail("offline records are not one per non-blank line in input order:", [r["line"] for r in off])
if sorted(r["line"] for r in on) != want: fail("online records are not one per non-blank line:", sorted(r["line"] for r in on))
def essence(r):
    e = {"id": r["id"], "line": r["line"], "error": r.get("error")}
    if "choices" in r: e["choices"] = r["choices"]; e["prompt_tokens"] = r["usage"]["prompt_tokens"]
    return e
by_line = {r["line"]: essence(r) for r in on}
for r in off:
    if essence(r) != by_line.get(r["line"]): fail("line", r["line"], "differs:", essence(r), "online:", by_line.get(r["line"]))
ran = [r for r in off if "choices" in r]
if len(ran) != 14: fail("expected 14 requests to run, got", len(ran))
if not any("invalid JSON" in r.get("error", {}).get("message", "") for r in off): fail("no invalid-JSON error record")
if not any("duplicate id" in r.get("error", {}).get("message", "") for r in off): fail("no duplicate-id error record")
if not all(c["finish_reason"] in ("length", "stop") for r in ran for c in r["choices"]): fail("a request did not finish normally")
cached_on = sum(r["usage"]["cached_prompt_tokens"] for r in on if "choices" in r)
cached_off = sum(r["usage"]["cached_prompt_tokens"] for r in ran)
hit_on, batched_on = summary("online")
hit_off, batched_off = summary("offline")
if not (cached_off > cached_on): fail(f"offline cached {cached_off} prompt tokens, not more than online's {cached_on}")
if not (batched_off < batched_on): fail(f"offline computed {batched_off} tokens, not fewer than online's {batched_on}")
if not (hit_off > hit_on): fail(f"offline prefix hit rate {hit_off}% not above online's {hit_on}%")
print(f"check_cli_offline: batched tokens offline {batched_off} / online {batched_on}, hit rate {hit_off}% / {hit_on}%")
sys.exit(0 if ok else 1)
PY

# --offline needs every request first: not with --stream or --static.
for opt in --stream --static; do
    env -i "$cli" batch -m "$model" -q --offline "$opt" < /dev/null > "$tmp/x.out" 2> "$tmp/x.err"
    rc=$?
    [ "$rc" -eq 2 ] || bad "--offline $opt exits $rc, not 2"
    grep -q -- "--offline" "$tmp/x.err" || bad "--offline $opt: no message naming --offline"
done
# (into a file first: grep -q stops reading at the match, and the CLI's SIGPIPE would fail the pipeline)
env -i "$cli" batch --help > "$tmp/help.txt" || bad "batch --help exits non-zero"
grep -qF -- "--offline" "$tmp/help.txt" || bad "batch --help does not mention --offline"
env -i "$cli" batch --help | grep -qF -- "input order" || bad "batch --help does not state the --offline record order"

exit $status
