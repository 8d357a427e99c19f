#!/usr/bin/env python3
"""ggml's own float operations of llama.cpp's forward as fixtures (issue #15): Tests/fixtures/llama/ops/.

    /work/venv-llama/bin/python tools/reference/ggml_ops_fixtures.py

ONE-OFF generator (outputs committed; CI only reads them). Builds tiny ggml graphs through ctypes
against the libggml-base.so / libggml-cpu.so that llama-cpp-python 0.3.36 ships (built for this
x86-64 machine: AVX-512), computes them on 1 thread with ggml_graph_compute_with_ctx (the CPU
backend's own kernels, the ones llama.cpp's graph runs), and writes inputs and outputs as raw
little-endian float32 (shapes below, row-major = ggml's ne0 fastest):

  rms.f32      x [8 x 576] then y = ggml_mul(ggml_rms_norm(x, 1e-5), w) [8 x 576], w [576] first
  rope.f32     positions P = 10 (see POS); x [P x 3 x 64] then ggml_rope_ext(mode 0 = llama's
               "normal" pairs, n_dims 64, base 100000, no scaling) [P x 3 x 64]
  swiglu.f32   gate [4 x 1536], up [4 x 1536], ggml_swiglu_split(gate, up) [4 x 1536]
  attn.f32     per length L in LENGTHS: q [64], k [L x 64], v [L x 64], out [64] = mul_mat(vᵀ, soft_max_ext(mul_mat(k, q), mask, 1/8)) where the
               mask is 0 below L and -inf from L on, k and v zero from L on: llama.cpp's decode
               attention of one head over a KV cache of 256 cells (its padding of n_kv) without
               flash attention (one query row: both products run ggml_vec_dot_f32).
  softmax.f32  per length L: the probabilities [256] of that chain (L nonzero)
"""
import ctypes
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "Tests" / "fixtures" / "llama" / "ops"
F32, I32 = 0, 26
POS = [0, 1, 2, 3, 17, 100, 511, 1000, 4095, 8191]
LENGTHS = [1, 2, 3, 4, 5, 16, 17, 63, 64, 65, 100, 130]
NKV, HD = 256, 64


class InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def main():
    import llama_cpp
    lib = Path(llama_cpp.__file__).parent / "lib"
    g = ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    P, i64, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    sig = {
        "ggml_init": (P, [InitParams]), "ggml_free": (None, [P]),
        "ggml_new_tensor_1d": (P, [P, ctypes.c_int, i64]), "ggml_new_tensor_2d": (P, [P, ctypes.c_int, i64, i64]),
        "ggml_new_tensor_3d": (P, [P, ctypes.c_int, i64, i64, i64]), "ggml_get_data": (P, [P]),
        "ggml_rms_norm": (P, [P, P, f]), "ggml_mul": (P, [P, P, P]), "ggml_mul_mat": (P, [P, P, P]),
        "ggml_rope_ext": (P, [P, P, P, P, ctypes.c_int, ctypes.c_int, ctypes.c_int, f, f, f, f, f, f]),
        "ggml_soft_max_ext": (P, [P, P, P, f, f]), "ggml_swiglu_split": (P, [P, P, P]),
        "ggml_new_graph": (P, [P]), "ggml_build_forward_expand": (None, [P, P]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(g, name)
        fn.restype, fn.argtypes = res, args
    cpu.ggml_graph_compute_with_ctx.restype = ctypes.c_int
    cpu.ggml_graph_compute_with_ctx.argtypes = [P, P, ctypes.c_int]
    cpu.ggml_cpu_init()

    def tensor(ctx, arr, typ=F32):
        arr = np.ascontiguousarray(arr)
        shape = arr.shape[::-1]  # ggml ne0 = last numpy axis
        t = [g.ggml_new_tensor_1d, g.ggml_new_tensor_2d, g.ggml_new_tensor_3d][len(shape) - 1](ctx, typ, *shape)
        ctypes.memmove(g.ggml_get_data(t), arr.ctypes.data, arr.nbytes)
        return t

    def run(build, out_shape):
        ctx = g.ggml_init(InitParams(256 << 20, None, False))
        out = build(ctx)
        gr = g.ggml_new_graph(ctx)
        g.ggml_build_forward_expand(gr, out)
        assert cpu.ggml_graph_compute_with_ctx(ctx, gr, 1) == 0
        res = np.zeros(out_shape, dtype=np.float32)
        ctypes.memmove(res.ctypes.data, g.ggml_get_data(out), res.nbytes)
        g.ggml_free(ctx)
        return res

    rng = np.random.default_rng(20261130)
    OUT.mkdir(parents=True, exist_ok=True)

    x = (rng.standard_normal((8, 576)) * rng.uniform(0.05, 20, size=(8, 1))).astype(np.float32)
    w = rng.uniform(0.2, 2.0, size=576).astype(np.float32)
    y = run(lambda c: g.ggml_mul(c, g.ggml_rms_norm(c, tensor(c, x), 1e-5), tensor(c, w)), x.shape)
    np.concatenate([w, x.ravel(), y.ravel()]).astype("<f4").tofile(OUT / "rms.f32")

    xr = rng.uniform(-2, 2, size=(len(POS), 3, HD)).astype(np.float32)
    pos = np.array(POS, dtype=np.int32)
    yr = run(lambda c: g.ggml_rope_ext(c, tensor(c, xr), tensor(c, pos, I32), None, HD, 0, 8192,
                                       100000.0, 1.0, 0.0, 1.0, 32.0, 1.0), xr.shape)
    np.concatenate([xr.ravel(), yr.ravel()]).astype("<f4").tofile(OUT / "rope.f32")

    gate = rng.uniform(-12, 12, size=(4, 1536)).astype(np.float32)
    gate[0, :16] = [-120, -104, -103, -100, -95, -90, -88, -87.5, -87, -80, 80, 88, 88.5, 89, 100, 0]
    up = rng.standard_normal((4, 1536)).astype(np.float32)
    act = run(lambda c: g.ggml_swiglu_split(c, tensor(c, gate), tensor(c, up)), gate.shape)
    np.concatenate([gate.ravel(), up.ravel(), act.ravel()]).astype("<f4").tofile(OUT / "swiglu.f32")

    attn, probs = [], []
    for L in LENGTHS:
        q = (rng.standard_normal(HD) * 2).astype(np.float32)
        k = (rng.standard_normal((NKV, HD)) * 2).astype(np.float32)
        v = rng.standard_normal((NKV, HD)).astype(np.float32)
        k[L:] = 0
        v[L:] = 0
        mask = np.where(np.arange(NKV) < L, 0, -np.inf).astype(np.float32)[None, :]
        q2 = q[None, :]
        p = run(lambda c: g.ggml_soft_max_ext(c, g.ggml_mul_mat(c, tensor(c, k), tensor(c, q2)),
                                              tensor(c, mask), 0.125, 0.0), (1, NKV))
        o = run(lambda c: g.ggml_mul_mat(c, tensor(c, np.ascontiguousarray(v.T)), g.ggml_soft_max_ext(
            c, g.ggml_mul_mat(c, tensor(c, k), tensor(c, q2)), tensor(c, mask), 0.125, 0.0)), (1, HD))
        attn.append(np.concatenate([q, k[:L].ravel(), v[:L].ravel(), o.ravel()]))
        probs.append(p.ravel())
    np.concatenate(attn).astype("<f4").tofile(OUT / "attn.f32")
    np.concatenate(probs).astype("<f4").tofile(OUT / "softmax.f32")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
