#!/usr/bin/env python3
"""Generate optimizer reference fixtures for batchcore: Tests/fixtures/optim/<name>.json.

Run from the repository root:  python3 tools/reference/optim_fixtures.py
Requires: numpy, torch 2.13.0+cpu (CPU wheel), timm (installed with `pip install --no-deps timm`;
only timm/optim/{lamb,lion,_helpers,_types}.py are loaded, by file, so torchvision is NOT needed).

Every run draws a fresh random seed (secrets.randbits(53)); the seed is stored in each fixture and the
inputs are a pure function of it (splitmix64, see README.md next to the fixtures), so the Swift side
regenerates the exact same initial parameters and gradients.

Per case (state = seed):
  1. params: for each tensor in order (group 0's tensors, then group 1's, ...), each element p = uniform()
  2. for t in 1..steps: apply lr_changes for step t; for each tensor in the same order, each element:
       u = uniform(); g = f32(f32(p*0.5) + f32(u*scale_i))   (p = current value before this step)
     then one optimizer.step() over all tensors.
  Checkpoints store the params after steps 1, 2, 10, 100, 200.

All torch optimizers use foreach=False (the `_single_tensor_*` code paths), torch.set_num_threads(1).

Adaptive Braking (algorithm "adabrake")
---------------------------------------
Venigalla, Kosson, Chiley, Koster, "Adaptive Braking for Mitigating Gradient Delay", arXiv:2007.01397.
The paper's abstract: "AB dynamically scales the gradient based on the alignment of the gradient and the
velocity", applied on top of SGD with momentum. The rule implemented here (per parameter tensor = layer):

    g_t   = grad_t + weight_decay * w_t                      (L2 weight decay, torch-SGD style)
    c_t   = cos(g_t, v_{t-1}) = <g_t, v_{t-1}> / (||g_t|| * ||v_{t-1}||),  c_t := 0 if either norm is 0
    g'_t  = (1 - alpha * c_t) * g_t                           (braking: gradient scaled by 1 - alpha*cos)
    v_t   = momentum * v_{t-1} + g'_t                          (v_0 = 0, so v_1 = g_1 exactly)
    w_t+1 = w_t - lr * v_t

NOTE: only the paper's abstract/first page could be retrieved when this script was written; the
equation above (gradient scaled by rho = 1 - alpha*cos(g, v), per layer, velocity = SGDM buffer before
this step) is our reading of the method and is what the fixtures encode. The float32 op sequence is in
`AdaBrake.step` below and in README.md.
"""
import importlib.util
import json
import math
import os
import secrets
import sys
import types
import warnings

import numpy as np
import torch

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
STEPS = 200
CHECKPOINTS = [1, 2, 10, 100, 200]
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO, "Tests", "fixtures", "optim")


# ----------------------------------------------------------------------------------------------
# PRNG: splitmix64, vectorised. k-th draw (k = 1, 2, ...) mixes seed + k*golden (mod 2^64).
# ----------------------------------------------------------------------------------------------
class SplitMix64:
    def __init__(self, seed):
        self.seed = np.uint64(seed)
        self.k = 0  # draws made so far

    def next_u64(self, n):
        with np.errstate(over="ignore"):
            ks = np.arange(self.k + 1, self.k + 1 + n, dtype=np.uint64)
            z = self.seed + ks * GOLDEN
            z = (z ^ (z >> np.uint64(30))) * M1
            z = (z ^ (z >> np.uint64(27))) * M2
            z = z ^ (z >> np.uint64(31))
        self.k += n
        return z

    def uniform(self, n):
        z = self.next_u64(n)
        hi = (z >> np.uint64(40)).astype(np.float32)  # < 2^24: exact
        return hi * np.float32(2.0 ** -23) - np.float32(1.0)


