#!/usr/bin/env python3
"""PEFT LoRA reference fixtures for batchcore: Tests/fixtures/lora/.

Run from anywhere:   python3 tools/reference/lora_fixtures.py            (writes the fixtures)
                     python3 tools/reference/lora_fixtures.py --verify DIR
This is a ONE-OFF generator like train_fixtures.py (whose model-building helpers it imports): its
outputs are committed, and the Swift tests (CI, no Python) only read them.

Needs torch==2.13.0+cpu, transformers==5.24.0, peft, safetensors, numpy (pip; see train_fixtures.py for
the CPU wheel).

What it writes (Tests/fixtures/lora/<case>/), on the base model Tests/fixtures/train/tiny_tied and its
packed micro-batch (tiny_tied/reference.json "batch": 3 documents, loss masks):
  adapter_config.json, adapter_model.safetensors   PEFT's own save_pretrained (float32; its README.md
        model card removed; target_modules order varies from run to run, the rest is byte-identical) of a LoRA on
        q,k,v,o,gate,up,down with RANDOM NON-ZERO A and B (uniform, float32 values), so both the adapter
        forward and both gradients are exercised (PEFT's init has B = 0);
  reference.json     the case's LoraConfig, loss (float64 run), the tensors' index;
  target_logits_f64.f32   logits of the target rows [n_targets x vocab], float64 run stored as float32;
  lora_grads_f64.f32      dLoss/dA and dLoss/dB of every adapter (loss = mean CE over target rows), in
        batchcore's parameter order (per layer, q k v o gate up down, lora_A then lora_B) and layout
        (B of q/k with rows in the adjacent-pair RoPE order, LlamaTensorNames.permuteRoPERows).
Cases: "plain" (r 4, alpha 8), "rslora" (r 4, alpha 6, use_rslora), "pattern" (r 4, alpha 8,
rank_pattern q_proj 2 / down_proj 6, alpha_pattern k_proj 3 / up_proj 12).

--verify DIR: DIR holds what the Swift test LoRAFidelityTests writes when BATCHCORE_LORA_VERIFY_OUT=DIR:
adapter/ (bc's PEFT directory after one training step), logits.f32 (batchcore's target-row logits with
that adapter). Loads adapter/ with PeftModel.from_pretrained on the float64 base and prints max|diff| /
max|ref| of the logits; exits 1 above 1e-4.
"""
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import train_fixtures as tf  # noqa: E402

REPO = HERE.parent.parent
BASE = REPO / "Tests" / "fixtures" / "train" / "tiny_tied"
OUT = REPO / "Tests" / "fixtures" / "lora"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEED = 20261201
CASES = {
    "plain": dict(r=4, lora_alpha=8, use_rslora=False, rank_pattern={}, alpha_pattern={}),
    "rslora": dict(r=4, lora_alpha=6, use_rslora=True, rank_pattern={}, alpha_pattern={}),
    "pattern": dict(r=4, lora_alpha=8, use_rslora=False, rank_pattern={"q_proj": 2, "down_proj": 6},
                    alpha_pattern={"k_proj": 3, "up_proj": 12}),
}


def base_model(dtype):
    from safetensors.numpy import load_file
    cfg = json.loads((BASE / "config.json").read_text())
    state = load_file(str(BASE / "model.safetensors"))
    return tf.build_model(cfg, state, dtype), cfg


def batch():
    ref = json.loads((BASE / "reference.json").read_text())
    b = ref["batch"]
    docs, row = [], 0
    for L in b["doc_lengths"]:
        docs.append(b["tokens"][row:row + L])
        row += L
    return docs, b["targets"]


def forward(model, docs, targets):
    """(mean CE over target rows, target-row logits [n x vocab] float64 tensor)."""
    import torch
    dtype = next(model.parameters()).dtype
    n = sum(1 for t in targets if t >= 0)
    total, rows, row = torch.zeros((), dtype=dtype), [], 0
    for ids in docs:
        L = len(ids)
        x = torch.tensor([ids], dtype=torch.long)
        pos = torch.arange(L, dtype=torch.long)[None]
        logits = model(input_ids=x, position_ids=pos, use_cache=False).logits[0]
        tg = torch.tensor(targets[row:row + L], dtype=torch.long)
        sel = (tg >= 0).nonzero()[:, 0]
        if len(sel):
            total = total + torch.nn.functional.cross_entropy(logits[sel], tg[sel], reduction="sum")
            rows.append(logits[sel])
        row += L
    return total / n, torch.cat(rows)


