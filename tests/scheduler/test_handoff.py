"""A step's outputs cross from the engine thread to asyncio in one call per event loop."""

from __future__ import annotations

import asyncio
import threading

from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy, tiny_llama
from scheduler.engine import EngineConfig, LLMEngine


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the callbacks other threads schedule on it."""

    def __init__(self):
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, *args, **kwargs):
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def _running_loop() -> CountingLoop:
    loop = CountingLoop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return loop


async def _collect(stream) -> list[int]:
    return [t async for out in stream for t in out.token_ids]


def test_one_callback_per_step_per_loop():
    model = tiny_llama()
    n_streams, n_tokens = 6, 5
    prompts = [[(s * 37 + i * 11) % 290 + 5 for i in range(7 + s)] for s in range(n_streams)]
    loops = [_running_loop(), _running_loop()]
    eng = LLMEngine(model, EngineConfig(block_size=4, num_kv_blocks=64, num_ctx=256,
                                        max_num_batched_tokens=256), start=False)
    params = SamplingParams(temperature=0.0, num_predict=n_tokens)
    streams = [eng.add_request(p, params, loop=loops[i % 2]) for i, p in enumerate(prompts)]
    futures = [asyncio.run_coroutine_threadsafe(_collect(s), loops[i % 2])
               for i, s in enumerate(streams)]
    for loop in loops:
        loop.threadsafe_calls = 0  # from here on, only the engine's
    eng.step()  # every prompt's prefill, and each stream's first token
    assert len(eng.scheduler.running) == n_streams
    steps = 1
    while eng.scheduler.has_work():
        eng.step()
        steps += 1
    assert steps == n_tokens
    got = [f.result(timeout=60) for f in futures]
    # N streams on a loop, one call a step: not one a token.
    assert [loop.threadsafe_calls for loop in loops] == [steps, steps], (steps, n_streams)
    assert got == [reference_greedy(model, p, n_tokens) for p in prompts]
    for loop in loops:
        loop.call_soon_threadsafe(loop.stop)
