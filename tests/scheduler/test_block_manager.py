"""Block accounting, prefix cache lookups and eviction order."""

from __future__ import annotations

from backends.sampling_params import SamplingParams
from scheduler.block_manager import NULL_BLOCK, BlockManager, window_pool_size
from scheduler.scheduler import Scheduler, SchedulerConfig
from scheduler.sequence import Sequence


def seq(tokens) -> Sequence:
    return Sequence(prompt_token_ids=list(tokens), params=SamplingParams())


def compute_all(bm: BlockManager, s: Sequence) -> None:
    assert bm.allocate_slots(s, s.num_new_tokens)
    s.num_computed_tokens = s.num_tokens
    bm.cache_full_blocks(s)


def test_allocate_and_free_restore_the_pool():
    bm = BlockManager(8, 4)
    s = seq(range(10))
    assert bm.allocate_slots(s, 10)
    assert len(s.block_table) == 3 and bm.num_free_blocks == 5
    s.num_computed_tokens = 10
    assert bm.allocate_slots(s, 1) and len(s.block_table) == 3  # fits in the third block
    s.token_ids += [1, 2, 3]
    assert bm.allocate_slots(s, 3) and len(s.block_table) == 4
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == [] and s.num_computed_tokens == 0


def test_allocation_failure_changes_nothing():
    bm = BlockManager(2, 4)
    s = seq(range(12))
    assert not bm.allocate_slots(s, 12)
    assert bm.num_free_blocks == 2 and s.block_table == []


def test_prefix_hits_share_blocks_with_ref_counts():
    bm = BlockManager(16, 4)
    a = seq(range(13))
    compute_all(bm, a)
    b = seq(list(range(12)) + [99, 98])
    hits = bm.lookup_prefix(b)
    assert hits == a.block_table[:3]
    assert bm.allocate_slots(b, b.num_tokens - 12, hits)
    assert b.num_computed_tokens == 12 and b.block_table[:3] == a.block_table[:3]
    assert all(bm.blocks[i].ref_count == 2 for i in hits)
    bm.free(a)
    assert all(bm.blocks[i].ref_count == 1 for i in hits)
    bm.free(b)
    assert bm.num_free_blocks == 16


def test_last_token_is_never_a_hit():
    bm = BlockManager(16, 4)
    a = seq(range(8))
    compute_all(bm, a)
    assert len(bm.lookup_prefix(seq(range(8)))) == 1
    assert len(bm.lookup_prefix(seq(range(9)))) == 2


def test_freed_cached_blocks_are_revived_then_evicted_lru():
    bm = BlockManager(4, 4)
    a = seq(range(9))
    compute_all(bm, a)
    bm.free(a)
    assert bm.num_free_blocks == 4
    again = seq(range(9))
    hits = bm.lookup_prefix(again)
    assert len(hits) == 2
    assert bm.allocate_slots(again, 1, hits) and bm.num_free_blocks == 1
    bm.free(again)
    # A different sequence needing every block evicts the cached ones.
    other = seq(range(100, 116))
    compute_all(bm, other)
    assert bm.lookup_prefix(seq(range(9))) == []
    bm.free(other)
    assert bm.num_free_blocks == 4


def test_unhashed_blocks_are_reused_before_cached_ones():
    bm = BlockManager(4, 4)
    a = seq(range(6))  # one full (hashed) block, one partial
    compute_all(bm, a)
    full, partial = a.block_table
    bm.free(a)
    b = seq(range(50, 53))
    assert bm.allocate_slots(b, 3)
    assert b.block_table == [partial]
    assert len(bm.lookup_prefix(seq(range(6)))) == 1


def test_prefix_caching_off():
    bm = BlockManager(8, 4, enable_prefix_caching=False)
    a = seq(range(9))
    compute_all(bm, a)
    assert bm.lookup_prefix(seq(range(9))) == []


def test_scheduler_budget_chunks_and_puts_decodes_first():
    bm = BlockManager(64, 4)
    sch = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=10), bm)
    a, b = seq(range(6)), seq(range(20, 45))
    sch.add(a)
    sch.add(b)
    batch = sch.schedule()
    assert [(s, n) for s, n in batch.entries] == [(a, 6), (b, 4)]
    a.num_computed_tokens, b.num_computed_tokens = 6, 4
    a.append_token(7)
    batch = sch.schedule()
    assert batch.entries == [(a, 1), (b, 9)]


def test_scheduler_caps_running_sequences():
    bm = BlockManager(64, 4)
    sch = Scheduler(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=100), bm)
    for i in range(3):
        sch.add(seq(range(i * 10, i * 10 + 5)))
    batch = sch.schedule()
    assert len(batch.entries) == 2 and len(sch.waiting) == 1


def test_scheduler_preempts_the_newest():
    bm = BlockManager(4, 4)
    sch = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100), bm)
    a, b = seq(range(8)), seq(range(10, 18))
    sch.add(a)
    sch.add(b)
    sch.schedule()
    for s in (a, b):
        s.num_computed_tokens = 8
        s.append_token(1)
    batch = sch.schedule()
    assert batch.preempted == [b] and batch.entries == [(a, 1)]
    assert sch.waiting[0] is b and b.block_table == [] and b.num_computed_tokens == 0


