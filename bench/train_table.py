#!/usr/bin/env python3
"""Renders bench/run.sh's train results as a Markdown table.

usage: train_table.py RESULTS.txt

Reads the RESULT lines of train_bench (impl=batchcore) and train_torch.py (impl=torch), one
line per process (one configuration per process, every round), and the PEAK lines of
`train_torch.py --peak` (torch.mm 2048x2048 float32, same threads). Per (shape, mode, impl)
the timed steps of every round are pooled: tokens/s = D*L / median step time; RSS = the
largest of any round. sgemm peak = the best PEAK of the run.

FLOP per token (N = parameters, the tied embedding/output matrix counted once: the lookup
costs nothing, the output head is one d x V product; L = layers, T = sequence (document)
length, d = model width; causal attention averages T/2 keys, QK^T and PV each 2*(T/2)*d):
  forward: 2*N + 2*L*T*d        train (forward + backward): 6*N + 6*L*T*d
  train+loraR (frozen base, adapters on every projection): 4*N + 6*L*T*d
(the AdamW step, norms, SwiGLU, softmax and RoPE are not counted).
MFU = tokens/s x FLOP per token / sgemm peak.
"""
import math
import re
import statistics
import sys


def flop_per_token(mode, params, layers, embd, seq):
    if mode.startswith("train+lora"):
        # LoRA: forward 2N + the input gradients 2N (no weight gradient of the frozen base);
        # attention forward + backward as full training; the adapters' products not counted.
        return 4 * params + 6 * layers * seq * embd
    k = 6 if mode == "train" else 2
    return k * params + k * layers * seq * embd


def fmt_mib(x):
    return "n/a" if x is None or math.isnan(x) else f"{x:,.0f}"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: train_table.py RESULTS.txt")
    header, peaks, runs = [], [], {}
    for line in open(sys.argv[1]):
        if line.startswith("# ") and line[2:].split(":")[0] in ("date", "machine", "torch", "batchcore", "model",
                                                                "load before", "load after", "threads", "rounds"):
            header.append(line[2:].strip())
        kv = dict(re.findall(r"(\w+)=(\S+)", line))
        if line.startswith("PEAK "):
            peaks.append(float(kv["gflops"]))
        elif line.startswith("RESULT "):
            mode = kv["mode"] + (f"+lora{kv['lora']}" if kv.get("lora", "0") != "0" else "")
            # compute=bf16: batchcore BC_COMPUTE_BF16 / PyTorch autocast bf16 (same row, same arithmetic class).
            if kv.get("compute", "f32") != "f32":
                mode += " " + kv["compute"]
            key = (int(kv["docs"]), int(kv["len"]), mode, kv["impl"])
            runs.setdefault(key, []).append(kv)
    peak = max(peaks) if peaks else None
    for h in header:
        print(f"- {h}")
    if peak:
        print(f"- sgemm peak (torch.mm 2048x2048 float32, same threads; best of {len(peaks)} runs): {peak:.1f} GFLOP/s")
    else:
        print("- sgemm peak: not measured (no PEAK line); MFU n/a")
    print()
    print("| shape | mode | batchcore tok/s | PyTorch tok/s | batchcore / PyTorch | peak RSS batchcore, MiB "
          "| peak RSS PyTorch, MiB | MFU batchcore | MFU PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    cells32 = {}   # PyTorch float32 cells by (docs, len, mode), for the bf16 cross ratio
    shapes = sorted({(d, l, m) for d, l, m, _ in runs}, key=lambda x: (x[0] * x[1], x[2].split()[0] != "train", x[2]))
    for docs, seq, mode in shapes:
        cells = {}
        for impl in ("batchcore", "torch"):
            rs = runs.get((docs, seq, mode, impl))
            if not rs:
                cells[impl] = None
                continue
            times = [float(t) for r in rs for t in r["times"].split(",")]
            med = statistics.median(times)
            tps = docs * seq / med
            fpt = flop_per_token(mode.split()[0], int(rs[0]["params"]), int(rs[0]["layers"]), int(rs[0]["embd"]), seq)
            steps_rss = max(float(r.get("steps_rss_mib", "nan")) for r in rs)
            proc_rss = max(float(r["peak_rss_mib"]) for r in rs)
            cells[impl] = {"tps": tps, "mfu": tps * fpt / (peak * 1e9) if peak else None, "steps_rss": steps_rss,
                           "proc_rss": proc_rss, "n": len(times), "rounds": len(rs), "fpt": fpt,
                           "loss0": float(rs[0]["loss0"]), "params": int(rs[0]["params"])}
        b, t = cells["batchcore"], cells["torch"]
        if " " not in mode and t:
            cells32[(docs, seq, mode)] = t
        ratio = f"{b['tps'] / t['tps']:.2f}x" if b and t else "n/a"

        def tok(c):
            return f"{c['tps']:.1f}" if c else "n/a"

        def rss(c):
            return f"{fmt_mib(c['steps_rss'])} ({fmt_mib(c['proc_rss'])})" if c else "n/a"

        def mfu(c):
            return f"{100 * c['mfu']:.0f}%" if c and c["mfu"] is not None else "n/a"

        print(f"| {docs}x{seq} | {mode} | {tok(b)} | {tok(t)} | {ratio} | {rss(b)} | {rss(t)} | {mfu(b)} | {mfu(t)} |")
        c = b or t
        notes.append(f"{docs}x{seq} {mode}: {c['fpt'] / 1e6:.1f} MFLOP/token; timed steps pooled: "
                     + ", ".join(f"{i} {x['n']} in {x['rounds']} process{'es' if x['rounds'] > 1 else ''}"
                                 for i, x in cells.items() if x)
                     + ("; first-step loss " + ", ".join(f"{i} {x['loss0']:.4f}" for i, x in cells.items() if x)))
        if b and " " in mode:
            # batchcore in bf16 against PyTorch's default float32 of the same shape and mode.
            t32 = cells32.get((docs, seq, mode.split()[0]))
            if t32:
                notes.append(f"{docs}x{seq} {mode}: batchcore bf16 / PyTorch float32 = {b['tps'] / t32['tps']:.2f}x")
        if b and t and b["params"] != t["params"]:
            notes.append(f"WARNING {docs}x{seq} {mode}: parameter counts differ: batchcore {b['params']}, "
                         f"torch {t['params']}")
    print()
    print("tok/s = D x L tokens per step / median step time (forward + backward + AdamW step for train; "
          "the loss without gradients for forward). Peak RSS: over the steps (VmHWM reset after loading the "
          "model), in parentheses the whole process (getrusage ru_maxrss, the load included; PyTorch's load "
          "dequantizes the GGUF with numpy and holds several copies). FLOP per token = 6N + 6LTd (train), "
          "2N + 2LTd (forward), 4N + 6LTd (train+loraR: no base weight gradient): N parameters (tied embedding counted once), L layers, T sequence length, "
          "d width. MFU = tok/s x FLOP per token / sgemm peak.")
    print()
    for n in notes:
        print(f"- {n}")


if __name__ == "__main__":
    main()
