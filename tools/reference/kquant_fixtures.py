#!/usr/bin/env python3
"""Dequantization fixtures for Q5_0, Q5_1, Q4_K, Q5_K and Q6_K from gguf-py's numpy
(de)quantizers (gguf.quants, an implementation independent of ours).

    /work/venv-kquant/bin/python tools/reference/kquant_fixtures.py Tests/fixtures/kquant

Writes, per type T, T.bin (the raw ggml blocks) and T.f32 (gguf.quants.dequantize of
them, little-endian float32), plus index.json (element counts). Q5_0/Q5_1 blocks come
from gguf's quantizer on random floats; gguf-py cannot quantize the k-quants, so their
blocks are random bytes with finite, small half scales (every bit pattern of the
quantized values and 6-bit scales is a valid block). Needs: pip install gguf numpy.
"""
import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# (type, blocks, offsets of half scales within a block)
K_TYPES = {
    "Q4_K": (T.Q4_K, [0, 2]),    # d, dmin, scales[12], qs[128]
    "Q5_K": (T.Q5_K, [0, 2]),    # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": (T.Q6_K, [208]),     # ql[128], qh[64], scales[16] (int8), d
}


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else "Tests/fixtures/kquant"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261130)
    index = {}
    for name, qtype in (("Q5_0", T.Q5_0), ("Q5_1", T.Q5_1)):
        n = 32 * 24
        x = (rng.standard_normal(n) * rng.uniform(0.05, 2.0, n // 32).repeat(32)).astype(np.float32)
        x[:32] += 0.7  # a block of one sign: Q5_1's min matters
        raw = quants.quantize(x, qtype)
        index[name] = write(out, name, raw, quants.dequantize(raw, qtype))
    for name, (qtype, halves) in K_TYPES.items():
        block_size, type_size = quants.GGML_QUANT_SIZES[qtype]
        nb = 6
        raw = rng.integers(0, 256, size=(nb, type_size), dtype=np.uint8)
        for i in range(nb):
            for k, off in enumerate(halves):
                # d of either sign; dmin positive (as llama.cpp writes it) and once negative
                v = rng.uniform(0.002, 0.05) * (1 if (k == 1 and i != 3) or rng.random() < 0.5 else -1)
                raw[i, off:off + 2] = np.frombuffer(np.float16(v).tobytes(), dtype=np.uint8)
        raw = raw.reshape(-1)
        index[name] = write(out, name, raw, quants.dequantize(raw, qtype))
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"generator": "tools/reference/kquant_fixtures.py", "elements": index}, f, indent=1, sort_keys=True)


def write(out: str, name: str, raw: np.ndarray, values: np.ndarray) -> int:
    raw.astype(np.uint8).tofile(os.path.join(out, f"{name}.bin"))
    v = np.asarray(values, dtype="<f4").reshape(-1)
    assert np.all(np.isfinite(v))
    v.tofile(os.path.join(out, f"{name}.f32"))
    return int(v.size)


if __name__ == "__main__":
    main()
