#!/usr/bin/env python3
"""Diagnostic (not a fixture generator): a float64 numpy forward of SmolLM2 over the Q4_1 file's
own blocks that emulates how each projection quantizes its input, to tell WHICH arithmetic
difference separates batchcore's native logits from llama.cpp's on the same file.

    quant_emulate.py [--batchcore DIR] [--prompts short,story,...]

Variants of the activation quantization (per block of 32, q = round-half-even(x * 127/amax), the
weights exactly the file's Q4_1 / Q8_0 blocks; everything else as llama_fixtures.numpy_forward):
  llama    d = amax/127 and, for Q4_1, s = d*sum(q) rounded to f16 (ggml's block_q8_1 / block_q8_0:
           quantize_row_q8_1 / quantize_row_q8_0), the dot  d_w*d*sum(q_w*q) + m_w*s
  f32scale d and s kept in f32 (what batchcore's bc_quant_q8a_row stored until stop 14; it now
           rounds both to f16 as ggml does, i.e. the 'llama' variant)
  none     no activation quantization (the weights' dequantized values times f32 activations)
  llama+eps  as llama, the token embeddings scaled by (1 + 2^-20): how far a perturbation far below
           any rounding of the arithmetic moves the logits once int8 codes start to flip
Compares the last position of each prompt with llama.cpp's Q4_1 run (Tests/fixtures/llama/
logits_q4_1_<name>.f32) and, with --batchcore DIR, with batchcore's native run (DIR/<name>.f32, as
bench/fidelity_bench.c writes them for the 'logits' items).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import llama_fixtures as lf  # noqa: E402


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float64)


def quantize(x, variant, with_s):
    """x [T, K] float32 -> (xq [T, K] = d*q in float64, s [T, K/32] or None)."""
    T, K = x.shape
    xb = x.astype(np.float32).reshape(T, K // 32, 32)
    amax = np.abs(xb).max(-1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        idv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint((xb * idv[..., None]).astype(np.float32))  # rint: round half to even, as _mm256_round_ps nearest
    q = np.clip(q, -127, 127)
    s = (d * q.sum(-1).astype(np.float32)).astype(np.float32) if with_s else None
    if variant == "llama":
        d = f16(d)
        s = f16(s) if with_s else None
    d = d.astype(np.float64)
    return (d[..., None] * q.astype(np.float64)).reshape(T, K), (None if s is None else s.astype(np.float64))


class Weights:
    def __init__(self, path):
        import gguf
        self.W, self.M, self.types = {}, {}, {}
        for t in gguf.GGUFReader(path).tensors:
            self.types[t.name] = t.tensor_type.name
            if t.tensor_type == gguf.GGMLQuantizationType.F32:
                self.W[t.name] = np.array(t.data, dtype=np.float64)
                continue
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            rows = w.shape[0] if w.ndim == 2 else 1
            self.W[t.name] = w.reshape(rows, -1).astype(np.float64)
            if t.tensor_type == gguf.GGMLQuantizationType.Q4_1:
                raw = np.array(t.data, dtype=np.uint8).reshape(rows, -1, 20)
                self.M[t.name] = raw[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float64)  # [rows, nb]

    def mm(self, name, x, variant):
        """x [T, K] @ W[name].T with the input quantized as `variant` (llama.cpp: Q4_1 x q8_1, Q8_0 x q8_0)."""
        W = self.W[name]
        if variant == "none":
            return x @ W.T
        q41 = name in self.M
        xq, s = quantize(x, variant, q41)
        if not q41:
            return xq @ W.T
        M = self.M[name]
        nb = M.shape[1]
        # W = d_w*q_w + m_w per block: sum_b d_w*d*sum(q_w q) = (W - m_w) @ xq ; plus m_w * s.
        Wd = W - np.repeat(M, 32, axis=1)
        return xq @ Wd.T + s @ M.T if nb else xq @ W.T


def forward(Wt, ids, hp, variant):
    W = Wt.W
    eps_in = variant.endswith("+eps")
    variant = variant.removesuffix("+eps")
    n_layer, n_head, n_kv = hp["n_layer"], hp["n_head"], hp["n_head_kv"]
    hd, base, eps = hp["head_dim"], float(hp["rope_freq_base"]), float(hp["rms_norm_eps"])
    x = W["token_embd.weight"][ids] * ((1 + 2.0 ** -20) if eps_in else 1.0)
    T = len(ids)
    ang = np.arange(T)[:, None] * (base ** (-np.arange(0, hd, 2) / hd))[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(n_layer):
        def mm(n, h):
            return Wt.mm(f"blk.{layer}.{n}.weight", h, variant)
        h = rms(x, W[f"blk.{layer}.attn_norm.weight"])
        q = rope(mm("attn_q", h).reshape(T, n_head, hd))
        k = rope(mm("attn_k", h).reshape(T, n_kv, hd))
        v = mm("attn_v", h).reshape(T, n_kv, hd)
        o = np.empty((T, n_head, hd))
        for hh in range(n_head):
            kv = hh // (n_head // n_kv)
            sc = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            o[:, hh] = (sc / sc.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + mm("attn_output", o.reshape(T, -1))
        h = rms(x, W[f"blk.{layer}.ffn_norm.weight"])
        gt = mm("ffn_gate", h)
        x = x + mm("ffn_down", (gt / (1 + np.exp(-gt))) * mm("ffn_up", h))
    x = rms(x, W["output_norm.weight"])
    return Wt.mm("token_embd.weight", x[-1:], variant)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batchcore", help="directory of batchcore's last-row logits <name>.f32")
    ap.add_argument("--prompts", default="short,story,chat,code,mixed,long")
    ap.add_argument("--variants", default="llama,f32scale,none,llama+eps")
    a = ap.parse_args()
    q4, _ = lf.fetch_q4()
    info = json.load(open(lf.OUT / "model_info.json"))
    prompts = {p["name"]: p for p in json.load(open(lf.OUT / "logits.json"))["prompts"]}
    Wt = Weights(q4)
    variants = a.variants.split(",")
    print("| prompt | " + " | ".join(f"{v} vs llama.cpp Q4_1" for v in variants)
          + (" | " + " | ".join(f"{v} vs batchcore" for v in variants) + " | batchcore vs llama.cpp" if a.batchcore else "") + " |")
    for name in a.prompts.split(","):
        p = prompts[name]
        ref = np.fromfile(lf.OUT / p["q4_1"]["file"], dtype="<f4").astype(np.float64)
        out = {v: forward(Wt, p["ids"], info["hparams"], v) for v in variants}
        cells = [f"{np.max(np.abs(out[v] - ref)):.4f}" for v in variants]
        if "llama" in out and "llama+eps" in out:
            print(f"  {name}: max|llama - llama+eps| = {np.max(np.abs(out['llama'] - out['llama+eps'])):.4f}, "
                  f"max|llama - f32scale| = {np.max(np.abs(out['llama'] - out.get('f32scale', out['llama']))):.4f}")
        if a.batchcore:
            bc = np.fromfile(Path(a.batchcore) / f"{name}.f32", dtype="<f4").astype(np.float64)
            cells += [f"{np.max(np.abs(out[v] - bc)):.4f}" for v in variants]
            cells.append(f"{np.max(np.abs(bc - ref)):.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
