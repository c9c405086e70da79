"""Decoded GGUF blocks repacked into the tensors torch's weight-only kernels read.

- int4: 4-bit codes in groups of 32 (Q4_0, Q4_1, Q4_K) map exactly onto torch's int4 pack,
  whose elements are `(code - 8) * scale + zero` per group: zero = offset + 8 * scale.
  The cache keeps the codes as plain nibbles (two per byte, portable); the CPU-specific pack
  (`_convert_weight_to_int4pack_for_cpu`) is made at load.
- int8: 5/6/8-bit formats don't fit 4 bits, and torch's int8 kernels take one scale per row,
  so their groups are requantized from the decoded values to symmetric per-row int8.
- blocks: the decoded codes as they are, with their group scales and offsets, for what is only
  gathered row by row (an embedding, a shortlist head's rescoring): exact, and no kernel needed.
"""

from __future__ import annotations

import numpy as np
import torch

from backends.quant.blocks import Blocks

INT4_GROUP = 32


def int4_tensors(blocks: Blocks) -> dict[str, torch.Tensor]:
    """{"nibbles": uint8 [N, K/2], "scale_zeros": bf16 [K/32, N, 2]} from 4-bit codes."""
    assert blocks.group == INT4_GROUP and int(blocks.codes.max(initial=0)) < 16
    c = blocks.codes
    nibbles = (c[:, 0::2] | (c[:, 1::2] << 4)).astype(np.uint8)
    zero = blocks.offset + 8 * blocks.scale
    sz = np.stack([blocks.scale.T, zero.T], -1)
    return {"nibbles": torch.from_numpy(np.ascontiguousarray(nibbles)),
            "scale_zeros": torch.from_numpy(np.ascontiguousarray(sz)).to(torch.bfloat16)}


def block_tensors(blocks: Blocks) -> dict[str, torch.Tensor]:
    """{"codes": uint8 [N, K], "scale", "offset": [N, K/group]}, in float16 where that loses
    nothing (Q8_0's scales are float16 already), else float32."""
    out = {"codes": torch.from_numpy(np.ascontiguousarray(blocks.codes))}
    for key in ("scale", "offset"):
        value = getattr(blocks, key)
        half = value.astype(np.float16)
        exact = np.array_equal(half.astype(np.float32), value)
        out[key] = torch.from_numpy(np.ascontiguousarray(half if exact else value))
    return out


def int8_tensors(weight: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """{"qweight": int8 [N, K], "qscale": float32 [N]}: symmetric per-row int8."""
    w = torch.as_tensor(weight, dtype=torch.float32)
    scale = (w.abs().amax(1) / 127).clamp_min(1e-12)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return {"qweight": q, "qscale": scale}


def unpack_nibbles(nibbles: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> int32 codes [N, K], the input of torch's int4 pack."""
    lo, hi = nibbles & 0x0F, nibbles >> 4
    return torch.stack([lo, hi], -1).reshape(nibbles.shape[0], -1).to(torch.int32)


def cpu_int4_pack(nibbles: torch.Tensor) -> torch.Tensor:
    return torch._convert_weight_to_int4pack_for_cpu(unpack_nibbles(nibbles), 2)


def dequantize_int4(nibbles: torch.Tensor, scale_zeros: torch.Tensor) -> torch.Tensor:
    codes = unpack_nibbles(nibbles).float()
    n, k = codes.shape
    sz = scale_zeros.float().permute(1, 0, 2)  # [N, G, 2]
    g = codes.reshape(n, -1, INT4_GROUP)
    return ((g - 8) * sz[..., :1] + sz[..., 1:]).reshape(n, k)
