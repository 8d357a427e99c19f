#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python 0.3.36) side of the multi-adapter serving benchmark (issue 13 (b)):
the SAME 64 requests and 32 rank-R adapters as `adapter_bench --export DIR` (DIR/requests.json,
DIR/adapter-<a>.gguf, written by batchcore's bc_trainer_save_adapter_gguf), on the same GGUF
base, served ONE REQUEST AT A TIME — llama.cpp applies adapters per context and its
library has no scheduler that batches requests of different adapters — with request i
using adapter i mod K (K = 0: none), the adapter switched per request with
llama_set_adapters_lora (scale 1.0). Greedy (argmax of llama_get_logits_ith), exactly G
tokens per request, the KV cache cleared between requests; defaults otherwise (F16 KV).
Rounds interleave the setups K = 0, 1, 8, 32 as adapter_bench does.

  usage: adapter_llama.py MODEL.gguf DIR [--threads 2] [--rounds 1]
Prints one RESULT line per setup and round: output_tok_s = generated tokens / wall time."""
import argparse
import ctypes
import json
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    import llama_cpp
    import numpy as np

    spec = json.loads((Path(a.dir) / "requests.json").read_text())
    prompts, gen = spec["prompts"], int(spec["gen"])
    n_ctx = max(len(p) for p in prompts) + gen + 8
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=max(n_ctx, 256), n_batch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, verbose=False)
    vocab = llm.n_vocab()
    adapters = []
    for i in range(32):
        ad = llama_cpp.llama_adapter_lora_init(llm._model.model, str(Path(a.dir) / f"adapter-{i}.gguf").encode())
        if not ad:
            raise SystemExit(f"llama.cpp could not load adapter {i}")
        adapters.append(ad)
    print(f"# llama-cpp-python {llama_cpp.__version__}, model {a.model}, threads {a.threads}, "
          f"{len(prompts)} requests x {gen} tokens, {len(adapters)} adapters", flush=True)

    def logits_row():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(vocab,))

    def use(adapter):
        if adapter is None:
            rc = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
        else:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            rc = llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, arr, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise SystemExit(f"llama_set_adapters_lora failed: {rc}")

    def serve(k):
        generated = 0
        t0 = time.perf_counter()
        for i, p in enumerate(prompts):
            use(adapters[i % k] if k else None)
            llm.reset()
            if hasattr(llm._ctx, "memory_clear"):
                llm._ctx.memory_clear(True)
            llm.eval(p)
            tok = int(np.argmax(logits_row()))
            for _ in range(gen - 1):
                llm.eval([tok])
                tok = int(np.argmax(logits_row()))
            generated += gen
        return generated / (time.perf_counter() - t0)

    use(None)
    llm.reset()
    llm.eval(prompts[0][:8])   # warm-up, not timed
    for r in range(a.rounds):
        for k in (0, 1, 8, 32):
            tps = serve(k)
            print(f"RESULT impl=llama.cpp-sequential round={r} adapters={k} requests={len(prompts)} gen={gen} "
                  f"output_tok_s={tps:.1f}", flush=True)


if __name__ == "__main__":
    main()