def test_decodes_are_scheduled_before_an_older_prefill():
    bm = BlockManager(64, 4)
    sch = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=8), bm)
    long, short = seq(range(40)), seq(range(50, 53))
    sch.add(long)
    sch.schedule()
    long.num_computed_tokens = 8
    sch.add(short)
    sch.schedule()  # long gets the whole budget, short waits
    long.num_computed_tokens = 16
    batch = sch.schedule()
    assert batch.entries == [(long, 8)]
    long.num_computed_tokens = 24
    sch.running.append(short)  # as if admitted and prefilled earlier
    short.status = long.status
    short.num_computed_tokens = 3
    short.append_token(9)
    assert bm.allocate_slots(short, 0)
    batch = sch.schedule()
    assert batch.entries == [(short, 1), (long, 7)]


def test_newest_is_preempted_for_an_older_decode():
    bm = BlockManager(3, 4)
    sch = Scheduler(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=100), bm)
    a, b = seq(range(4)), seq(range(10, 14))
    sch.add(a)
    sch.add(b)
    sch.schedule()
    a.num_computed_tokens = b.num_computed_tokens = 4
    a.append_token(1)
    b.append_token(2)
    # a's decode needs a second block; only preempting b (the newest) frees one.
    bm.allocate_slots(b, 1)  # b takes the last free block
    b.token_ids.append(3)  # b is now an unfinished 2-token chunk, so it sorts after a
    batch = sch.schedule()
    assert b in batch.preempted and [s for s, _ in batch.entries] == [a]


# ---- the window KV group (sliding-window layers) ---------------------------------------------

def window_manager(num_blocks: int = 32, window: int = 8, window_blocks: int = 16) -> BlockManager:
    return BlockManager(num_blocks, 4, window=window, num_window_blocks=window_blocks)


def test_window_group_releases_blocks_behind_every_future_window():
    bm = window_manager()
    s = seq(range(30))
    compute_all(bm, s)
    assert len(s.window_block_table) == 8 and bm.window_pool.num_free == 8
    s.append_token(5)
    assert bm.allocate_slots(s, 1)
    # The next query sits at 30 and reads keys 23..30: blocks 0-4 (keys 0..19) are never read.
    assert s.window_block_table[:5] == [NULL_BLOCK] * 5
    assert NULL_BLOCK not in s.window_block_table[5:]
    assert bm.window_pool.num_free == 16 - 3 and len(s.block_table) == 8
    bm.free(s)
    assert bm.window_pool.num_free == 16 and bm.num_free_blocks == 32


def test_window_prefix_hit_needs_the_blocks_the_window_reads():
    bm = window_manager()
    a = seq(range(25))
    compute_all(bm, a)
    s2 = seq(range(25))
    hits = bm.lookup_prefix(s2)  # six full blocks; the window reads blocks 4 and 5 of them
    assert hits == a.block_table[:6]
    assert bm.allocate_slots(s2, 1, hits)
    assert s2.window_block_table[:4] == [NULL_BLOCK] * 4
    assert s2.window_block_table[4:6] == a.window_block_table[4:6]
    bm.free(s2)
    # a releases its sliding blocks 0-3; released, they stay findable until reused.
    a.append_token(1)
    assert bm.allocate_slots(a, 1)
    assert len(bm.lookup_prefix(seq(list(range(12)) + [99]))) == 3
    other = seq(range(100, 152))
    compute_all(bm, other)  # takes every free sliding block, a's released ones among them
    assert bm.window_pool.num_free == 0
    assert len(bm.lookup_prefix(seq(list(range(12)) + [99]))) == 0  # full blocks alone: no hit
    bm.free(a)
    bm.free(other)
    # a's blocks 4 and 5 survived in both groups: the whole prefix hits again.
    assert len(bm.lookup_prefix(seq(range(25)))) == 6


def test_window_pool_size_runs_its_sequences_without_preemption():
    window, bs, max_seqs, budget = 8, 4, 3, 10
    bm = BlockManager(64, bs, window=window,
                      num_window_blocks=window_pool_size(window, bs, max_seqs, budget))
    sch = Scheduler(SchedulerConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget), bm)
    seqs = [seq(range(i * 50, i * 50 + 13 + i)) for i in range(max_seqs)]
    for s in seqs:
        sch.add(s)
    for step in range(60):
        batch = sch.schedule()
        assert not batch.preempted
        for s, n in batch.entries:
            s.num_computed_tokens += n
            bm.cache_full_blocks(s)
            if s.num_new_tokens == 0:
                s.append_token(step)
    assert all(s.num_tokens > 40 for s in seqs)
    for s in seqs:
        sch.finish(s, "stop")
    assert bm.window_pool.num_free == bm.window_pool.num_blocks
