#!/usr/bin/env python3
"""llama.cpp side of bench/fidelity.sh: the same items of IDS.txt as fidelity_bench.c, on the same
GGUF file, with llama-cpp-python (2 threads, n_batch 512, flash attention off, KV F32; perplexity
also with the default F16 KV). Prints the same LOGITS / GREEDY / RESULT lines (impl=llama.cpp) and
writes OUTDIR/NAME.f32 (the last row of each logits item).
    fidelity_llama.py --ids prompts.json IDS.txt     # writes IDS.txt from the fixture prompts
    fidelity_llama.py MODEL.gguf IDS.txt OUTDIR [--threads N]"""
import argparse
import json
import math
import sys

CHUNK, GREEDY = 512, 64


def write_ids(prompts_json, out):
    p = json.load(open(prompts_json))
    with open(out, "w") as f:
        for e in p["logit_prompts"]:
            f.write(f"logits {e['name']} {' '.join(map(str, e['ids']))}\n")
        for e in p["greedy_prompts"]:
            f.write(f"greedy {e['name']} {' '.join(map(str, e['ids']))}\n")
        f.write(f"text pd_text {' '.join(map(str, p['perplexity_text']['ids']))}\n")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--ids":
        write_ids(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("ids")
    ap.add_argument("outdir")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import llama_cpp
    import numpy as np

    def make(n_ctx, kv=llama_cpp.GGML_TYPE_F32):
        return llama_cpp.Llama(model_path=a.model, n_ctx=n_ctx, n_batch=CHUNK, n_ubatch=CHUNK, n_threads=a.threads,
                               n_threads_batch=a.threads, logits_all=True, type_k=kv, type_v=kv, flash_attn=False,
                               verbose=False, seed=0)

    items = []
    for line in open(a.ids):
        parts = line.split()
        if len(parts) >= 3:
            items.append((parts[0], parts[1], [int(x) for x in parts[2:]]))
    llm = make(1024)
    print(f"# llama-cpp-python {llama_cpp.__version__}, {a.model}", flush=True)
    for kind, name, ids in items:
        if kind == "logits":
            llm.reset()
            llm.eval(ids)
            L = np.array(llm.scores[: len(ids)], dtype=np.float32)
            print(f"LOGITS name={name} n={len(ids)} argmax={','.join(str(int(x)) for x in L.argmax(-1))}")
            np.ascontiguousarray(L[-1], dtype="<f4").tofile(f"{a.outdir}/{name}.f32")
        elif kind == "greedy":
            llm.reset()
            llm.eval(ids)
            out = []
            for k in range(GREEDY):
                t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                out.append(t)
                if k + 1 < GREEDY:
                    llm.eval([t])
            print(f"GREEDY name={name} tokens={','.join(map(str, out))}")
        sys.stdout.flush()
    del llm
    for kind, name, ids in items:
        if kind != "text":
            continue
        for kv_name, kv in (("f32", llama_cpp.GGML_TYPE_F32), ("f16", llama_cpp.GGML_TYPE_F16)):
            llm = make(((len(ids) + 255) // 256) * 256, kv)
            llm.reset()
            llm.eval(ids)
            L = np.array(llm.scores[: len(ids) - 1], dtype=np.float64)
            mx = L.max(-1)
            lse = mx + np.log(np.exp(L - mx[:, None]).sum(-1))
            nll = float(np.mean(lse - L[np.arange(len(ids) - 1), ids[1:]]))
            print(f"RESULT kind=ppl name={name} impl=llama.cpp kv={kv_name} tokens={len(ids)} scored={len(ids) - 1} "
                  f"nll={nll:.6f} ppl={math.exp(nll):.4f}", flush=True)
            del llm


if __name__ == "__main__":
    main()
