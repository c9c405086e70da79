"""The engine against its oracle, transformers `generate` with greedy decoding."""

from __future__ import annotations

import asyncio

import pytest

from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy, tiny_gemma3, tiny_llama
from registry.errors import APIError
from scheduler.engine import EngineConfig, LLMEngine

GREEDY = dict(temperature=0.0)


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, num_predict=n, **kw)


# Models whose engines run few enough sequences that the sliding layers get their own,
# smaller KV pool (the window group): every test below then runs through it too.
WINDOW_GROUP: set[int] = set()


@pytest.fixture(scope="module", params=["llama", "gemma3", "gemma3-window-group"])
def model(request):
    if request.param == "llama":
        return tiny_llama()
    loaded = tiny_gemma3()
    if request.param == "gemma3-window-group":
        WINDOW_GROUP.add(id(loaded))
    return loaded


def make_engine(model, start: bool = True, **kw) -> LLMEngine:
    """An engine on its own thread, or (start=False) one the test steps by hand."""
    cfg = dict(block_size=4, num_kv_blocks=64, num_ctx=256, max_num_batched_tokens=64)
    if id(model) in WINDOW_GROUP:
        cfg["max_num_seqs"] = 4  # window pool 4 * (8/4 + 2) + 64/4 = 32 blocks of the 64
    cfg.update(kw)
    eng = LLMEngine(model, EngineConfig(**cfg), start=start)
    if id(model) in WINDOW_GROUP and cfg["num_kv_blocks"] == 64:
        assert eng.block_manager.window_pool is not None
    return eng


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 37 + i * 11) % 290 + 5 for i in range(n)]


def test_single_sequence_parity(model):
    eng = make_engine(model)
    try:
        p = prompt(1, 21)
        assert eng.generate(p, greedy(12)) == reference_greedy(model, p, 12)
        stats = eng.stats()
        assert stats.free_blocks == stats.total_blocks
    finally:
        eng.shutdown()


def drain(stream) -> list[int]:
    tokens = []
    for out in stream:
        tokens.extend(out.token_ids)
    return tokens


def run_until_idle(eng: LLMEngine, max_steps: int = 1000) -> None:
    for _ in range(max_steps):
        eng.step()
        if not eng.scheduler.has_work():
            return
    raise AssertionError("engine did not finish")


def test_batching_with_staggered_arrivals(model):
    eng = make_engine(model, start=False, max_num_batched_tokens=16)
    prompts = [prompt(s, n) for s, n in [(2, 9), (3, 23), (4, 5), (5, 14)]]
    streams = []
    for i, p in enumerate(prompts):
        streams.append(eng.add_request(p, greedy(10)))
        for _ in range(i + 1):
            eng.step()
    run_until_idle(eng)
    for p, s in zip(prompts, streams):
        assert drain(s) == reference_greedy(model, p, 10)
    assert eng.stats().free_blocks == eng.stats().total_blocks


def test_chunked_prefill_parity(model):
    eng = make_engine(model, max_num_batched_tokens=7)
    try:
        p = prompt(6, 40)
        assert eng.generate(p, greedy(8)) == reference_greedy(model, p, 8)
    finally:
        eng.shutdown()


def test_prefix_cache_hit_same_tokens(model):
    eng = make_engine(model)
    try:
        shared = prompt(7, 20)
        a, b = shared + prompt(8, 5), shared + prompt(9, 3)
        assert eng.generate(a, greedy(6)) == reference_greedy(model, a, 6)
        assert eng.stats().prefix_cache_hit_tokens == 0
        assert eng.generate(b, greedy(6)) == reference_greedy(model, b, 6)
        assert eng.stats().prefix_cache_hit_tokens >= 16
        # The very same prompt again: everything but the last block is reused.
        assert eng.generate(a, greedy(6)) == reference_greedy(model, a, 6)
        assert eng.stats().free_blocks == eng.stats().total_blocks
    finally:
        eng.shutdown()


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_preemption_recomputes_identically(model, prefix_caching):
    # 12 blocks of 4 tokens cannot hold three 20-token sequences at once.
    eng = make_engine(model, start=False, num_kv_blocks=12, num_ctx=48, enable_prefix_caching=prefix_caching)
    prompts = [prompt(s, 12) for s in (10, 11, 12)]
    streams = [eng.add_request(p, greedy(10)) for p in prompts]
    run_until_idle(eng)
    assert eng.stats().num_preemptions > 0
    for p, s in zip(prompts, streams):
        assert drain(s) == reference_greedy(model, p, 10)
    assert eng.stats().free_blocks == eng.stats().total_blocks


def test_num_predict_exact(model):
    eng = make_engine(model)
    try:
        for n in (1, 2, 7):
            outs = list(eng.add_request(prompt(13, 6), greedy(n)))
            assert sum(len(o.token_ids) for o in outs) == n
            assert outs[-1].finished and outs[-1].done_reason == "length"
            assert outs[-1].eval_count == n and outs[-1].prompt_eval_count == 6
    finally:
        eng.shutdown()


