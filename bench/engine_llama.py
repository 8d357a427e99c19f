#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) side of the engine benchmark: serves the workload written
by engine_bench (token-id prompts + max_tokens) ONE REQUEST AT A TIME, in file order, with
the same SmolLM2-135M weights as an F32 GGUF (tools/reference/llama_fixtures.py make_f32),
F32 KV cache, greedy decoding via llama_get_logits_ith, no EOS check (exactly max_tokens
tokens per request). Timing: all requests are taken to arrive at t = 0 (the workload
start), so a request's TTFT includes the time spent waiting behind earlier ones; the TTFT
from the request's own start (prefill + first argmax) is reported too. ITL = every gap
between consecutive tokens of a request. Prints one RESULT line like engine_bench.
  usage: engine_llama.py Q4_1.gguf WORKLOAD.jsonl [--threads N]"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools" / "reference"))


def pct(values, q):
    """Nearest-rank percentile (as engine_bench.c)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(max(math.ceil(q / 100 * len(v)), 1), len(v))
    return v[k - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("q4_path")
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import llama_fixtures  # noqa: E402  (the F32 conversion lives there)
    import llama_cpp
    import numpy as np

    reqs = [json.loads(line) for line in open(a.workload) if line.strip()]
    f32_path, _ = llama_fixtures.make_f32(Path(a.q4_path))
    n_ctx = max(len(r["prompt"]) + r["max_tokens"] for r in reqs) + 8
    llm = llama_cpp.Llama(model_path=str(f32_path), n_ctx=max(n_ctx, 1024), n_batch=512, n_ubatch=512,
                          n_threads=a.threads, n_threads_batch=a.threads, type_k=0, type_v=0, verbose=False)
    vocab = llm.n_vocab()
    print(f"# llama-cpp-python {llama_cpp.__version__}, model {f32_path}, threads {a.threads}", flush=True)

    def logits_row():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(vocab,))

    # Warm-up (not timed): one short request.
    llm.reset()
    llm.eval(reqs[0]["prompt"][:16])
    int(np.argmax(logits_row()))

    ttft_global, ttft_own, gaps = [], [], []
    generated = 0
    t0 = time.perf_counter()
    for r in reqs:
        llm.reset()
        if hasattr(llm._ctx, "memory_clear"):
            llm._ctx.memory_clear(True)
        start = time.perf_counter()
        llm.eval(r["prompt"])
        tok = int(np.argmax(logits_row()))
        t = time.perf_counter()
        ttft_own.append(t - start)
        ttft_global.append(t - t0)
        last = t
        for _ in range(r["max_tokens"] - 1):
            llm.eval([tok])
            tok = int(np.argmax(logits_row()))
            t = time.perf_counter()
            gaps.append(t - last)
            last = t
        generated += r["max_tokens"]
    wall = time.perf_counter() - t0
    print(f"RESULT impl=llama.cpp-sequential requests={len(reqs)} gen_tokens={generated} wall_s={wall:.3f} "
          f"tok_s={generated / wall:.2f} ttft_p50_ms={1e3 * pct(ttft_global, 50):.1f} "
          f"ttft_p99_ms={1e3 * pct(ttft_global, 99):.1f} itl_p50_ms={1e3 * pct(gaps, 50):.2f} "
          f"itl_p99_ms={1e3 * pct(gaps, 99):.2f} ttft_own_p50_ms={1e3 * pct(ttft_own, 50):.1f} "
          f"ttft_own_p99_ms={1e3 * pct(ttft_own, 99):.1f}", flush=True)


if __name__ == "__main__":
    main()