def _selftest_prng():
    # scalar reference implementation (Python ints) vs the vectorised one
    s = 0x0123456789ABCDEF
    r = SplitMix64(s)
    v = r.next_u64(3)
    st = s
    mask = (1 << 64) - 1
    for i in range(3):
        st = (st + 0x9E3779B97F4A7C15) & mask
        z = st
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z = z ^ (z >> 31)
        assert int(v[i]) == z, (i, int(v[i]), z)
    # splitmix64 with seed 0: well-known first output
    assert int(SplitMix64(0).next_u64(1)[0]) == 0xE220A8397B1DCDAF


# ----------------------------------------------------------------------------------------------
# timm Lamb / Lion, loaded by file so that timm/__init__ (which imports torchvision) is not run.
# ----------------------------------------------------------------------------------------------
def _load_timm_optim():
    import importlib.metadata as md
    spec = importlib.util.find_spec("timm")
    if spec is None:
        raise SystemExit("timm is not installed: pip install --no-deps timm")
    timm_dir = list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType("timm")
    pkg.__path__ = [timm_dir]
    sub = types.ModuleType("timm.optim")
    sub.__path__ = [os.path.join(timm_dir, "optim")]
    sys.modules.setdefault("timm", pkg)
    sys.modules.setdefault("timm.optim", sub)
    mods = {}
    for name in ("_types", "_helpers", "lamb", "lion"):
        full = "timm.optim." + name
        s = importlib.util.spec_from_file_location(full, os.path.join(timm_dir, "optim", name + ".py"))
        m = importlib.util.module_from_spec(s)
        sys.modules[full] = m
        s.loader.exec_module(m)
        mods[name] = m
    return mods["lamb"].Lamb, mods["lion"].Lion, md.version("timm")


# ----------------------------------------------------------------------------------------------
# Adaptive Braking on SGD-momentum (see module docstring).
# ----------------------------------------------------------------------------------------------
class AdaBrake(torch.optim.Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0, alpha=2.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, alpha=alpha))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mom, wd, alpha = group["lr"], group["momentum"], group["weight_decay"], group["alpha"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    g = g.add(p, alpha=wd)                     # g = fma(wd_f32, p, grad)
                st = self.state[p]
                if "velocity" not in st:
                    st["velocity"] = torch.zeros_like(p)
                v = st["velocity"]
                gn = torch.linalg.vector_norm(g)               # float32 0-dim
                vn = torch.linalg.vector_norm(v)               # float32 0-dim
                if gn.item() > 0 and vn.item() > 0:
                    cos = torch.sum(g * v) / (gn * vn)         # float32: dot / f32(gn*vn)
                else:
                    cos = torch.zeros((), dtype=p.dtype)
                scale = 1.0 - alpha * cos                      # float32: 1 - f32(alpha)*cos (2 roundings)
                v.mul_(mom).add_(g * scale)                    # v = fma(1, g*scale, f32(v*mom))
                p.add_(v, alpha=-lr)                           # p = fma(-lr_f32, v, p)


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------
def G(hyper, sizes, scales):
    return {"hyper": hyper, "sizes": sizes, "scales": [float(np.float32(s)) for s in scales]}


S6 = [1, 7, 16, 33, 255, 1031]
SC6 = [1.0, 0.5, 0.25, 2.0, 0.1, 1.5]
S4 = [3, 17, 64, 513]
SC4 = [0.75, 1.25, 0.3, 1.0]


def sgd_h(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    return dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                nesterov=nesterov, maximize=maximize)


def adam_h(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False):
    return dict(lr=lr, betas=list(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)


def adagrad_h(lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False):
    return dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)


def rms_h(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False):
    return dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                centered=centered, maximize=maximize)


def lamb_h(lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, grad_averaging=True,
           max_grad_norm=1.0, trust_clip=False, always_adapt=False):
    return dict(lr=lr, bias_correction=bias_correction, betas=list(betas), eps=eps, weight_decay=weight_decay,
                grad_averaging=grad_averaging, max_grad_norm=max_grad_norm, trust_clip=trust_clip,
                always_adapt=always_adapt, caution=False, decoupled_decay=False, corrected_weight_decay=False)


