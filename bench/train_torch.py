#!/usr/bin/env python3
"""PyTorch + transformers side of the training benchmark (bench/train_bench.c is batchcore's).

The SAME weights: the default model's Q4_1 GGUF dequantized to float32 and laid out for
transformers exactly as tools/reference/train_fixtures.py does for the gradient fixtures
(gguf.quants.dequantize; q/k rows back to Hugging Face's rotate-half order), built as a
LlamaForCausalLM in float32 with eager attention. The SAME token ids as train_bench.c
(its LCG), as a batch of DOCS sequences of LEN tokens; labels = the inputs (transformers
shifts them: every position but each sequence's last is a target, as in train_bench.c).

  train_torch.py MODEL.gguf [--docs 4] [--len 256] [--steps 3] [--warmup 1]
                 [--mode train|forward] [--threads 2] [--lora R] [--compute f32|bf16]
      mode train:   loss = model(ids, labels=ids).loss; loss.backward();
                    torch.optim.AdamW (defaults: on CPU the per-tensor for-loop, neither foreach
                    nor fused) .step(); zero_grad(set_to_none=True)
      mode forward: the same loss under torch.no_grad() (model.eval())
      --lora R:     PEFT LoRA (peft.get_peft_model, LoraConfig(r=R, lora_alpha=2R,
                    lora_dropout=0, target_modules q,k,v,o,gate,up,down)): the base frozen,
                    AdamW over the adapters only (= train_bench.c --lora R)
      --compute bf16: the forward (and so its backward) under torch.autocast("cpu",
                    dtype=torch.bfloat16): matmuls in bf16, float32 weights, gradients and
                    AdamW (= train_bench.c --compute bf16)
  train_torch.py --peak [--threads 2] [--n 2048] [--reps 10]
      the sgemm peak: torch.mm of two n x n float32 matrices into a preallocated output,
      2 warm-up products, best of --reps; FLOP = 2 n^3.

Prints one machine-readable line (medians of the timed steps, CLOCK_MONOTONIC):
  RESULT impl=torch mode=.. docs=.. len=.. threads=.. lora=.. compute=.. tokens_per_s=.. sec=.. peak_rss_mib=..
         load_rss_mib=.. steps_rss_mib=.. loss=..
         loss0=.. params=.. layers=.. embd=.. times=t1,t2,.. cpu_times=c1,c2,.. (process CPU s)
  PEAK impl=torch-sgemm n=2048 threads=2 gflops=.. times=..
peak_rss_mib: the whole process's peak RSS (getrusage ru_maxrss; the model load included, whose
GGUF dequantization holds numpy and torch copies at once); load_rss_mib: VmHWM after the load;
steps_rss_mib: VmHWM over the warm-up and timed steps only (reset after the load through
/proc/self/clear_refs; the training footprint a user sees whatever the loader).
"""
import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools" / "reference"))
ADAMW_HP = {"lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}  # = train_bench.c's


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def peak_rss_mib():
    """Peak RSS of the whole process so far: getrusage's ru_maxrss (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_mib():
    """/proc/self/status VmHWM: the peak RSS since the last reset_hwm() (or the start)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_hwm():
    """Resets VmHWM to the current RSS (Linux >= 4.0: '5' > /proc/self/clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def token_ids(n, vocab):
    """train_bench.c's generator: s = s*6364136223846793005 + 1442695040888963407 (mod 2^64),
    id = ((s >> 33) mod (vocab - 1000)) + 500."""
    s, out, m = 42, [], (1 << 64) - 1
    for _ in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) & m
        out.append(((s >> 33) % (vocab - 1000)) + 500)
    return out


def load_model(path):
    """LlamaForCausalLM (float32, eager attention) from the GGUF, via train_fixtures' conversion."""
    import gguf
    import numpy as np
    import train_fixtures as tf  # noqa: E402  (the verified GGUF -> transformers layout lives there)

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
    tied = "output.weight" not in {tt.name for tt in reader.tensors}
    table = tf.tensor_table(cfg, tied)
    ours = {}
    for tt in reader.tensors:
        if tt.tensor_type == gguf.GGMLQuantizationType.F32:
            arr = np.array(tt.data, dtype=np.float32)
        else:
            arr = gguf.quants.dequantize(tt.data, tt.tensor_type).astype(np.float32)
        ours[tt.name] = arr.reshape(tuple(int(x) for x in reversed(tt.shape.tolist())))
    state_hf = {h: tf.ours_to_hf(ours.pop(g), heads, hd) for g, h, s, heads in table}
    del reader
    import torch
    model = tf.build_model(tf.hf_config(cfg, tied), state_hf, torch.float32)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    return model, cfg


def run_peak(a):
    import torch
    torch.set_num_threads(a.threads)
    n = a.n
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, n, generator=g, dtype=torch.float32)
    y = torch.rand(n, n, generator=g, dtype=torch.float32)
    out = torch.empty(n, n, dtype=torch.float32)
    for _ in range(2):
        torch.mm(x, y, out=out)
    times = []
    for _ in range(a.reps):
        t0 = now()
        torch.mm(x, y, out=out)
        times.append(now() - t0)
    best = min(times)
    print(f"PEAK impl=torch-sgemm n={n} threads={a.threads} gflops={2.0 * n ** 3 / best / 1e9:.2f} "
          f"times={','.join(f'{t:.4f}' for t in times)}", flush=True)


