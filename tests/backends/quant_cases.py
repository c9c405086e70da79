"""GGUF tensors for the packed-weight tests, written and read back with the `gguf` library:
the legacy formats quantized by gguf.quants.quantize, the K-quants (which gguf-py can only
dequantize) as random blocks with sane fp16 super-scales."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFWriter
from gguf.quants import quantize

QTYPES = [QT.Q4_0, QT.Q4_1, QT.Q4_K, QT.Q5_0, QT.Q5_K, QT.Q6_K, QT.Q8_0]
_K_BLOCK = {QT.Q4_K: 144, QT.Q5_K: 176, QT.Q6_K: 210}


def raw_blocks(qtype: QT, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if qtype not in _K_BLOCK:
        return quantize(rng.standard_normal((rows, cols)).astype(np.float32) * 0.05, qtype)
    size, n = _K_BLOCK[qtype], cols // 256
    b = rng.integers(0, 256, (rows, n, size), dtype=np.uint8)
    d = rng.uniform(1e-4, 1e-3, (rows, n, 2)).astype(np.float16).view(np.uint8)
    if qtype == QT.Q6_K:
        b[..., 208:210] = d[..., 0:2]
    else:
        b[..., 0:4] = d.reshape(rows, n, 4)
    return b.reshape(rows, n * size)


def write_and_read(path: Path, qtype: QT, rows: int = 96, cols: int = 512):
    """One tensor through a real GGUF file: the reader's view of it."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("blk.0.ffn_up.weight", raw_blocks(qtype, rows, cols), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tensor,) = GGUFReader(str(path)).tensors
    return tensor
