#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python 0.3.36) side of the shared-prefix benchmark (issue 16, row (c)):
the SAME requests as `shared_prefix_bench --export FILE.json` (N prompts = one shared prefix +
a distinct suffix, as token ids), on the same GGUF, served ONE REQUEST AT A TIME with
llama.cpp's prompt reuse: `Llama.generate` keeps the previous request's tokens in the
context's KV cache and evaluates only what follows their longest common prefix, so the
shared prefix is prefilled once (by a warm-up request, as the batchcore side does) and each
request prefills its own suffix. Greedy (temperature 0), exactly max_tokens tokens per
request (end-of-generation ignored), the same thread count; llama.cpp's defaults otherwise
(F16 KV, flash attention auto).

  usage: shared_prefix_llama.py MODEL.gguf FILE.json [--threads 2] [--requests N]
Prints one RESULT line: output_tok_s = generated tokens / wall time of the N requests."""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--requests", type=int, default=0, help="serve only the first N requests (0: all)")
    a = ap.parse_args()
    import llama_cpp

    spec = json.load(open(a.file))
    prompts, gen = spec["prompts"], int(spec["max_tokens"])
    if a.requests > 0:
        prompts = prompts[:a.requests]
    n_ctx = max(len(p) for p in prompts) + gen + 8
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=n_ctx, n_batch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, verbose=False)
    prefix = len(prompts[0])
    for p in prompts[1:]:
        prefix = next((k for k, (x, y) in enumerate(zip(prompts[0], p)) if x != y), min(prefix, len(p)))
    print(f"# llama-cpp-python {llama_cpp.__version__}, model {a.model}, threads {a.threads}, "
          f"{len(prompts)} requests x {gen} tokens, shared prefix {prefix} tokens", flush=True)

    def serve(prompt, tokens):
        out = 0
        for _ in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            out += 1
            if out == tokens:
                break
        return out

    serve(prompts[0][:prefix + 1], 1)   # warm-up: the shared prefix into the context
    t0 = time.perf_counter()
    generated = sum(serve(p, gen) for p in prompts)
    t = time.perf_counter() - t0
    print(f"RESULT impl=llama.cpp-one-at-a-time requests={len(prompts)} generated={generated} "
          f"seconds={t:.2f} output_tok_s={generated / t:.2f}", flush=True)


if __name__ == "__main__":
    main()