def test_abort_frees_blocks(model):
    eng = make_engine(model, start=False)
    s1 = eng.add_request(prompt(14, 30), greedy(-1))
    s2 = eng.add_request(prompt(15, 10), greedy(-1))
    for _ in range(4):
        eng.step()
    assert eng.stats().free_blocks < eng.stats().total_blocks
    eng.abort(s1.request_id)
    s2.close()
    eng.step()
    stats = eng.stats()
    assert stats.running == 0 and stats.waiting == 0
    assert stats.free_blocks == stats.total_blocks


def test_cancelled_async_stream_frees_blocks(model):
    eng = make_engine(model)

    async def consume() -> None:
        stream = eng.add_request(prompt(16, 12), greedy(-1))
        got = 0
        async for _ in stream:
            got += 1
            if got == 3:
                break
        await stream.aclose()

    async def cancel() -> None:
        stream = eng.add_request(prompt(17, 12), greedy(-1))

        async def reader():
            async for _ in stream:
                pass

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(consume())
        asyncio.run(cancel())
        for _ in range(200):
            stats = eng.stats()
            if stats.running == 0 and stats.waiting == 0 and stats.free_blocks == stats.total_blocks:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert stats.free_blocks == stats.total_blocks and stats.running == 0
    finally:
        eng.shutdown()


def test_async_stream_parity(model):
    eng = make_engine(model)
    prompts = [prompt(s, 9 + s) for s in range(3)]

    async def one(p):
        toks, last = [], None
        async for out in eng.add_request(p, greedy(8)):
            toks.extend(out.token_ids)
            last = out
        assert last.finished and last.done_reason == "length"
        return toks

    async def main():
        return await asyncio.gather(*(one(p) for p in prompts))

    try:
        results = asyncio.run(main())
        for p, toks in zip(prompts, results):
            assert toks == reference_greedy(model, p, 8)
    finally:
        eng.shutdown()


def test_queue_full_is_503(model):
    eng = make_engine(model, start=False, max_queue=2)
    eng.add_request(prompt(18, 5), greedy(3))
    eng.add_request(prompt(19, 5), greedy(3))
    with pytest.raises(APIError) as err:
        eng.add_request(prompt(20, 5), greedy(3))
    assert err.value.status == 503
    assert err.value.message == "server busy, please try again.  maximum pending requests exceeded"


def test_context_shift_keeps_generating(model):
    eng = make_engine(model, num_ctx=24, num_keep=4)
    try:
        outs = list(eng.add_request(prompt(21, 16), greedy(40)))
        assert sum(len(o.token_ids) for o in outs) == 40
        assert outs[-1].done_reason == "length"
        assert eng.stats().free_blocks == eng.stats().total_blocks
    finally:
        eng.shutdown()


def test_context_full_without_shift_is_length(model):
    eng = make_engine(model, num_ctx=24, context_shift=False)
    try:
        p = prompt(22, 16)
        outs = list(eng.add_request(p, greedy(40)))
        toks = [t for o in outs for t in o.token_ids]
        assert outs[-1].done_reason == "length"
        assert len(p) + len(toks) == 24 + 1
        assert toks == reference_greedy(model, p, len(toks))
        with pytest.raises(APIError) as err:
            eng.add_request(prompt(23, 30), greedy(4))
        assert err.value.status == 400
    finally:
        eng.shutdown()


def test_eos_ignore_eos_and_stop_strings(model):
    p = prompt(24, 10)
    ref = reference_greedy(model, p, 12)
    eng = make_engine(model)
    try:
        eng.eos_token_ids = {ref[5]}
        outs = list(eng.add_request(p, greedy(12)))
        toks = [t for o in outs for t in o.token_ids]
        assert toks[-1] == ref[5] and len(toks) == ref.index(ref[5]) + 1
        assert outs[-1].done_reason == "stop"
        # ignore_eos: the EOS counts toward num_predict but neither ends the reply nor is text
        outs = list(eng.add_request(p, greedy(12, ignore_eos=True)))
        assert [t for o in outs for t in o.token_ids] == ref and outs[-1].done_reason == "length"
        text = "".join(o.text for o in outs)
        assert text == model.tokenizer.decode([t for t in ref if t != ref[5]])
        eng.eos_token_ids = set()
        text_of = model.tokenizer.decode
        stop = text_of(ref[3:5])
        outs = list(eng.add_request(p, greedy(12, stop=[stop])))
        text = "".join(o.text for o in outs)
        assert outs[-1].done_reason == "stop"
        assert stop not in text and text == text_of(ref)[: text_of(ref).index(stop)]
    finally:
        eng.shutdown()


