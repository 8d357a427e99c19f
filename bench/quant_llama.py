#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) side of bench/quant.sh: the SAME Q4_1 GGUF file
llama.cpp runs natively (q8_1 activations), the same prompts (token ids), threads,
F32 KV cache and greedy decode as quant_bench.c; prints the same RESULT lines with
impl=llama.cpp-q4_1. RSS from /proc/self/status (weights are mmapped: pages touched
count).   usage: quant_llama.py Q4_1.gguf [--threads N] [--reps R] [--decode N]"""
import argparse
import statistics
import time


def status_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode", type=int, default=64)
    a = ap.parse_args()
    import llama_cpp
    import numpy as np

    base_rss = status_mib("VmRSS")
    llm = llama_cpp.Llama(model_path=a.path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, type_k=0, type_v=0, verbose=False)
    load_rss = status_mib("VmRSS")
    vocab = llm.n_vocab()
    print(f"# llama-cpp-python {llama_cpp.__version__}, model {a.path}, python baseline RSS {base_rss:.0f} MiB", flush=True)
    for n in (128, 512):
        tokens = [(i * 7919 + 13) % (vocab - 100) + 50 for i in range(n)]
        pt, dt = [], []
        for _ in range(a.reps):
            llm.reset()
            llm._ctx.memory_clear(True) if hasattr(llm._ctx, "memory_clear") else None
            t = time.perf_counter()
            llm.eval(tokens)
            pt.append(time.perf_counter() - t)
            tok = 100
            t = time.perf_counter()
            for _ in range(a.decode):
                llm.eval([tok])
                tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            dt.append(time.perf_counter() - t)
        print(f"RESULT impl=llama.cpp-q4_1 kind=prefill n={n} threads={a.threads} tok_s={n / statistics.median(pt):.1f}")
        print(f"RESULT impl=llama.cpp-q4_1 kind=decode n={n} threads={a.threads} tok_s={a.decode / statistics.median(dt):.1f}",
              flush=True)
    print(f"RESULT impl=llama.cpp-q4_1 kind=memory weight_mib=nan load_rss_mib={load_rss:.0f} "
          f"peak_rss_mib={status_mib('VmHWM'):.0f}")


if __name__ == "__main__":
    main()
