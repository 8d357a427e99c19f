#!/usr/bin/env python3
"""Markdown table of the engine benchmark from its RESULT/WORKLOAD lines.
  usage: engine_table.py engine_results.txt"""
import re
import sys

rows, header, workload = {}, [], None
for line in open(sys.argv[1]):
    if line.startswith("# "):
        header.append(line[2:].strip())
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if line.startswith("RESULT "):
        rows[kv["impl"]] = kv
    elif line.startswith("WORKLOAD "):
        workload = kv

for h in header:
    print(f"- {h}")
if workload:
    print(f"- workload: {workload['requests']} requests, {workload['prompt_tokens']} prompt tokens, "
          f"{workload['output_tokens']} output tokens (seed {workload['seed']})")
print()
order = [("batchcore-continuous", "(a) batchcore continuous batching"),
         ("batchcore-static", "(b) batchcore static batching (groups of max_seqs)"),
         ("llama.cpp-sequential", "(c) llama.cpp, one request at a time")]
base = rows.get("batchcore-continuous")


def f(kv, key, fmt="{:,.1f}"):
    return fmt.format(float(kv[key])) if key in kv else "n/a"


print("| setup | output tok/s | (a) speed-up over it | wall s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for impl, label in order:
    kv = rows.get(impl)
    if not kv:
        print(f"| {label} | missing | | | | | | |")
        continue
    ratio = f"{float(base['tok_s']) / float(kv['tok_s']):.2f}x" if base else "n/a"
    ttft50, ttft99 = f(kv, "ttft_p50_ms", "{:,.0f}"), f(kv, "ttft_p99_ms", "{:,.0f}")
    if "ttft_own_p50_ms" in kv:
        ttft50 += f" (own {f(kv, 'ttft_own_p50_ms', '{:,.0f}')})"
        ttft99 += f" (own {f(kv, 'ttft_own_p99_ms', '{:,.0f}')})"
    print(f"| {label} | {f(kv, 'tok_s')} | {ratio} | {f(kv, 'wall_s')} | {ttft50} | {ttft99} | "
          f"{f(kv, 'itl_p50_ms', '{:.1f}')} | {f(kv, 'itl_p99_ms', '{:.1f}')} |")
print()
print("Output tok/s = generated tokens / wall time (all requests submitted at t = 0). TTFT = first token "
      "time from t = 0 (for llama.cpp, which serves the requests one at a time in file order, this includes the "
      "wait behind earlier requests; '(own ...)' is TTFT from the request's own start). ITL = every gap "
      "between consecutive tokens of a request, pooled. Targets: (a) >= 2x (b) and >= 3x (c).")
for impl in ("batchcore-continuous", "batchcore-static"):
    kv = rows.get(impl)
    if kv:
        print(f"\n{impl}: {kv.get('steps', '?')} engine steps, {kv.get('preemptions', '?')} preemptions, "
              f"max_seqs {kv.get('max_seqs', '?')}, max_batched_tokens {kv.get('max_batched_tokens', '?')}.", end="")
print()
