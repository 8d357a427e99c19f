#!/usr/bin/env python3
"""PyTorch CPU reference for bench/optim_bench.c: the same tensor mix, sizes,
hyperparameters and timing (2 warmup steps, median of >= 7 timed steps,
CLOCK_MONOTONIC), printing the same RESULT lines.

Variants (impl=):
  torch-fused    AdamW / SGD with fused=True (skipped if unsupported on this build)
  torch-foreach  foreach=True
  torch-forloop  foreach=False (torch's _single_tensor_* path)
torch never checks gradients for NaN/Inf, so every row is check=0.

usage: optim_torch.py [--quick] [--sizes 10M,30M,100M] [--threads 1,2]
                      [--algos adamw,sgd] [--impls fused,foreach,forloop]
                      [--steps 9] [--warmup 2]
"""
import argparse
import gc
import math
import statistics
import sys
import time

import torch

BYTES = {"adamw": 28, "sgd": 16}  # AdamW: read p,g,m,v; write p,m,v. SGD-momentum: read p,g,buf; write p,buf.


def parse_size(s):
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}
    s = s.strip()
    if s and s[-1].lower() in mult:
        return int(float(s[:-1]) * mult[s[-1].lower()] + 0.5)
    return int(float(s))


def make_mix(n):
    """Mirror of make_mix() in optim_bench.c: list of (rows, cols) shapes totalling n."""
    d = int(math.sqrt(0.875 * n / 96.0) / 64.0 + 0.5) * 64
    d = max(d, 64)
    shapes = []
    left = n
    emb = n // 8
    if emb > 0:
        shapes.append((emb // d, d) if emb % d == 0 else (emb,))
    left -= emb
    block = 12 * d * d + 13 * d
    layers = 0
    while left - block >= 2 * d + 1:
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,), (d,), (d,)]
        left -= block
        layers += 1
    if left >= 2 * d + 1:
        shapes += [(d,), (d,)]
        left -= 2 * d
    if left > 0:
        shapes.append((left,))
    counts = [math.prod(s) for s in shapes]
    assert sum(counts) == n, "tensor mix does not add up"
    small = sum(1 for c in counts if c < 65536)
    print(f"MIX n={n} tensors={len(shapes)} d={d} layers={layers} largest={max(counts)} "
          f"smallest={min(counts)} small_tensors={small}", flush=True)
    return shapes


def make_tensors(shapes, seed):
    """Random non-zero params in ±[1e-3, 0.1) and grads in ±[1e-4, 1e-2)."""
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.empty(shape, dtype=torch.float32)
        p.uniform_(1e-3, 0.1, generator=g)
        p.mul_(torch.randint(0, 2, shape, generator=g, dtype=torch.int8).mul_(2).sub_(1))
        gr = torch.empty(shape, dtype=torch.float32)
        gr.uniform_(1e-4, 1e-2, generator=g)
        gr.mul_(torch.randint(0, 2, shape, generator=g, dtype=torch.int8).mul_(2).sub_(1))
        p = torch.nn.Parameter(p)
        p.grad = gr
        params.append(p)
    return params


def make_optimizer(algo, impl, params):
    kw = {}
    if impl == "fused":
        kw["fused"] = True
    elif impl == "foreach":
        kw["foreach"] = True
    else:
        kw["foreach"] = False
    if algo == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **kw)
    return torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=0.0, **kw)


def fused_supported(algo):
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4)
    try:
        make_optimizer(algo, "fused", [p]).step()
        return True
    except (RuntimeError, ValueError, TypeError) as e:
        print(f"# torch {algo} fused=True unsupported on CPU: {e}", flush=True)
        return False


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default=None)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--algos", default="adamw,sgd")
    ap.add_argument("--impls", default="fused,foreach,forloop")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    if a.steps < 7:
        sys.exit("--steps must be >= 7")
    sizes = [parse_size(s) for s in (a.sizes or ("1M,10M" if a.quick else "10M,30M,100M")).split(",")]
    threads = [int(t) for t in a.threads.split(",")]
    algos = a.algos.split(",")
    impls = a.impls.split(",")

    print(f"# torch {torch.__version__}; {torch.__config__.parallel_info().splitlines()[0]}; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}", flush=True)
    print(f"# warmup {a.warmup} steps, median of {a.steps} timed steps (CLOCK_MONOTONIC); "
          f"bytes moved per param: adamw=28, sgd=16", flush=True)
    fused_ok = {algo: fused_supported(algo) for algo in algos}

    for n in sizes:
        shapes = make_mix(n)
        for algo in algos:
            for impl in impls:
                if impl == "fused" and not fused_ok[algo]:
                    continue
                params = make_tensors(shapes, seed=1234)
                opt = make_optimizer(algo, impl, params)
                for T in threads:
                    torch.set_num_threads(T)
                    with torch.no_grad():
                        for _ in range(a.warmup):
                            opt.step()
                        times = []
                        for _ in range(a.steps):
                            t0 = now()
                            opt.step()
                            times.append(now() - t0)
                    med = statistics.median(times)
                    pps = n / med
                    gbps = pps * BYTES[algo] / 1e9
                    print(f"RESULT impl=torch-{impl} algo={algo} n={n} threads={T} check=0 "
                          f"bytes_per_param={BYTES[algo]} sec={med:.6f} min_sec={min(times):.6f} "
                          f"max_sec={max(times):.6f} params_per_s={pps:.4e} gbps={gbps:.2f}", flush=True)
                bad = sum(int(not torch.isfinite(p).all()) for p in params)
                if bad:
                    sys.exit(f"torch {impl} {algo}: {bad} tensors became non-finite")
                del opt, params
                gc.collect()


if __name__ == "__main__":
    main()
