#!/usr/bin/env python3
"""Rewrites a GGUF file with every tensor dequantized and stored as F32, F16 or BF16
(metadata copied; general.file_type set to match), e.g. the default Q4_1 model as an
F16 file for llama.cpp's quantizer or for benchmarks of 16-bit weights.

    python tools/reference/gguf_float.py IN.gguf OUT.gguf {F32,F16,BF16}

Needs: pip install gguf numpy. 1-D tensors (norm gains) stay F32, as llama.cpp keeps them.
"""
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants

FILE_TYPE = {"F32": 0, "F16": 1, "BF16": 32}  # llama_ftype: ALL_F32, MOSTLY_F16, MOSTLY_BF16


def main() -> None:
    src, dst, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    writer.add_file_type(FILE_TYPE[kind])
    for t in reader.tensors:
        shape = [int(x) for x in reversed(t.shape)]  # numpy order: rows first
        values = quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if kind == "F32" or len(shape) == 1:
            writer.add_tensor(t.name, values)
        elif kind == "F16":
            writer.add_tensor(t.name, values.astype(np.float16))
        else:
            writer.add_tensor(t.name, quants.quantize(values, T.BF16), raw_dtype=T.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()
