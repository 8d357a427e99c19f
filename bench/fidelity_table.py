#!/usr/bin/env python3
"""Renders bench/fidelity.sh's results: for each weight type, batchcore (native weights) vs
llama.cpp on the same GGUF file.   usage: fidelity_table.py RESULTS_DIR TYPE...
RESULTS_DIR/<TYPE>/{batchcore,llama}.txt hold the LOGITS / GREEDY / RESULT lines of
fidelity_bench.c and fidelity_llama.py, RESULTS_DIR/<TYPE>/{batchcore,llama}/<name>.f32 the last
rows of the logits prompts."""
import math
import sys
from pathlib import Path

import numpy as np


def parse(path):
    r = {"logits": {}, "greedy": {}, "ppl": {}, "load": None}
    if not path.exists():
        return r
    for line in path.read_text().splitlines():
        kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
        if line.startswith("LOGITS"):
            r["logits"][kv["name"]] = [int(x) for x in kv["argmax"].split(",")]
        elif line.startswith("GREEDY"):
            r["greedy"][kv["name"]] = [int(x) for x in kv["tokens"].split(",")]
        elif line.startswith("RESULT") and kv.get("kind") == "ppl":
            r["ppl"][kv["kv"]] = float(kv["ppl"])
        elif line.startswith("RESULT") and kv.get("kind") == "load":
            r["load"] = line.split("error=", 1)[-1]
    return r


def main():
    root = Path(sys.argv[1])
    print("| type | ppl batchcore | ppl llama.cpp (F32 KV) | Δ ppl | ppl llama.cpp (F16 KV) | greedy 64 identical | "
          "common prefix (mean tokens) | argmax agrees (all positions) | last-row max abs diff (max rel) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in sys.argv[2:]:
        d = root / t
        b, l = parse(d / "batchcore.txt"), parse(d / "llama.txt")
        if not l["ppl"] and not l["greedy"]:
            continue
        if b["load"] is not None or not b["greedy"]:
            print(f"| {t} | not loadable by batchcore: {b['load'] or 'no output'} | {l['ppl'].get('f32', math.nan):.3f} "
                  f"| | {l['ppl'].get('f16', math.nan):.3f} | | | | |")
            continue
        names = sorted(l["greedy"])
        same = sum(b["greedy"].get(n) == l["greedy"][n] for n in names)
        pref = []
        for n in names:
            k = 0
            for x, y in zip(b["greedy"].get(n, []), l["greedy"][n]):
                if x != y:
                    break
                k += 1
            pref.append(k)
        agree = tot = 0
        worst_abs = worst_rel = 0.0
        for n, am in l["logits"].items():
            bm = b["logits"].get(n, [])
            agree += sum(x == y for x, y in zip(bm, am))
            tot += len(am)
            rb = np.fromfile(d / "batchcore" / f"{n}.f32", dtype="<f4")
            rl = np.fromfile(d / "llama" / f"{n}.f32", dtype="<f4")
            diff = float(np.max(np.abs(rb - rl)))
            worst_abs = max(worst_abs, diff)
            worst_rel = max(worst_rel, diff / float(np.max(np.abs(rl))))
        pb, pl = b["ppl"].get("f32", math.nan), l["ppl"].get("f32", math.nan)
        print(f"| {t} | {pb:.3f} | {pl:.3f} | {100 * (pb / pl - 1):+.2f}% | {l['ppl'].get('f16', math.nan):.3f} | "
              f"{same}/{len(names)} | {sum(pref) / len(pref):.1f} | {agree}/{tot} | {worst_abs:.3f} ({worst_rel:.4f}) |")


if __name__ == "__main__":
    main()
