"""Decoded GGUF blocks repacked into the tensors torch's weight-only kernels read.

- int4: 4-bit codes in groups of 32 (Q4_0, Q4_1, Q4_K) map exactly onto torch's int4 pack,
  whose elements are `(code - 8) * scale + zero` per group: zero = offset + 8 * scale.
  The cache keeps the codes as plain nibbles (two per byte, portable); the CPU-specific pack
  (`_convert_weight_to_int4pack_for_cpu`) is made at load.
- int4x2: 5- to 8-bit codes in groups of 32 (Q5_0, Q5_K, Q8_0) split exactly into their low and
  high nibbles, as one int4 pack over the input twice: the low nibbles at the code's scale
  against the first copy, the high ones at 16x it against the second (kernels.int4x2).
- int8: formats that fit neither (Q6_K's groups of 16) are requantized from the decoded values
  to symmetric per-row int8, as torch's int8 kernels take one scale per row. An int4x2 weight
  keeps this form too, for the kernels that run it faster at batch rows.
- blocks: the decoded codes as they are, with their group scales and offsets, for what is only
  gathered row by row (an untied embedding): exact, and no kernel needed.
- int8 with a residual: per-row int8 plus each element's rounding error in 4 bits, for a tied
  embedding that is gathered (the embedding, the head's rescoring) and multiplied (the head's
  approximate pass at batch rows, through `torch._int_mm`).
"""

from __future__ import annotations

import numpy as np
import torch

from backends.quant.blocks import Blocks

INT4_GROUP = 32
# A residual nibble's step, in units of its row's int8 scale: nibbles -7..7 span the int8
# rounding error (at most half a scale), so a row gathered with its residual is within
# scale / 28 = (the row's largest magnitude) / 3556 of the decoded weight: finer than
# rounding that largest element to bf16 (2^-9 of it), which every matmul input here is.
RESIDUAL_STEPS = 14
_RESIDUAL_CHUNK = 16384  # rows dequantized at a time: a 262k x 640 embedding is 671 MB in float32


def pack_nibbles(codes):
    """Codes below 16, [N, K] (numpy or torch) -> two per byte [N, K/2], the low one first."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def int4_tensors(blocks: Blocks) -> dict[str, torch.Tensor]:
    """{"nibbles": uint8 [N, K/2], "scale_zeros": bf16 [K/32, N, 2]} from 4-bit codes."""
    assert blocks.group == INT4_GROUP and int(blocks.codes.max(initial=0)) < 16
    nibbles = pack_nibbles(blocks.codes).astype(np.uint8)
    zero = blocks.offset + 8 * blocks.scale
    sz = np.stack([blocks.scale.T, zero.T], -1)
    return {"nibbles": torch.from_numpy(np.ascontiguousarray(nibbles)),
            "scale_zeros": torch.from_numpy(np.ascontiguousarray(sz)).to(torch.bfloat16)}


def int4x2_tensors(blocks: Blocks) -> dict[str, torch.Tensor]:
    """int4_tensors of `blocks`' codes split into nibbles, over a doubled input [x, x]: the
    codes' low nibbles (scale s, offset o + t) for the first K columns, their high nibbles
    (scale 16 s, offset -t) for the next K, so each element's two parts sum to s * code + o.
    The pack keeps each group's zero point in bf16: t (0 or 128 s, per group) moves the
    offset to whichever half rounds it exactly or closer (Q5_0's zero -8 s and 128 s, Q8_0's
    8 s and 0: powers of two times s, exact); 16 s is exact wherever s is."""
    assert blocks.group == INT4_GROUP
    s, o = blocks.scale, blocks.offset
    zero = np.stack([o + 8 * s, o + 136 * s])  # the low half's zero point for t = 0, 128 s
    rounding = np.abs(torch.from_numpy(zero).to(torch.bfloat16).float().numpy() - zero)
    t = np.where(rounding[1] < rounding[0], 128 * s, 0).astype(np.float32)
    codes = np.concatenate([blocks.codes & 15, blocks.codes >> 4], 1)
    halves = Blocks(codes, np.concatenate([s, 16 * s], 1), np.concatenate([o + t, -t], 1),
                    blocks.group)
    return int4_tensors(halves)


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


def int8_residual_tensors(blocks: Blocks) -> dict[str, torch.Tensor]:
    """int8_tensors' {"qweight", "qscale"} plus "residual": uint8 [N, K/2], each element's
    rounding error in RESIDUAL_STEPS-ths of its row's scale, offset by 8, two per byte."""
    parts = []
    for start in range(0, blocks.codes.shape[0], _RESIDUAL_CHUNK):
        rows = slice(start, start + _RESIDUAL_CHUNK)
        w = torch.from_numpy(Blocks(blocks.codes[rows], blocks.scale[rows], blocks.offset[rows],
                                    blocks.group).dequantize())
        q = int8_tensors(w)
        step = (q["qscale"] / RESIDUAL_STEPS)[:, None]
        err = torch.round((w - q["qweight"].float() * q["qscale"][:, None]) / step)
        codes = (err.clamp_(-7, 7) + 8).to(torch.uint8)
        parts.append({**q, "residual": pack_nibbles(codes)})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


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
