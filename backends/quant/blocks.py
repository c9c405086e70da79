"""GGUF block formats decoded from their raw bytes into integer codes and per-group affine
parameters, with numpy: every element is `scale[g] * code + offset[g]` for its group g.

Layouts follow ggml's `block_q*` structs (ggml-common.h): fp16 super-scales, 4/5/6/8-bit codes,
and the K-quants' 6-bit (Q4_K/Q5_K) or int8 (Q6_K) sub-block scales, which fold into each group's
scale and offset here, so nothing passes through float weights on the way to the int4 pack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as QT

# Formats whose codes fit torch's int4 pack exactly (4-bit codes in groups of 32).
INT4_EXACT = frozenset({QT.Q4_0, QT.Q4_1, QT.Q4_K})
DECODED = frozenset({QT.Q4_0, QT.Q4_1, QT.Q4_K, QT.Q5_0, QT.Q5_K, QT.Q6_K, QT.Q8_0})
FLOAT = frozenset({QT.F32, QT.F16, QT.BF16})


@dataclass
class Blocks:
    codes: np.ndarray  # uint8 [rows, cols], unsigned codes
    scale: np.ndarray  # float32 [rows, cols // group]
    offset: np.ndarray  # float32 [rows, cols // group]
    group: int

    def dequantize(self) -> np.ndarray:
        rows, cols = self.codes.shape
        c = self.codes.reshape(rows, -1, self.group).astype(np.float32)
        return (c * self.scale[..., None] + self.offset[..., None]).reshape(rows, cols)

    def take_rows(self, order: np.ndarray) -> "Blocks":
        return Blocks(self.codes[order], self.scale[order], self.offset[order], self.group)

    def top_nibbles(self) -> "Blocks":
        """The top 4 bits of each code at their own weight, with the mean of the bits dropped
        folded into the offset: a 4-bit approximation of the same values, made without
        requantizing (the shortlist head's first pass). Codes of 4 bits come back unchanged."""
        drop = max(int(self.codes.max(initial=0)).bit_length() - 4, 0)
        step = float(1 << drop)
        return Blocks((self.codes >> drop).astype(np.uint8), self.scale * step,
                      self.offset + self.scale * (step - 1) / 2, self.group)


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)[..., 0]


def _nibbles(qs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return qs & 0x0F, qs >> 4


def _q4_0(b: np.ndarray) -> tuple:
    d = _f16(b[..., 0:2])
    lo, hi = _nibbles(b[..., 2:18])
    return np.concatenate([lo, hi], -1), d[..., None], (-8 * d)[..., None], 32


def _q4_1(b: np.ndarray) -> tuple:
    d, m = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    lo, hi = _nibbles(b[..., 4:20])
    return np.concatenate([lo, hi], -1), d[..., None], m[..., None], 32


def _q5_0(b: np.ndarray) -> tuple:
    d = _f16(b[..., 0:2])
    qh = np.ascontiguousarray(b[..., 2:6]).view("<u4")  # [..., 1]
    bits = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    lo, hi = _nibbles(b[..., 6:22])
    codes = np.concatenate([lo, hi], -1) | (bits << 4)
    return codes, d[..., None], (-16 * d)[..., None], 32


def _q8_0(b: np.ndarray) -> tuple:
    d = _f16(b[..., 0:2])
    codes = (b[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return codes, d[..., None], (-128 * d)[..., None], 32


def _k_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins (ggml's get_scale_min_k4)."""
    s = s.astype(np.uint8)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)], -1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], -1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _k_codes4(qs: np.ndarray) -> np.ndarray:
    """128 bytes -> 256 codes: chunk i of 32 bytes gives sub-block 2i (low) and 2i+1 (high)."""
    q = qs.reshape(*qs.shape[:-1], 4, 32)
    lo, hi = _nibbles(q)
    return np.stack([lo, hi], -2).reshape(*qs.shape[:-1], 256)


def _q4_k(b: np.ndarray) -> tuple:
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])
    return _k_codes4(b[..., 16:144]), d[..., None] * sc, -dmin[..., None] * mn, 32


def _q5_k(b: np.ndarray) -> tuple:
    d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
    sc, mn = _k_scales(b[..., 4:16])
    qh = b[..., 16:48]  # bit j of qh[l] is the high bit of sub-block j's element l
    high = ((qh[..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1)
    codes = _k_codes4(b[..., 48:176]) | (high.reshape(*qh.shape[:-1], 256) << 4)
    return codes, d[..., None] * sc, -dmin[..., None] * mn, 32


def _q6_k(b: np.ndarray) -> tuple:
    ql, qh = b[..., 0:128], b[..., 128:192]
    sc = b[..., 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[..., 208:210])
    lead = ql.shape[:-1]
    ql = ql.reshape(*lead, 2, 2, 32)  # [half, 32-byte run, l]
    qh = qh.reshape(*lead, 2, 1, 32)
    lo, hi = _nibbles(ql)  # quarters 0,1 (low nibbles of runs 0,1) and 2,3 (high nibbles)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)
    top = (qh >> shifts) & 3  # [.., half, 4, 32]
    codes = np.concatenate([lo, hi], -2) | (top << 4)
    scale = d[..., None] * sc
    return codes.reshape(*lead, 256), scale, -32 * scale, 16


_DECODERS = {QT.Q4_0: (_q4_0, 18), QT.Q4_1: (_q4_1, 20), QT.Q5_0: (_q5_0, 22),
             QT.Q8_0: (_q8_0, 34), QT.Q4_K: (_q4_k, 144), QT.Q5_K: (_q5_k, 176),
             QT.Q6_K: (_q6_k, 210)}


def decode(raw: np.ndarray, qtype: QT, rows: int, cols: int) -> Blocks:
    """The raw bytes of a 2-D GGUF tensor ([rows, bytes per row], as GGUFReader gives them)."""
    fn, size = _DECODERS[qtype]
    b = np.asarray(raw, dtype=np.uint8).reshape(rows, -1, size)
    codes, scale, offset, group = fn(b)
    return Blocks(codes.reshape(rows, cols).astype(np.uint8),
                  scale.reshape(rows, -1).astype(np.float32),
                  offset.reshape(rows, -1).astype(np.float32), group)
