#!/usr/bin/env python3
"""ggml's own quantized dot products as fixtures (issue #15): Tests/fixtures/llama/quant/vecdot/.

    /work/venv-llama/bin/python tools/reference/ggml_vecdot_fixtures.py

ONE-OFF generator (outputs committed; CI only reads them). Calls the libggml-cpu.so that
llama-cpp-python 0.3.36 ships (llama_cpp/lib, built for this x86-64 machine with AVX2/AVX-512)
through ctypes, no model and no network:
  * x.f32: T = 16 activation rows of N = 512 float32 values, per block of 32 a magnitude between
    3e-3 and 3 (some blocks 1e-7 times smaller, so ggml's f16 block scale is subnormal or 0);
  * for each weight type, <TYPE>.bin: R = 16 rows quantized by ggml_quantize_chunk from random
    weights (|w| < 0.1), and <TYPE>.f32: the R x T results [t][r] of the type's CPU traits
    (ggml_get_type_traits_cpu): from_float (quantize_row_q8_0 / q8_1 / q8_K of the activation row)
    then vec_dot (ggml_vec_dot_<type>_<q8 type>, nrc 1) of weight row r with it.
QuantGgmlBitTests multiplies the same rows with QuantGEMM and compares (bit for bit for the
32-value formats). These are ggml's per-row vec_dot kernels; llama.cpp's graph may instead use its
repacked Q4_0/Q4_K gemv/gemm or llamafile's sgemm for some shapes (other float summation orders).
"""
import ctypes
import struct
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "Tests" / "fixtures" / "llama" / "quant" / "vecdot"
N, R, T = 512, 16, 16
TYPES = {"Q8_0": 8, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
# bytes per block, values per block (ggml-common.h)
LAYOUT = {"Q8_0": (34, 32), "Q4_0": (18, 32), "Q4_1": (20, 32), "Q5_0": (22, 32), "Q5_1": (24, 32),
          "Q4_K": (144, 256), "Q5_K": (176, 256), "Q6_K": (210, 256)}
ACT_BYTES = {8: (34, 32), 9: (36, 32), 15: (292, 256)}  # q8_0, q8_1, q8_K


class Traits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


def main():
    import llama_cpp
    lib = Path(llama_cpp.__file__).parent / "lib"
    base = ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    cpu.ggml_cpu_init()
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
    cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    base.ggml_quantize_chunk.restype = ctypes.c_size_t
    base.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                 ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    rng = np.random.default_rng(20261130)
    scale = 10.0 ** rng.uniform(-3, 0.5, size=(T, N // 32))
    scale[:, 3] *= 1e-7  # ggml's f16 d rounds to 0
    scale[:, 9] *= 1e-3  # subnormal f16 d
    x = (rng.uniform(-1, 1, size=(T, N // 32, 32)) * scale[..., None]).reshape(T, N).astype(np.float32)
    x[x == 0] = np.float32(1e-3)
    OUT.mkdir(parents=True, exist_ok=True)
    x.astype("<f4").tofile(OUT / "x.f32")
    for name, t in TYPES.items():
        bb, bv = LAYOUT[name]
        w = rng.uniform(-0.1, 0.1, size=(R, N)).astype(np.float32)
        wq = np.zeros(R * N // bv * bb, dtype=np.uint8)
        got = base.ggml_quantize_chunk(t, w.ctypes.data, wq.ctypes.data, 0, R, N, None)
        assert got == wq.size, (name, got, wq.size)
        tr = cpu.ggml_get_type_traits_cpu(t).contents
        ab, av = ACT_BYTES[tr.vec_dot_type]
        # the activation quantizer is the from_float of the vec_dot type (the weight type's own
        # from_float quantizes weights)
        ff = from_float_t(cpu.ggml_get_type_traits_cpu(tr.vec_dot_type).contents.from_float)
        vd = vec_dot_t(tr.vec_dot)
        res = np.zeros((T, R), dtype=np.float32)
        out = ctypes.c_float()
        for ti in range(T):
            yq = np.zeros(N // av * ab, dtype=np.uint8)
            xr = np.ascontiguousarray(x[ti])
            ff(xr.ctypes.data, yq.ctypes.data, N)
            for r in range(R):
                vd(N, ctypes.byref(out), 0, wq.ctypes.data + r * (N // bv) * bb, 0, yq.ctypes.data, 0, 1)
                res[ti, r] = out.value
        wq.tofile(OUT / f"{name}.bin")
        res.astype("<f4").tofile(OUT / f"{name}.f32")
        print(f"{name}: vec_dot_type {tr.vec_dot_type}, {wq.size} weight bytes, results {struct.pack('<f', res[0, 0]).hex()}...")


if __name__ == "__main__":
    main()
