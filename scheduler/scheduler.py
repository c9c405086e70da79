"""Which tokens of which sequences run in the next step (vLLM v1 semantics).

There is no prefill or decode phase: every sequence has `num_tokens` and `num_computed_tokens`,
and each step hands out a token budget so that computed catches up with total. Running
sequences go first (a decode costs one token, an unfinished prompt takes what budget is left,
so prefill is chunked for any request), then waiting ones while the budget, the running cap
and the free blocks allow. When blocks run out, the newest running sequence is preempted: its
blocks are freed and it is recomputed later (the prefix cache usually makes that cheap).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from scheduler.block_manager import BlockManager
from scheduler.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512


@dataclass
class ScheduledBatch:
    # (sequence, number of new tokens computed this step); single-token entries first.
    entries: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.entries


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager):
        self.config = config
        self.block_manager = block_manager
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.config.max_num_batched_tokens
        # Decodes before unfinished prompts, so a long prefill never delays the others' tokens.
        order = sorted(self.running, key=lambda s: s.num_new_tokens != 1)
        scheduled: dict[int, int] = {}
        for seq in order:
            if budget <= 0:
                break
            n = min(seq.num_new_tokens, budget)
            if seq.status is not SequenceStatus.RUNNING or n <= 0:
                continue
            while not self.block_manager.allocate_slots(seq, n):
                victim = self.running.pop()
                budget += scheduled.pop(victim.seq_id, 0)
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            else:
                scheduled[seq.seq_id] = n
                budget -= n
        batch.entries = [(s, scheduled[s.seq_id]) for s in order if s.seq_id in scheduled]
        if not batch.preempted:
            self._admit(batch, budget)
        batch.entries.sort(key=lambda e: e[1] != 1)
        return batch

    def _admit(self, batch: ScheduledBatch, budget: int) -> None:
        bm = self.block_manager
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            cached = bm.lookup_prefix(seq) if seq.num_computed_tokens == 0 else []
            n = min(seq.num_tokens - seq.num_computed_tokens - len(cached) * bm.block_size, budget)
            if not bm.allocate_slots(seq, n, cached):
                break
            if seq.num_preemptions == 0 and seq.num_output_tokens == 0:
                bm.note_prefix_query(seq.num_tokens, len(cached) * bm.block_size)
                seq.num_cached_prompt_tokens = len(cached) * bm.block_size
                seq.num_prefix_query_tokens = seq.num_tokens
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.entries.append((seq, n))
            budget -= n

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str | None) -> None:
        """Remove `seq` wherever it is and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def recompute(self, seq: Sequence) -> None:
        """Drop the KV of a running `seq` (its tokens changed); it is prefilled again."""
        self.block_manager.free(seq)