def run_model(a):
    import torch
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model, cfg = load_model(a.model)
    n = a.docs * a.len
    ids = torch.tensor(token_ids(n, cfg["vocab"]), dtype=torch.long).view(a.docs, a.len)
    params = sum(p.numel() for p in model.parameters())  # tied head counted once
    train = a.mode == "train"
    if a.lora:
        import peft
        lc = peft.LoraConfig(r=a.lora, lora_alpha=2 * a.lora, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = peft.get_peft_model(model, lc)
        print(f"# peft {peft.__version__}: trainable {sum(p.numel() for p in model.parameters() if p.requires_grad)}",
              flush=True)
    if train:
        model.train()
        # foreach=None, fused=None: torch's defaults, which on CPU are the per-tensor for-loop
        # (torch.optim picks foreach only for CUDA/XPU tensors); ~0.3 s of a multi-second step.
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **ADAMW_HP)
    else:
        model.eval()
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, attn {model.config._attn_implementation}, "
          f"params {params}", flush=True)
    import contextlib

    def autocast():
        # --compute bf16: PyTorch's CPU mixed precision (autocast: matmuls in bf16, float32
        # master weights and optimizer), the counterpart of train_bench --compute bf16.
        return torch.autocast("cpu", dtype=torch.bfloat16) if a.compute == "bf16" else contextlib.nullcontext()

    import gc
    gc.collect()
    load_rss = vm_hwm_mib()
    steps_rss_ok = reset_hwm()
    times, cpus, loss0, loss = [], [], None, float("nan")
    for i in range(a.warmup + a.steps):
        t0, c0 = now(), time.process_time()
        if train:
            with autocast():
                out = model(input_ids=ids, labels=ids, use_cache=False)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), autocast():
                out = model(input_ids=ids, labels=ids, use_cache=False)
        loss = float(out.loss.detach())
        del out
        dt, dc = now() - t0, time.process_time() - c0
        if loss0 is None:
            loss0 = loss
        if i >= a.warmup:
            times.append(dt)
            cpus.append(dc)
        print(f"# step {i}: {dt:.2f} s, loss {loss:.4f}", file=sys.stderr, flush=True)
    med = statistics.median(times)
    steps_rss = vm_hwm_mib() if steps_rss_ok else float("nan")
    print(f"RESULT impl=torch mode={a.mode} docs={a.docs} len={a.len} threads={a.threads} lora={a.lora} compute={a.compute} "
          f"tokens_per_s={n / med:.2f} sec={med:.3f} peak_rss_mib={max(peak_rss_mib(), load_rss):.0f} "
          f"load_rss_mib={load_rss:.0f} steps_rss_mib={steps_rss:.0f} loss={loss:.4f} "
          f"loss0={loss0:.4f} params={params} layers={cfg['layers']} embd={cfg['hidden']} "
          f"times={','.join(f'{t:.3f}' for t in times)} cpu_times={','.join(f'{t:.3f}' for t in cpus)}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--peak", action="store_true")
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--mode", choices=("train", "forward"), default="train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora", type=int, default=0)
    ap.add_argument("--compute", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    if a.threads < 1:
        sys.exit("--threads must be >= 1")
    if a.peak:
        run_peak(a)
        return
    if not a.model or not os.path.exists(a.model):
        sys.exit("train_torch.py: MODEL.gguf is required (tools/fetch-model.sh prints its path)")
    if a.docs < 1 or a.len < 2 or a.steps < 1 or a.warmup < 0:
        sys.exit("train_torch.py: bad sizes")
    run_model(a)


if __name__ == "__main__":
    main()
