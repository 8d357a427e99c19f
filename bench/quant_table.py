#!/usr/bin/env python3
"""Renders bench/quant.sh's RESULT lines: per weight type and implementation the median over
rounds of prefill tok/s (128, 512-token prompts), decode tok/s (batch 1, after 128 and 512) and
peak RSS; then per type batchcore native (F32 KV, and its own F16 KV) over the FASTER of the two
llama.cpp configurations for each column (for RSS: over the smaller).   usage: quant_table.py RESULTS"""
import statistics
import sys
from collections import defaultdict

COLS = [("prefill", "128"), ("prefill", "512"), ("decode", "128"), ("decode", "512")]


def main():
    v = defaultdict(list)
    order = []
    for line in open(sys.argv[1]):
        if not line.startswith("RESULT"):
            continue
        kv = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
        key = (kv["type"], kv["impl"])
        if key not in order:
            order.append(key)
        if kv["kind"] in ("prefill", "decode"):
            v[key + (kv["kind"], kv["n"])].append(float(kv["tok_s"]))
        elif kv["kind"] == "memory":
            v[key + ("rss",)].append(float(kv["peak_rss_mib"]))
    med = {k: statistics.median(x) for k, x in v.items()}
    print("| type | implementation | prefill tok/s (128) | prefill tok/s (512) | decode tok/s (after 128) | "
          "decode tok/s (after 512) | peak RSS MiB | rounds |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for t, impl in order:
        cells = [f"{med.get((t, impl) + c, float('nan')):.1f}" for c in COLS]
        print(f"| {t} | {impl} | {' | '.join(cells)} | {med.get((t, impl, 'rss'), float('nan')):.0f} | "
              f"{len(v.get((t, impl, 'decode', '128'), []))} |")
    print()
    print("| type | batchcore ÷ faster llama.cpp | prefill (128) | prefill (512) | decode (after 128) | "
          "decode (after 512) | peak RSS (÷ smaller) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for t in dict.fromkeys(t for t, _ in order):
        peers = [i for tt, i in order if tt == t and i.startswith("llama.cpp")]
        for impl in ("batchcore-native", "batchcore-native-f16kv"):
            if (t, impl) not in order or not peers:
                continue
            cells = []
            for c in COLS:
                best = max(med.get((t, p) + c, 0) for p in peers)
                cells.append(f"{med.get((t, impl) + c, float('nan')) / best:.2f}×" if best else "")
            rss = min(med.get((t, p, "rss"), float("inf")) for p in peers)
            cells.append(f"{med.get((t, impl, 'rss'), float('nan')) / rss:.2f}×")
            print(f"| {t} | {impl} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
