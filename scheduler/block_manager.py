"""Paged KV bookkeeping: fixed-size blocks, reference counts and the prefix cache.

A full block (block_size computed tokens) is identified by a chained hash of its tokens and
the hash of the block before it, so equal hashes mean equal prefixes. Freed blocks keep their
hash and stay findable until they are reused; the free list is kept in eviction order (least
recently freed first, worthless unhashed blocks before all of them).

A model whose layers mix full and sliding-window attention (Gemma 3: five sliding layers of
six) keeps two KV cache groups, as vLLM's hybrid cache manager does: the full layers' blocks
(`seq.block_table`) and the sliding layers' blocks (`seq.window_block_table`), from a smaller
pool. A sliding layer never reads a key more than `window` positions back, so once a block
falls wholly behind every future query's window its sliding block goes back to the pool
(its table entry becomes NULL_BLOCK). Both groups share the block hashes: a prefix hit holds
only where the sliding pool still has the blocks the first new query's window reaches.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from scheduler.sequence import Sequence

NULL_BLOCK = -1  # a sliding-window table entry whose block was released (never read again)


def block_hash(parent: bytes, token_ids: list[int] | tuple[int, ...]) -> bytes:
    return hashlib.blake2b(parent + array("q", token_ids).tobytes(), digest_size=16).digest()


def window_pool_size(window: int, block_size: int, max_seqs: int, max_batched_tokens: int) -> int:
    """The most blocks the sliding layers can hold at once: a running sequence holds the
    blocks from its window's first key to its step's last new token (window + new tokens,
    plus two blocks where those ends fall), and one step computes max_batched_tokens."""
    per_seq = -(-window // block_size) + 2
    return max_seqs * per_seq + -(-max_batched_tokens // block_size)


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None
    token_ids: tuple[int, ...] = ()


class BlockPool:
    """One KV cache group's blocks: reference counts, the free list and the hash index."""

    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._hash_to_block: dict[bytes, int] = {}

    @property
    def num_free(self) -> int:
        return len(self._free)

    def cached(self, h: bytes, tokens: tuple[int, ...]) -> int | None:
        block_id = self._hash_to_block.get(h)
        if block_id is None or self.blocks[block_id].token_ids != tokens:
            return None
        return block_id

    def num_revived(self, block_ids: list[int]) -> int:
        """How many of `block_ids` sit in the free list (taking them costs free blocks)."""
        return sum(1 for b in block_ids if b != NULL_BLOCK and self.blocks[b].ref_count == 0)

    def share(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1

    def take(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self._hash_to_block.get(block.hash) == block_id:
            del self._hash_to_block[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return block_id

    def register(self, block_id: int, h: bytes, tokens: tuple[int, ...]) -> None:
        block = self.blocks[block_id]
        if h not in self._hash_to_block and block.hash is None:
            block.hash, block.token_ids = h, tokens
            self._hash_to_block[h] = block.block_id

    def release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self._free[block_id] = None
            if block.hash is None:
                self._free.move_to_end(block_id, last=False)

    def release_all(self, table: list[int]) -> None:
        """Tail first, so shared prefixes are evicted last."""
        for block_id in reversed(table):
            if block_id != NULL_BLOCK:
                self.release(block_id)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True,
                 window: int | None = None, num_window_blocks: int = 0):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        if num_window_blocks < 0 or (num_window_blocks and (window is None or window < 1)):
            raise ValueError("a sliding-window group needs a positive window and pool")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.window = window
        # num_window_blocks 0: no window group, every layer reads the full pool's blocks.
        self.window_pool = BlockPool(num_window_blocks) if num_window_blocks else None
        self._seq_hashes: dict[int, list[bytes]] = {}  # seq_id -> hashes of its full blocks
        self.prefix_query_tokens = 0
        self.prefix_hit_tokens = 0

    @property
    def blocks(self) -> list[Block]:
        return self.pool.blocks

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _first_window_block(self, computed: int) -> int:
        """The first block the sliding layers still read when queries start at `computed`."""
        return max(0, computed - self.window + 1) // self.block_size

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
            block_id = self.pool.cached(parent, tokens)
            if block_id is None:
                break
            hits.append(block_id)
        while self.window_pool is not None and hits and self._window_hits(hits) is None:
            hits.pop()  # the sliding layers lack a block this hit's window reads: a shorter one
        return hits

    def _window_hits(self, hits: list[int]) -> list[int] | None:
        """The sliding-group table for a prefix hit of `hits` (full-group blocks), or None."""
        first = self._first_window_block(len(hits) * self.block_size)
        table = [NULL_BLOCK] * first
        for block_id in hits[first:]:
            block = self.pool.blocks[block_id]
            found = self.window_pool.cached(block.hash, block.token_ids)
            if found is None:
                return None
            table.append(found)
        return table

    def allocate_slots(self, seq: Sequence, num_new_tokens: int, cached: list[int] | None = None) -> bool:
        """Make room for `num_new_tokens` more tokens of `seq`, first taking `cached` blocks.

        Returns False (and changes nothing) when there are not enough free blocks.
        """
        cached = cached or []
        computed = seq.num_computed_tokens + len(cached) * self.block_size
        needed = self.blocks_needed(computed + num_new_tokens)
        fresh = needed - len(seq.block_table) - len(cached)
        if max(fresh, 0) + self.pool.num_revived(cached) > self.pool.num_free:
            return False
        window_cached: list[int] = []
        if self.window_pool is not None:
            self._release_behind_window(seq)
            window_cached = self._window_hits(cached) if cached else []
            if window_cached is None:  # only if the pool changed since lookup_prefix
                return False
            window_fresh = needed - len(seq.window_block_table) - len(window_cached)
            if max(window_fresh, 0) + self.window_pool.num_revived(window_cached) > self.window_pool.num_free:
                return False
        self._take(self.pool, seq.block_table, cached, fresh)
        if self.window_pool is not None:
            self._take(self.window_pool, seq.window_block_table, window_cached, window_fresh)
        if cached:
            self._seq_hashes[seq.seq_id] = [self.blocks[b].hash for b in cached]  # type: ignore[misc]
            seq.num_computed_tokens = computed
        return True

    @staticmethod
    def _take(pool: BlockPool, table: list[int], cached: list[int], fresh: int) -> None:
        for block_id in cached:
            if block_id != NULL_BLOCK:
                pool.share(block_id)
            table.append(block_id)
        table.extend(pool.take() for _ in range(max(fresh, 0)))

    def _release_behind_window(self, seq: Sequence) -> None:
        """Give back the sliding blocks no query from `num_computed_tokens` on will read."""
        table = seq.window_block_table
        for i in range(min(self._first_window_block(seq.num_computed_tokens), len(table))):
            if table[i] != NULL_BLOCK:
                self.window_pool.release(table[i])
                table[i] = NULL_BLOCK

    def note_prefix_query(self, num_prompt_tokens: int, num_hit_tokens: int) -> None:
        self.prefix_query_tokens += num_prompt_tokens
        self.prefix_hit_tokens += num_hit_tokens

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
            self.pool.register(seq.block_table[i], h, tokens)
            if self.window_pool is not None and seq.window_block_table[i] != NULL_BLOCK:
                self.window_pool.register(seq.window_block_table[i], h, tokens)

    def free(self, seq: Sequence) -> None:
        """Release all blocks of `seq`, tail first so shared prefixes are evicted last."""
        self.pool.release_all(seq.block_table)
        if self.window_pool is not None:
            self.window_pool.release_all(seq.window_block_table)
        seq.block_table = []
        seq.window_block_table = []
        seq.num_computed_tokens = 0
        self._seq_hashes.pop(seq.seq_id, None)