def test_seeded_sampling_is_independent_of_the_batch(model):
    params = SamplingParams(temperature=0.9, top_k=50, seed=1234, num_predict=8)
    p = prompt(25, 10)
    eng = make_engine(model)
    try:
        alone = eng.generate(p, params)
    finally:
        eng.shutdown()
    eng = make_engine(model, start=False)
    others = [eng.add_request(prompt(s, 7), SamplingParams(temperature=1.0, num_predict=12)) for s in (26, 27)]
    mine = eng.add_request(p, params)
    run_until_idle(eng)
    assert drain(mine) == alone
    for s in others:
        drain(s)


def test_logprobs_come_with_tokens(model):
    eng = make_engine(model)
    try:
        outs = list(eng.add_request(prompt(28, 6), greedy(3, logprobs=True, top_logprobs=2)))
        for o in outs:
            assert [lp.token_id for lp in o.logprobs] == o.token_ids
            assert len(o.logprobs[0].top) == 2 and o.logprobs[0].logprob <= 0
        outs = list(eng.add_request(prompt(28, 6), greedy(2)))
        assert all(o.logprobs == [] for o in outs)
    finally:
        eng.shutdown()


def test_shutdown_fails_outstanding_and_refuses_new(model):
    eng = make_engine(model, start=False)
    stream = eng.add_request(prompt(29, 6), greedy(-1))
    eng.step()
    eng.start()
    eng.shutdown()
    with pytest.raises(APIError):
        for _ in stream:
            pass
    with pytest.raises(APIError):
        eng.add_request(prompt(29, 6), greedy(2))
    assert eng.stats().free_blocks == eng.stats().total_blocks


def test_mixed_load_with_aborts_keeps_accounting(model):
    import random

    rng = random.Random(0)
    eng = make_engine(model, start=False, num_kv_blocks=24, num_ctx=64, max_num_batched_tokens=12)
    shared = prompt(30, 9)
    live, done = [], []
    for step in range(150):
        if step < 100 and rng.random() < 0.3:
            p = (shared if rng.random() < 0.5 else []) + prompt(rng.randrange(1000), rng.randrange(1, 20))
            params = greedy(rng.randrange(1, 15)) if rng.random() < 0.7 else SamplingParams(
                temperature=0.8, seed=rng.randrange(100), num_predict=rng.randrange(1, 15))
            live.append((p, params, eng.add_request(p, params)))
        if live and rng.random() < 0.05:
            live.pop(rng.randrange(len(live)))[2].close()
        eng.step()
        bm = eng.block_manager
        in_use = {b for s in eng.scheduler.running for b in s.block_table}
        assert bm.num_free_blocks + len(in_use) == bm.num_blocks
    run_until_idle(eng)
    stats = eng.stats()
    assert stats.free_blocks == stats.total_blocks and stats.running == stats.waiting == 0
    for p, params, stream in live:
        outs = list(stream)
        assert outs[-1].finished
        toks = [t for o in outs for t in o.token_ids]
        assert len(toks) == params.num_predict
        if params.greedy:
            assert toks == reference_greedy(model, p, params.num_predict)


def test_stream_for_a_loop_created_from_a_worker_thread(model):
    eng = make_engine(model)
    p = prompt(31, 7)

    async def main():
        loop = asyncio.get_running_loop()
        stream = await asyncio.to_thread(eng.add_request, p, greedy(4), None, None, loop)
        return [t async for o in stream for t in o.token_ids]

    try:
        got = asyncio.run(main())
        with pytest.raises(TypeError):
            next(iter(eng.add_request(p, greedy(1), loop=asyncio.new_event_loop())))
    finally:
        eng.shutdown()
    assert got == reference_greedy(model, p, 4)


def test_window_group_gives_sliding_layers_a_smaller_cache():
    loaded = tiny_gemma3()  # layers 0-1 slide over 8 tokens, layer 2 attends fully
    eng = LLMEngine(loaded, EngineConfig(block_size=4, num_kv_blocks=64, num_ctx=256,
                                         max_num_seqs=4, max_num_batched_tokens=64), start=False)
    sizes = [k.shape[0] for k, _ in eng.runner.kv_caches]
    assert sizes == [32, 32, 64]
    p = prompt(40, 30)
    stream = eng.add_request(p, greedy(20))
    run_until_idle(eng)
    assert drain(stream) == reference_greedy(loaded, p, 20)
    pool = eng.block_manager.window_pool
    assert pool.num_free == pool.num_blocks
    # As many sequences as the pool is sized for share it with no preemption.
    streams = [eng.add_request(prompt(41 + i, 25 + 3 * i), greedy(30)) for i in range(4)]
    run_until_idle(eng)
    assert eng.stats().num_preemptions == 0 and all(len(drain(s)) == 30 for s in streams)