def lion_h(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
    return dict(lr=lr, betas=list(betas), weight_decay=weight_decay, caution=False,
                corrected_weight_decay=False, maximize=False)


def ab_h(lr=0.01, momentum=0.9, weight_decay=0.0, alpha=2.0):
    return dict(lr=lr, momentum=momentum, weight_decay=weight_decay, alpha=alpha)


CASES = [
    # name, algorithm, groups, lr_changes
    ("sgd_plain", "sgd", [G(sgd_h(0.1), S6, SC6)], []),
    ("sgd_momentum_dampening_wd", "sgd", [G(sgd_h(0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2), S6, SC6)], []),
    ("sgd_nesterov_wd", "sgd", [G(sgd_h(0.05, momentum=0.9, dampening=0.0, weight_decay=1e-2, nesterov=True), S6, SC6),
                                G(sgd_h(0.02, momentum=0.5, weight_decay=0.0, nesterov=True), S4, SC4)], [[100, 0, 0.01]]),
    ("sgd_maximize", "sgd", [G(sgd_h(0.002, momentum=0.9, maximize=True), S6, SC6)], []),
    ("adam_default", "adam", [G(adam_h(1e-3), S6, SC6)], []),
    ("adam_amsgrad", "adam", [G(adam_h(1e-2, betas=(0.9, 0.99), amsgrad=True), S6, SC6)], []),
    ("adam_l2_wd", "adam", [G(adam_h(1e-3, weight_decay=1e-2), S6, SC6)], []),
    ("adam_two_groups", "adam", [G(adam_h(1e-3), S6, SC6),
                                 G(adam_h(3e-3, betas=(0.8, 0.95), eps=1e-6), S4, SC4)], [[100, 1, 5e-4], [100, 0, 2e-3]]),
    ("adamw_wd", "adamw", [G(adam_h(1e-3, weight_decay=1e-2), S6, SC6)], []),
    ("adamw_amsgrad_wd", "adamw", [G(adam_h(1e-2, weight_decay=0.1, amsgrad=True), S6, SC6)], []),
    ("adamw_maximize", "adamw", [G(adam_h(1e-3, weight_decay=1e-2, maximize=True), S6, SC6)], []),
    ("adagrad_lrdecay_init_wd", "adagrad", [G(adagrad_h(0.1, lr_decay=1e-3, weight_decay=1e-2,
                                                       initial_accumulator_value=0.1), S6, SC6)], []),
    ("adagrad_plain", "adagrad", [G(adagrad_h(0.05), S6, SC6)], []),
    ("rmsprop_plain", "rmsprop", [G(rms_h(0.01, alpha=0.99), S6, SC6)], []),
    ("rmsprop_centered_momentum_wd", "rmsprop", [G(rms_h(0.001, alpha=0.9, momentum=0.9, centered=True,
                                                        weight_decay=1e-2), S6, SC6)], []),
    ("lamb_default", "lamb", [G(lamb_h(), S6, SC6)], []),
    ("lamb_wd0_grad_averaging", "lamb", [G(lamb_h(lr=1e-2, weight_decay=0.0, grad_averaging=True), S6, SC6)], []),
    ("lamb_always_adapt_noclip", "lamb", [G(lamb_h(lr=1e-2, weight_decay=0.0, always_adapt=True, max_grad_norm=None,
                                                   grad_averaging=False), S6, SC6),
                                          G(lamb_h(lr=5e-3, weight_decay=0.05, always_adapt=True, max_grad_norm=None,
                                                   grad_averaging=False, betas=(0.8, 0.99)), S4, SC4)], [[100, 0, 2e-3]]),
    ("lamb_trustclip_clip5", "lamb", [G(lamb_h(lr=2e-2, weight_decay=0.01, trust_clip=True, max_grad_norm=5.0), S6, SC6)], []),
    ("lion_default_wd", "lion", [G(lion_h(1e-4, betas=(0.9, 0.99), weight_decay=0.01), S6, SC6)], []),
    ("lion_betas_lr", "lion", [G(lion_h(3e-3, betas=(0.95, 0.98), weight_decay=0.1), S6, SC6),
                               G(lion_h(1e-3, betas=(0.9, 0.99), weight_decay=0.0), S4, SC4)], [[100, 0, 1e-3]]),
    ("adabrake_alpha05", "adabrake", [G(ab_h(0.05, momentum=0.9, weight_decay=0.0, alpha=0.5), S6, SC6)], []),
    ("adabrake_alpha1_wd", "adabrake", [G(ab_h(0.02, momentum=0.95, weight_decay=1e-2, alpha=1.0), S6, SC6),
                                        G(ab_h(0.01, momentum=0.9, weight_decay=0.0, alpha=0.5), S4, SC4)], [[100, 1, 0.005]]),
]

LAMB_RULE = (
    "timm.optim.lamb.Lamb {tv} (_single_tensor_lamb, foreach=False; NVIDIA FusedLAMB-like). Rule: "
    "global clip c = max(1, ||[||g_i||_2 for all tensors of ALL groups]||_2 / max_grad_norm) (max_grad_norm is read "
    "from the constructor defaults = group 0; None disables); g = grad / c; "
    "m = lerp(m, g, 1-b1) if grad_averaging else m*b1 + g; v = v*b2 + (1-b2)*g*g; "
    "bc1 = 1-b1^t, bc2 = 1-b2^t (1 if bias_correction False); u = (m/bc1) / (sqrt(v)/sqrt(bc2) + eps); "
    "if wd != 0: u += wd*p (L2 into the update, decoupled_decay False); "
    "if wd != 0 or always_adapt: r = ||p||/||u|| if ||p||>0 and ||u||>0 else 1, r = min(r,1) if trust_clip; u *= r; "
    "p -= lr*u. Step counter t is per group, starts at 1. See README.md."
)
LION_RULE = (
    "timm.optim.lion.Lion {tv} (_single_tensor_lion, foreach=False). Rule: p *= (1 - lr*wd) [decoupled]; "
    "u = sign(lerp(m, g, 1-b1)) (sign(0)=0); p -= lr*u; m = lerp(m, g, 1-b2). See README.md."
)
AB_RULE = (
    "tools/reference/optim_fixtures.py AdaBrake (torch {tv} float32 ops): Adaptive Braking on SGD-momentum, "
    "Venigalla et al. arXiv:2007.01397, per tensor: g = grad + wd*p; c = <g,v>/(||g||*||v||) (0 if a norm is 0); "
    "g' = (1 - alpha*c)*g; v = momentum*v + g'; p -= lr*v (v starts at 0). See README.md."
)


def build_opt(algo, groups, params_per_group, timm_cls):
    pg = []
    for gi, g in enumerate(groups):
        d = dict(g["hyper"])
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        d["params"] = params_per_group[gi]
        pg.append(d)
    h0 = {k: (tuple(v) if k == "betas" else v) for k, v in groups[0]["hyper"].items()}
    if algo == "sgd":
        return torch.optim.SGD(pg, foreach=False, **h0), f"torch.optim.SGD {torch.__version__} (foreach=False, _single_tensor_sgd)"
    if algo == "adam":
        return torch.optim.Adam(pg, foreach=False, **h0), f"torch.optim.Adam {torch.__version__} (foreach=False, _single_tensor_adam)"
    if algo == "adamw":
        return torch.optim.AdamW(pg, foreach=False, **h0), f"torch.optim.AdamW {torch.__version__} (foreach=False, _single_tensor_adam, decoupled_weight_decay=True)"
    if algo == "adagrad":
        return torch.optim.Adagrad(pg, foreach=False, **h0), f"torch.optim.Adagrad {torch.__version__} (foreach=False, _single_tensor_adagrad)"
    if algo == "rmsprop":
        return torch.optim.RMSprop(pg, foreach=False, **h0), f"torch.optim.RMSprop {torch.__version__} (foreach=False, _single_tensor_rmsprop)"
    Lamb, Lion, tv = timm_cls
    if algo == "lamb":
        return Lamb(pg, foreach=False, **h0), LAMB_RULE.format(tv=tv)
    if algo == "lion":
        return Lion(pg, foreach=False, **h0), LION_RULE.format(tv=tv)
    if algo == "adabrake":
        return AdaBrake(pg, **h0), AB_RULE.format(tv=torch.__version__)
    raise ValueError(algo)


def fmt(x):
    return repr(float(np.float32(x)))


def run_case(name, algo, groups, lr_changes, timm_cls, seed):
    # Python lists of float32 arrays for the params, in order
    rng = SplitMix64(seed)
    sizes = [n for g in groups for n in g["sizes"]]
    scales = [np.float32(s) for g in groups for s in g["scales"]]
    tensors = [torch.nn.Parameter(torch.from_numpy(rng.uniform(n).copy())) for n in sizes]
    per_group, i = [], 0
    for g in groups:
        per_group.append(tensors[i:i + len(g["sizes"])])
        i += len(g["sizes"])
    opt, reference = build_opt(algo, groups, per_group, timm_cls)
    changes = {}
    for st, gi, lr in lr_changes:
        changes.setdefault(st, []).append((gi, lr))
    half = np.float32(0.5)
    ckpts = {}
    for t in range(1, STEPS + 1):
        for gi, lr in changes.get(t, []):
            opt.param_groups[gi]["lr"] = lr
        for p, sc, n in zip(tensors, scales, sizes):
            u = rng.uniform(n)
            pv = p.detach().numpy()
            a = pv * half
            b = u * sc
            p.grad = torch.from_numpy((a + b).astype(np.float32))
        opt.step()
        if t in CHECKPOINTS:
            ckpts[str(t)] = [p.detach().numpy().copy() for p in tensors]
    for k, arrs in ckpts.items():
        for arr in arrs:
            if not np.all(np.isfinite(arr)):
                raise RuntimeError(f"{name}: non-finite params at step {k}")
    return reference, ckpts


def write_fixture(path, obj, ckpts):
    # hand-rolled JSON so that floats use the float32 shortest-repr rule
    head = json.dumps({k: obj[k] for k in ("name", "algorithm", "reference", "seed", "steps", "groups", "lr_changes")},
                      indent=1)
    assert head.endswith("\n}")
    parts = []
    for k in sorted(ckpts, key=int):
        rows = ",\n  ".join("[" + ",".join(fmt(x) for x in arr) + "]" for arr in ckpts[k])
        parts.append(f' "{k}": [\n  {rows}\n ]')
    text = head[:-2] + ',\n "checkpoints": {\n' + ",\n".join(parts) + "\n }\n}\n"
    json.loads(text)  # sanity
    with open(path, "w") as f:
        f.write(text)
    return len(text)


def main():
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    _selftest_prng()
    timm_cls = _load_timm_optim()
    os.makedirs(OUT_DIR, exist_ok=True)
    only = set(sys.argv[1:])
    for name, algo, groups, lr_changes in CASES:
        if only and name not in only:
            continue
        seed = secrets.randbits(53)
        reference, ckpts = run_case(name, algo, groups, lr_changes, timm_cls, seed)
        obj = dict(name=name, algorithm=algo, reference=reference, seed=seed, steps=STEPS, groups=groups,
                   lr_changes=[[int(s), int(g), float(lr)] for s, g, lr in lr_changes])
        size = write_fixture(os.path.join(OUT_DIR, name + ".json"), obj, ckpts)
        if size >= 400_000:
            raise RuntimeError(f"{name}: fixture too large ({size} bytes)")
        print(f"{name:32s} {algo:8s} seed={seed:<17d} {size/1024:7.1f} KiB")


if __name__ == "__main__":
    main()
