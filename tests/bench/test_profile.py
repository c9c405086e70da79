"""`make profile` on a tiny model: every row is measured and the parts add up to the step."""

from __future__ import annotations

import asyncio
import threading

from backends.testing import tiny_gemma3
from bench.profile import ROWS, install_hooks, profile, table
from scheduler.engine import EngineConfig, LLMEngine


def test_profile_rows_add_up_to_the_step():
    engine = LLMEngine(tiny_gemma3(), EngineConfig(block_size=4, num_kv_blocks=64, num_ctx=128,
                                                   max_num_seqs=4), start=False)
    engine.eos_token_ids = set()
    install_hooks(engine)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    try:
        results = {c: profile(engine, c, steps=3, warmup=1, loop=loop) for c in (1, 4)}
    finally:
        loop.call_soon_threadsafe(loop.stop)
    for r in results.values():
        for key in ("linears", "attention", "lm_head", "sample", "emit", "metadata"):
            assert r[key] > 0, (key, r)
        parts = sum(r[key] for key, _ in ROWS)
        assert abs(parts - r["step"]) < 1e-6 * max(1.0, r["step"]), r
    text = table(results)
    assert "LM head" in text and "C=4 ms" in text, text
    assert engine.stats().free_blocks == engine.stats().total_blocks
