"""Paged KV bookkeeping: fixed-size blocks, reference counts and the prefix cache.

A full block (block_size computed tokens) is identified by a chained hash of its tokens and
the hash of the block before it, so equal hashes mean equal prefixes. Freed blocks keep their
hash and stay findable until they are reused; the free list is kept in eviction order (least
recently freed first, worthless unhashed blocks before all of them).
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from scheduler.sequence import Sequence


def block_hash(parent: bytes, token_ids: list[int] | tuple[int, ...]) -> bytes:
    return hashlib.blake2b(parent + array("q", token_ids).tobytes(), digest_size=16).digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None
    token_ids: tuple[int, ...] = ()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._hash_to_block: dict[bytes, int] = {}
        self._seq_hashes: dict[int, list[bytes]] = {}  # seq_id -> hashes of its full blocks
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def lookup_prefix(self, seq: Sequence) -> list[int]:
        """Cached blocks holding a prefix of `seq`; the last token is always left to compute."""
        if not self.enable_prefix_caching:
            return []
        hits: list[int] = []
        parent = seq.cache_salt
        bs = self.block_size
        for i in range((seq.num_tokens - 1) // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            parent = block_hash(parent, tokens)
            block_id = self._hash_to_block.get(parent)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    def allocate_slots(self, seq: Sequence, num_new_tokens: int, cached: list[int] | None = None) -> bool:
        """Make room for `num_new_tokens` more tokens of `seq`, first taking `cached` blocks.

        Returns False (and changes nothing) when there are not enough free blocks.
        """
        cached = cached or []
        computed = seq.num_computed_tokens + len(cached) * self.block_size
        fresh = self.blocks_needed(computed + num_new_tokens) - len(seq.block_table) - len(cached)
        revived = sum(1 for b in cached if self.blocks[b].ref_count == 0)
        if max(fresh, 0) + revived > len(self._free):
            return False
        for block_id in cached:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self._free[block_id]
            block.ref_count += 1
            seq.block_table.append(block_id)
        if cached:
            self._seq_hashes[seq.seq_id] = [self.blocks[b].hash for b in cached]  # type: ignore[misc]
            seq.num_computed_tokens = computed
        for _ in range(max(fresh, 0)):
            seq.block_table.append(self._take_free_block())
        return True

    def note_prefix_query(self, num_prompt_tokens: int, num_hit_tokens: int) -> None:
        self.prefix_query_tokens += num_prompt_tokens
        self.prefix_hit_tokens += num_hit_tokens

    def _take_free_block(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self._hash_to_block.get(block.hash) == block_id:
            del self._hash_to_block[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return block_id

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the blocks of `seq` that its computed tokens have filled since last time."""
        if not self.enable_prefix_caching:
            return
        hashes = self._seq_hashes.setdefault(seq.seq_id, [])
        bs = self.block_size
        for i in range(len(hashes), seq.num_computed_tokens // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            h = block_hash(hashes[-1] if hashes else seq.cache_salt, tokens)
            hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self._hash_to_block and block.hash is None:
                block.hash, block.token_ids = h, tokens
                self._hash_to_block[h] = block.block_id

    def free(self, seq: Sequence) -> None:
        """Release all blocks of `seq`, tail first so shared prefixes are evicted last."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
                if block.hash is None:
                    self._free.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.num_computed_tokens = 0
        self._seq_hashes.pop(seq.seq_id, None)
