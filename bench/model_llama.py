#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) side of the model benchmark: the same SmolLM2-135M
weights as an F32 GGUF (dequantized from the registry's Q4_1 file by
tools/reference/llama_fixtures.py's make_f32), the same prompts (token ids), the same
thread count, F32 KV cache, greedy decode; prints the same RESULT lines as
model_bench.c.   usage: model_llama.py Q4_1.gguf [--threads N] [--reps R] [--decode N]"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools" / "reference"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("q4_path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode", type=int, default=64)
    a = ap.parse_args()
    import llama_fixtures  # noqa: E402  (the F32 conversion lives there)
    import llama_cpp
    import numpy as np

    f32_path, _ = llama_fixtures.make_f32(Path(a.q4_path))
    llm = llama_cpp.Llama(model_path=str(f32_path), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, type_k=0, type_v=0, verbose=False)
    vocab = llm.n_vocab()
    print(f"# llama-cpp-python {llama_cpp.__version__}, model {f32_path}", flush=True)
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
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(vocab,))
                tok = int(np.argmax(row))
            dt.append(time.perf_counter() - t)
        p, d = statistics.median(pt), statistics.median(dt)
        print(f"RESULT impl=llama.cpp kind=prefill n={n} threads={a.threads} tok_s={n / p:.1f}", flush=True)
        print(f"RESULT impl=llama.cpp kind=decode n={n} threads={a.threads} tok_s={a.decode / d:.1f}", flush=True)


if __name__ == "__main__":
    main()
