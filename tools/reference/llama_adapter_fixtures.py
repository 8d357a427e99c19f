#!/usr/bin/env python3
"""llama.cpp loads a GGUF LoRA adapter that batchcore wrote (issue #13): Tests/fixtures/llama/lora/.

    python3 tools/reference/llama_adapter_fixtures.py          # BC_PREFIX=/dir to reuse an install

ONE-OFF generator (outputs committed; CI only reads them):
  1. installs batchcore from this tree (`make install PREFIX=$BC_PREFIX`, default a temp dir), compiles
     tools/reference/make_gguf_adapter.c against it (pkg-config) and runs it on the default Q4_1 model
     loaded as f32: a LoRA trainer of rank 2 on q,k,v,o,gate,up,down of every layer, alpha 4, every A/B
     value a seeded non-zero uniform (A +-1/sqrt(in), B +-0.02), written by bc_trainer_save_adapter_gguf
     -> adapter.gguf (F32, ~2.4 MB);
  2. llama.cpp (llama-cpp-python 0.3.36: llama_adapter_lora_init + llama_set_adapters_lora, scale 1.0,
     i.e. alpha/r = 2 applied by llama.cpp) runs three prompts on the F32 GGUF (llama_fixtures.make_f32)
     with the adapter and records the last row's logits in full (logits_f32_<name>.f32, raw little-endian
     float32 [n_vocab]) and the top-8 at every position; the same without the adapter (how far the adapter
     moves the logits: the test's tolerance must be far below it); and the Q4_1 file with the adapter
     (top-8 at every position, last-row max |diff| to the F32 run).
Settings as llama_fixtures.make_llm: n_ctx 1024, 2 threads, n_batch 512, KV F32, flash attention off.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import llama_fixtures as lf  # noqa: E402

OUT = REPO / "Tests" / "fixtures" / "llama" / "lora"
PROMPTS = ["short", "chat", "code"]
RANK, ALPHA, SEED, B_AMP = 2, 4.0, 20261130, 0.02


def build_adapter(q4):
    prefix = os.environ.get("BC_PREFIX") or tempfile.mkdtemp(prefix="bcstage-adapter.")
    if not (Path(prefix) / "lib" / "pkgconfig" / "batchcore.pc").exists():
        lf.log(f"make install PREFIX={prefix}")
        subprocess.check_call(["make", "-C", str(REPO), "install", f"PREFIX={prefix}"], stdout=subprocess.DEVNULL)
    env = dict(os.environ, PKG_CONFIG_PATH=f"{prefix}/lib/pkgconfig")
    flags = subprocess.check_output(["pkg-config", "--cflags", "--libs", "batchcore"], env=env, text=True).split()
    exe = Path(prefix) / "make_gguf_adapter"
    subprocess.check_call(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                           str(HERE / "make_gguf_adapter.c"), *flags, "-lm"])
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.check_call([str(exe), str(q4), str(OUT / "adapter.gguf"), "--rank", str(RANK), "--alpha", str(ALPHA),
                           "--seed", str(SEED), "--b-amp", str(B_AMP)],
                          env=dict(env, LD_LIBRARY_PATH=f"{prefix}/lib"))
    return OUT / "adapter.gguf"


def main():
    lf.ensure_packages()
    import gguf
    import llama_cpp
    import numpy as np

    q4, q4_sha = lf.fetch_q4()
    f32_path, f32_sha = lf.make_f32(q4)
    adapter = build_adapter(q4)
    reader = gguf.GGUFReader(adapter)
    meta = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    vocab_llm = llama_cpp.Llama(model_path=str(q4), vocab_only=True, verbose=False)
    by_name = {n: (t, s) for n, t, s in lf.LOGIT_PROMPTS}
    prompts = []
    for n in PROMPTS:
        t, s = by_name[n]
        prompts.append({"name": n, "text": t, "parse_special": s,
                        "ids": list(vocab_llm.tokenize(t.encode("utf-8"), add_bos=True, special=s))})
    rec = {"adapter": "adapter.gguf", "adapter_metadata": meta,
           "adapter_tensors": len(reader.tensors), "adapter_tensor_types": sorted({t.tensor_type.name for t in reader.tensors}),
           "made_with": {"tool": "tools/reference/make_gguf_adapter.c (bc_trainer_save_adapter_gguf)",
                         "rank": RANK, "alpha": ALPHA, "seed": SEED, "b_amp": B_AMP, "targets": "q,k,v,o,gate,up,down"},
           "llama_cpp": {"version": llama_cpp.__version__, "lora_scale": 1.0,
                         "api": "llama_adapter_lora_init + llama_set_adapters_lora (Llama(lora_path=..., lora_scale=1.0))",
                         "applies": "W x + (lora_scale * alpha / r) * B (A x)"},
           "settings": {"n_ctx": lf.N_CTX, "n_threads": lf.N_THREADS, "n_batch": 512, "type_k": "F32", "type_v": "F32",
                        "flash_attn": False},
           "f32_sha256": f32_sha, "q4_1_sha256": q4_sha, "n_vocab": vocab_llm.n_vocab(), "prompts": prompts}
    base = lf.make_llm(f32_path)
    base_last = {p["name"]: lf.eval_logits(base, p["ids"]) for p in prompts}
    del base
    with_f32 = lf.make_llm(f32_path, lora_path=str(adapter), lora_scale=1.0)
    for p in prompts:
        L = lf.eval_logits(with_f32, p["ids"])
        fn = f"logits_f32_{p['name']}.f32"
        np.ascontiguousarray(L[-1], dtype="<f4").tofile(OUT / fn)
        B = base_last[p["name"]]
        p["f32"] = {"file": fn, "top8_all_positions": [lf.top_k(L[i], 8) for i in range(len(L))],
                    "adapter_effect_max_abs_all_positions": float(np.max(np.abs(L - B))),
                    "adapter_effect_max_abs_last": float(np.max(np.abs(L[-1] - B[-1]))),
                    "argmax_changed_positions": int((L.argmax(-1) != B.argmax(-1)).sum())}
        lf.log(f"  {p['name']}: adapter moves the F32 logits by <= {p['f32']['adapter_effect_max_abs_all_positions']:.3f}, "
               f"argmax changed at {p['f32']['argmax_changed_positions']}/{len(L)} positions")
        p["_last"] = L[-1]
    del with_f32
    with_q4 = lf.make_llm(q4, lora_path=str(adapter), lora_scale=1.0)
    for p in prompts:
        L = lf.eval_logits(with_q4, p["ids"])
        p["q4_1"] = {"top8_all_positions": [lf.top_k(L[i], 8) for i in range(len(L))],
                     "last_max_abs_diff_vs_f32_with_adapter": float(np.max(np.abs(L[-1] - p["_last"])))}
        del p["_last"]
    (OUT / "adapter_logits.json").write_text(json.dumps(rec, ensure_ascii=False, indent=0) + "\n")
    lf.log(f"done: {OUT}")


if __name__ == "__main__":
    main()