def layer_order(layers):
    """(peft path, module, layer) in batchcore's parameter order."""
    out = []
    for l in range(layers):
        for m in TARGETS:
            block = "self_attn" if m in TARGETS[:4] else "mlp"
            out.append((f"base_model.model.model.layers.{l}.{block}.{m}", m, l))
    return out


def make_case(name, spec, index):
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    model, cfg = base_model(torch.float32)
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    heads = {"q_proj": cfg["num_attention_heads"], "k_proj": cfg["num_key_value_heads"]}
    lc = LoraConfig(task_type="CAUSAL_LM", target_modules=TARGETS, lora_dropout=0.0, bias="none", **spec)
    peft_model = get_peft_model(model, lc)
    rng = np.random.default_rng(SEED + index)
    mods = dict(peft_model.named_modules())
    for path, m, l in layer_order(cfg["num_hidden_layers"]):
        mod = mods[path]
        a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
        with torch.no_grad():
            a.copy_(torch.from_numpy(rng.uniform(-0.3, 0.3, size=tuple(a.shape)).astype(np.float32)))
            b.copy_(torch.from_numpy(rng.uniform(-0.1, 0.1, size=tuple(b.shape)).astype(np.float32)))
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)  # PEFT's model card: nothing batchcore reads
    (out / "adapter_model.safetensors").chmod(0o644)
    peft_model = peft_model.to(torch.float64)
    docs, targets = batch()
    loss, logits = forward(peft_model, docs, targets)
    loss.backward()
    params = dict(peft_model.named_parameters())
    grads, index_entries, off = [], [], 0
    for path, m, l in layer_order(cfg["num_hidden_layers"]):
        for part in ("lora_A", "lora_B"):
            p = params[f"{path}.{part}.default.weight"]
            g = p.grad.detach().numpy()
            if part == "lora_B" and m in heads:
                g = tf.hf_to_ours(g, heads[m], hd)
            grads.append(g.astype("<f4").ravel())
            index_entries.append({"name": f"{path}.{part}.weight", "shape": list(g.shape), "offset": off,
                                  "count": int(g.size)})
            off += g.size
    blob = np.concatenate(grads).astype("<f4").tobytes()
    (out / "lora_grads_f64.f32").write_bytes(blob)
    lg = logits.detach().numpy().astype("<f4").tobytes()
    (out / "target_logits_f64.f32").write_bytes(lg)
    ref = {
        "description": "PEFT LoRA on tiny_tied with random non-zero A and B; see tools/reference/lora_fixtures.py",
        "generator": "tools/reference/lora_fixtures.py",
        "versions": versions(),
        "base": "Tests/fixtures/train/tiny_tied",
        "case": name, "lora": spec, "seed": SEED + index,
        "loss_f64": float(loss.item()),
        "n_targets": int(sum(1 for t in targets if t >= 0)),
        "target_logits": {"shape": list(logits.shape), "file": "target_logits_f64.f32",
                          "sha256": tf.sha256_bytes(lg)},
        "grads": {"file": "lora_grads_f64.f32", "count": off, "sha256": tf.sha256_bytes(blob),
                  "layout": "batchcore parameter order; lora_B of q/k rows in the adjacent-pair RoPE order",
                  "loss": "mean CE over target rows"},
        "tensors": index_entries,
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    tf.log(f"{name}: loss {loss.item():.9f}, {off} gradient values, logits {tuple(logits.shape)}")


def versions():
    import numpy
    import peft
    import safetensors
    import torch
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__, "numpy": numpy.__version__,
            "python": ".".join(map(str, sys.version_info[:3]))}


def verify(directory):
    import numpy as np
    import torch
    from peft import PeftModel
    d = Path(directory)
    model, _ = base_model(torch.float32)
    peft_model = PeftModel.from_pretrained(model, str(d / "adapter")).to(torch.float64)
    docs, targets = batch()
    loss, logits = forward(peft_model, docs, targets)
    ref = logits.detach().numpy()
    ours = np.fromfile(d / "logits.f32", dtype="<f4").reshape(ref.shape).astype(np.float64)
    rel = tf.rel_diff(ours, ref)
    print(f"verify {d}: PEFT loss {loss.item():.9f}; batchcore logits vs PEFT: max|diff|/max|ref| = {rel:.3e}")
    return 0 if rel <= 1e-4 else 1


def main():
    tf.patch_float64()
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        sys.exit(verify(sys.argv[2]))
    for i, (name, spec) in enumerate(CASES.items()):
        make_case(name, spec, i)


if __name__ == "__main__":
    main()
