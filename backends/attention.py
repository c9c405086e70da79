"""Our attention function for transformers models, over a paged KV cache.

The model runner feeds a whole engine step as one batch row (`[1, T, ...]`): the new tokens of
every scheduled sequence, concatenated, decodes first. Each call gets that step's
`AttentionMetadata` through the `corral_attn` keyword the model forwards to attention, never a
module global, because several models (and engines) share one process.

Per layer the K/V cache is a pair of tensors `[num_blocks, block_size, num_kv_heads, head_dim]`.
New K/V are written at `slot_mapping` (`block_id * block_size + offset`); each sequence then
reads its whole context back through its block table. The sliding-window layers of a model
with a window KV group (scheduler/block_manager.py) have their own, smaller cache, slots and
block tables: `window_layers` names them.

Two kernels sit behind `paged_attention`: pure PyTorch (CPU, and the CUDA fallback) and
flash-attn's varlen kernel when it is importable on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

ATTN_IMPLEMENTATION = "corral_paged"
METADATA_KWARG = "corral_attn"

try:  # optional CUDA kernel; CPU never needs it
    from flash_attn import flash_attn_varlen_func  # type: ignore[import-not-found]
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flash_attn_varlen_func = None


@dataclass
class _Layout:
    """Which cached slots each query attends to, for one sliding-window size."""

    # Decode rows: one query each; each row's context blocks, gathered whole (one index per
    # block, not per slot), with keys outside the row's [first, context) range masked.
    decode_blocks: Tensor | None = None  # [B_dec, nb] long, indices into the cache's blocks
    decode_width: int = 0  # keys per row: the longest row's span, from its first block on
    decode_mask: Tensor | None = None  # [B_dec, 1, 1, decode_width] bool (None: all valid)
    # Prefill chunks: (query start, query end, key slots [K], mask [q, K]; None: plain causal).
    prefills: list[tuple[int, int, Tensor, Tensor | None]] = field(default_factory=list)
    # Varlen (flash) form: all sequences' key slots concatenated.
    flat_slots: Tensor | None = None
    cu_seqlens_k: Tensor | None = None
    max_seqlen_k: int = 0


@dataclass
class AttentionMetadata:
    """One step's batch layout. Built once on the host per step, shared by every layer.

    The per-sequence lists come from the scheduler; everything the layers read is built from
    them with a few tensor ops per step (no per-token Python), and each window's layout once.
    """

    kv_caches: list[tuple[Tensor, Tensor]]
    slot_mapping: Tensor  # [T] long, where each new token's K/V is written
    positions: Tensor  # [T] long, each new token's position in its sequence
    query_lens: list[int]  # per sequence, decodes (1) first
    context_lens: list[int]  # per sequence: computed + new tokens
    block_tables: list[list[int]]
    block_size: int
    num_decodes: int
    device: torch.device
    use_flash: bool = False
    cu_seqlens_q: Tensor | None = None
    # Host copies: context lengths [N] and the block tables padded with block 0 [N, W].
    context_lens_t: Tensor | None = None
    block_tables_t: Tensor | None = None
    # The window KV group, when the model has one: its slots and padded tables, and its layers.
    window_block_tables: list[list[int]] | None = None
    window_slot_mapping: Tensor | None = None
    window_tables_t: Tensor | None = None
    window_layers: frozenset[int] = frozenset()
    _layouts: dict[tuple[bool, int | None], _Layout] = field(default_factory=dict)
    _on_device: dict[torch.device, "AttentionMetadata"] = field(default_factory=dict)

    def on(self, device: torch.device) -> "AttentionMetadata":
        """This step's metadata with its tensors on `device` (layers of a split model)."""
        if device == self.device:
            return self
        meta = self._on_device.get(device)
        if meta is None:
            meta = build_metadata(self.kv_caches, self.query_lens, self.context_lens,
                                  self.block_tables, self.block_size, device,
                                  self.window_block_tables, self.window_layers)
            self._on_device[device] = meta
        return meta

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)

    def layout(self, window: int | None, grouped: bool = False) -> _Layout:
        """The key layout for one window size, through the window group's tables if `grouped`."""
        # Sliding windows at least as long as every context behave like full attention.
        if window is not None and window >= max(self.context_lens):
            window = None
        lay = self._layouts.get((grouped, window))
        if lay is None:
            lay = self._build_layout(window, self.window_tables_t if grouped else self.block_tables_t)
            self._layouts[(grouped, window)] = lay
        return lay

    def _key_range(self, i: int, window: int | None) -> tuple[int, int]:
        ctx, q = self.context_lens[i], self.query_lens[i]
        first = 0 if window is None else max(0, ctx - q - window + 1)
        return first, ctx

    def _slots(self, tables: Tensor, i: int, first: int, last: int) -> Tensor:
        """Cache slots of positions [first, last) of sequence i, as a host tensor."""
        pos = torch.arange(first, last)
        bs = self.block_size
        return tables[i, pos // bs] * bs + pos % bs

    def _decode_layout(self, lay: _Layout, window: int | None, tables: Tensor) -> None:
        """All decode rows at once: each row's blocks from its first key's block on."""
        nd, bs, dev = self.num_decodes, self.block_size, self.device
        ctx = self.context_lens_t[:nd]
        first = torch.zeros_like(ctx) if window is None else (ctx - window).clamp(min=0)
        b0 = first // bs
        nb = int(((ctx + bs - 1) // bs - b0).max())
        table = tables[:nd]
        idx = (b0[:, None] + torch.arange(nb)[None, :]).clamp(max=table.shape[1] - 1)
        lay.decode_blocks = table.gather(1, idx).to(dev)
        lay.decode_width = int((ctx - b0 * bs).max())
        k_pos = (b0 * bs)[:, None] + torch.arange(lay.decode_width)[None, :]
        valid = (k_pos >= first[:, None]) & (k_pos < ctx[:, None])
        if not bool(valid.all()):
            lay.decode_mask = valid[:, None, None, :].to(dev)

    def _build_layout(self, window: int | None, tables: Tensor) -> _Layout:
        lay = _Layout()
        dev = self.device
        if self.use_flash:
            parts, cu = [], [0]
            for i in range(len(self.query_lens)):
                first, last = self._key_range(i, window)
                parts.append(self._slots(tables, i, first, last))
                cu.append(cu[-1] + last - first)
                lay.max_seqlen_k = max(lay.max_seqlen_k, last - first)
            lay.flat_slots = torch.cat(parts).to(dev)
            lay.cu_seqlens_k = torch.tensor(cu, dtype=torch.int32, device=dev)
            return lay
        if self.num_decodes:
            self._decode_layout(lay, window, tables)
        start = self.num_decodes
        for i in range(self.num_decodes, len(self.query_lens)):  # prefill chunks: a few a step
            q, ctx = self.query_lens[i], self.context_lens[i]
            first, last = self._key_range(i, window)
            slots = self._slots(tables, i, first, last).to(dev)
            if window is None and q == ctx:
                # A whole prompt at once: the kernel's own causal mode is faster than a mask.
                lay.prefills.append((start, start + q, slots, None))
                start += q
                continue
            q_pos = torch.arange(ctx - q, ctx, device=dev)[:, None]
            k_pos = torch.arange(first, last, device=dev)[None, :]
            mask = k_pos <= q_pos
            if window is not None:
                mask &= (q_pos - k_pos) < window
            lay.prefills.append((start, start + q, slots, mask))
            start += q
        return lay


def build_metadata(
    kv_caches: list[tuple[Tensor, Tensor]],
    query_lens: list[int],
    context_lens: list[int],
    block_tables: list[list[int]],
    block_size: int,
    device: torch.device,
    window_block_tables: list[list[int]] | None = None,
    window_layers: frozenset[int] = frozenset(),
) -> AttentionMetadata:
    """Metadata for one step. Sequences with one new token (decodes) must come first.

    `window_block_tables` (with `window_layers`, the layers that read them) is the window KV
    group's tables, where released blocks are NULL_BLOCK (-1): no query reads them again.
    """
    q = torch.tensor(query_lens, dtype=torch.long)
    ctx = torch.tensor(context_lens, dtype=torch.long)
    tables = _padded(block_tables)
    # Each new token's sequence and position, then its slot through that sequence's table.
    seq_of = torch.repeat_interleave(torch.arange(len(query_lens)), q)
    offset = (ctx - q) - (torch.cumsum(q, 0) - q)  # position minus flat index, per sequence
    positions = torch.arange(seq_of.shape[0]) + offset[seq_of]
    slots = _slot_mapping(tables, seq_of, positions, block_size)
    not_decode = (q != 1).nonzero()
    num_decodes = int(not_decode[0]) if len(not_decode) else len(query_lens)
    use_flash = flash_attn_varlen_func is not None and device.type == "cuda"
    meta = AttentionMetadata(
        kv_caches=kv_caches,
        slot_mapping=slots.to(device),
        positions=positions.to(device),
        query_lens=query_lens,
        context_lens=context_lens,
        block_tables=block_tables,
        block_size=block_size,
        num_decodes=num_decodes,
        device=device,
        use_flash=use_flash,
        context_lens_t=ctx,
        block_tables_t=tables,
    )
    if window_block_tables is not None and window_layers:
        w_tables = _padded(window_block_tables)
        w_slots = _slot_mapping(w_tables, seq_of, positions, block_size)
        meta.window_block_tables, meta.window_layers = window_block_tables, window_layers
        meta.window_tables_t, meta.window_slot_mapping = w_tables, w_slots.to(device)
    if use_flash:
        cu = torch.zeros(len(query_lens) + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(q, 0)
        meta.cu_seqlens_q = cu.to(device)
    return meta


def _slot_mapping(tables: Tensor, seq_of: Tensor, positions: Tensor, block_size: int) -> Tensor:
    """Each new token's cache slot, through its sequence's row of `tables`."""
    return tables[seq_of, positions // block_size] * block_size + positions % block_size


def _padded(block_tables: list[list[int]]) -> Tensor:
    """[N, W] block tables, padded (and released entries replaced) with block 0, which the
    layouts never read unmasked."""
    width = max(len(t) for t in block_tables)
    rows = [t + [0] * (width - len(t)) for t in block_tables]
    return torch.tensor(rows, dtype=torch.long).clamp_(min=0)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float,
            softcap: float | None, causal: bool = False) -> Tensor:
    """q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D], mask bool broadcastable to [B, Hq, Lq, Lk].

    `causal` (with mask None) means square causal attention, queries and keys aligned.
    """
    if softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scale, is_causal=causal,
            enable_gqa=q.shape[1] != k.shape[1],
        )
    if causal:
        n = q.shape[-2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v)


def _gather_blocks(flat: Tensor, lay: _Layout, block_size: int, dtype: torch.dtype) -> Tensor:
    """[slots, Hkv, D] cache -> the decode rows' keys [B, Hkv, width, D] in `dtype` (a
    half-precision cache is read into the query's dtype). The padding past the longest row is
    cut, so a lone decode (or equal contexts) needs no mask."""
    blocks = lay.decode_blocks
    cache = flat.view(-1, block_size, *flat.shape[1:])
    rows = cache.index_select(0, blocks.view(-1))  # one copy, whole blocks
    rows = rows.view(blocks.shape[0], blocks.shape[1] * block_size, *flat.shape[1:])
    return rows[:, :lay.decode_width].transpose(1, 2).to(dtype)


def _torch_attention(meta: AttentionMetadata, q: Tensor, k_flat: Tensor, v_flat: Tensor,
                     window: int | None, scale: float, softcap: float | None,
                     grouped: bool) -> Tensor:
    """q [T, Hq, D]; k_flat/v_flat [slots, Hkv, D]. Returns [T, Hq, D]."""
    lay = meta.layout(window, grouped)
    out = torch.empty_like(q)
    nd = meta.num_decodes
    if nd:
        keys = _gather_blocks(k_flat, lay, meta.block_size, q.dtype)
        vals = _gather_blocks(v_flat, lay, meta.block_size, q.dtype)
        res = _attend(q[:nd, :, None, :], keys, vals, lay.decode_mask, scale, softcap)
        out[:nd] = res[:, :, 0, :]
    for start, end, slots, mask in lay.prefills:
        keys = k_flat.index_select(0, slots).transpose(0, 1)[None].to(q.dtype)  # [1, Hkv, K, D]
        vals = v_flat.index_select(0, slots).transpose(0, 1)[None].to(q.dtype)
        res = _attend(q[start:end].transpose(0, 1)[None], keys, vals, mask, scale, softcap,
                      causal=mask is None)
        out[start:end] = res[0].transpose(0, 1)
    return out


def _flash_attention(meta: AttentionMetadata, q: Tensor, k_flat: Tensor, v_flat: Tensor,
                     window: int | None, scale: float, softcap: float | None,
                     grouped: bool) -> Tensor:
    # flash-attn's paged mode needs 256-token pages; gathering the context keeps any block size.
    lay = meta.layout(window, grouped)
    return flash_attn_varlen_func(
        q,
        k_flat.index_select(0, lay.flat_slots).to(q.dtype),
        v_flat.index_select(0, lay.flat_slots).to(q.dtype),
        cu_seqlens_q=meta.cu_seqlens_q,
        cu_seqlens_k=lay.cu_seqlens_k,
        max_seqlen_q=max(meta.query_lens),
        max_seqlen_k=lay.max_seqlen_k,
        softmax_scale=scale,
        causal=True,
        window_size=(-1, -1) if window is None else (window - 1, 0),
        softcap=0.0 if softcap is None else softcap,
    )


def paged_attention(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """transformers attention interface: query [1, Hq, T, D], key/value [1, Hkv, T, D].

    Returns `[1, T, Hq, D]` as transformers' own kernels do. `attention_mask` is ignored:
    causality, sequence boundaries and windows come from the step metadata.
    """
    meta: AttentionMetadata | None = kwargs.get(METADATA_KWARG)
    if meta is None:
        raise RuntimeError(f"{ATTN_IMPLEMENTATION} attention needs the step metadata")
    k_cache, v_cache = meta.kv_caches[module.layer_idx]
    meta = meta.on(k_cache.device)
    k_flat = k_cache.view(-1, *k_cache.shape[2:])
    v_flat = v_cache.view(-1, *v_cache.shape[2:])
    grouped = module.layer_idx in meta.window_layers
    slot_mapping = meta.window_slot_mapping if grouped else meta.slot_mapping
    k_flat.index_copy_(0, slot_mapping, key[0].transpose(0, 1).to(k_flat.dtype))
    v_flat.index_copy_(0, slot_mapping, value[0].transpose(0, 1).to(v_flat.dtype))
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    q = query[0].transpose(0, 1)  # [T, Hq, D]
    kernel = _flash_attention if meta.use_flash else _torch_attention
    out = kernel(meta, q, k_flat, v_flat, sliding_window, scaling, softcap, grouped)
    return out[None], None


def register() -> str:
    """Register `paged_attention` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention)
    return ATTN_IMPLEMENTATION
