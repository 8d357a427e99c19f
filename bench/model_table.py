#!/usr/bin/env python3
"""Renders bench/run.sh's model results (RESULT lines) as a Markdown table."""
import re
import sys

rows, peak, header = {}, None, []
for line in open(sys.argv[1]):
    if line.startswith("# ") and not line.startswith("# llama-cpp"):
        header.append(line[2:].strip())
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if not line.startswith("RESULT "):
        continue
    if kv["kind"] == "sgemm_peak":
        peak = float(kv["gflops"])
        continue
    rows[(kv["kind"], int(kv["n"]), kv["impl"])] = kv
for h in header:
    print(f"- {h}")
if peak:
    print(f"- OpenBLAS sgemm peak (1024^3, same threads): {peak:.1f} GFLOP/s")
print()
print("| test | batchcore tok/s | llama.cpp tok/s | batchcore / llama.cpp | batchcore MFU |")
print("|---|---:|---:|---:|---:|")
for kind, n in sorted({(k, n) for k, n, _ in rows}, key=lambda x: (x[0] != "prefill", x[1])):
    b, l = rows.get((kind, n, "batchcore")), rows.get((kind, n, "llama.cpp"))
    bt = float(b["tok_s"]) if b else float("nan")
    lt = float(l["tok_s"]) if l else float("nan")
    mfu = f"{100 * float(b['gflops']) / peak:.0f}%" if b and "gflops" in b and peak else ""
    label = f"prefill {n}-token prompt" if kind == "prefill" else f"decode, batch 1 (after {n}-token prompt)"
    print(f"| {label} | {bt:.1f} | {lt:.1f} | {bt / lt:.2f}x | {mfu} |")
print()
print("Same weights (SmolLM2-135M-Instruct: batchcore loads the registry's Q4_1 file dequantized to F32 at load, "
      "llama.cpp the F32 GGUF made from it), same token ids, same thread count, F32 KV cache, greedy decode; "
      "median of the reps. MFU = (2 x parameters + attention) FLOPs per token x tokens/s / sgemm peak.")
