#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) side of bench/prefill_bench.c: one prompt of each length
(the same token ids: (i*7919 + 13) % (vocab - 100) + 50) prefilled in chunks of --chunk
tokens (n_batch = n_ubatch = chunk) into a fresh context of exactly that length, the same
thread count; --kv f32: F32 KV cache, flash attention off (prefill_bench.c's setting);
--kv f16: llama.cpp's defaults (F16 KV, flash attention on). Prints one RESULT line per
length, the same fields as prefill_bench.c:
    RESULT impl=llama.cpp-<f32kv|defaults> kind=prefill_long n=.. chunk=.. threads=.. seconds=.. tok_s=..
usage: prefill_llama.py MODEL.gguf [--threads N] [--chunk C] [--kv f32|f16] [--length N]..."""
import argparse
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--kv", choices=("f32", "f16"), default="f32")
    ap.add_argument("--length", type=int, action="append")
    a = ap.parse_args()
    import llama_cpp

    impl = "llama.cpp-f32kv" if a.kv == "f32" else "llama.cpp-defaults"
    kv_type = 0 if a.kv == "f32" else 1  # GGML_TYPE_F32 / GGML_TYPE_F16
    for n in a.length or [2048, 4096, 8190]:
        llm = llama_cpp.Llama(model_path=a.path, n_ctx=n, n_batch=a.chunk, n_ubatch=a.chunk, n_threads=a.threads,
                              n_threads_batch=a.threads, type_k=kv_type, type_v=kv_type, flash_attn=a.kv == "f16",
                              verbose=False)
        vocab = llm.n_vocab()
        tokens = [(i * 7919 + 13) % (vocab - 100) + 50 for i in range(n)]
        t = time.perf_counter()
        llm.eval(tokens)
        t = time.perf_counter() - t
        print(f"RESULT impl={impl} kind=prefill_long n={n} chunk={a.chunk} threads={a.threads} "
              f"seconds={t:.2f} tok_s={n / t:.1f}", flush=True)
        del llm


if __name__ == "__main__":
    main()
