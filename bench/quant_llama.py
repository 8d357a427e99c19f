#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) side of bench/quant.sh: the SAME GGUF file llama.cpp
runs natively (Q4_1 with q8_1 activations, ...), the same prompts (token ids), threads
and greedy decode as quant_bench.c; prints the same RESULT lines with
impl=llama.cpp-f32kv (--kv f32: F32 KV cache, flash attention off) or
impl=llama.cpp-defaults (--kv f16: llama.cpp's defaults, F16 KV cache and flash
attention on, which is what its "auto" picks on CPU; llama-cpp-python can only say
on/off). RSS from /proc/self/status (weights are mmapped: pages touched count).
    usage: quant_llama.py MODEL.gguf [--kv f32|f16] [--threads N] [--reps R] [--decode N]"""
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
    ap.add_argument("--kv", choices=("f32", "f16"), default="f32")
    a = ap.parse_args()
    import llama_cpp
    import numpy as np

    base_rss = status_mib("VmRSS")
    kv = llama_cpp.GGML_TYPE_F32 if a.kv == "f32" else llama_cpp.GGML_TYPE_F16
    impl = "llama.cpp-f32kv" if a.kv == "f32" else "llama.cpp-defaults"
    # n_batch = n_ctx: llama-cpp-python keeps n_batch rows of scores and indexes them by position
    llm = llama_cpp.Llama(model_path=a.path, n_ctx=1024, n_batch=1024, n_ubatch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, type_k=kv, type_v=kv, flash_attn=a.kv == "f16", verbose=False)
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
        print(f"RESULT impl={impl} kind=prefill n={n} threads={a.threads} tok_s={n / statistics.median(pt):.1f}")
        print(f"RESULT impl={impl} kind=decode n={n} threads={a.threads} tok_s={a.decode / statistics.median(dt):.1f}",
              flush=True)
    print(f"RESULT impl={impl} kind=memory weight_mib=nan load_rss_mib={load_rss:.0f} "
          f"peak_rss_mib={status_mib('VmHWM'):.0f}")


if __name__ == "__main__":
    main()
