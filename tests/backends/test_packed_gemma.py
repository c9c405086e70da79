"""Packed weights on the real Gemma 3 270M (Q4_K_M GGUF): built once from the blocks into the
packed cache, later loads read the cache (same logits, no rebuild), memory and threads come back
across load/unload, and the engine's greedy tokens equal `generate` on the same packed model."""

from __future__ import annotations

import gc
import json
import threading

import pytest
import torch

from backends import loader
from backends.loader import LoadOptions, load_gguf
from backends.quant.modules import ShortlistHead
from backends.sampling_params import SamplingParams
from backends.testing import reference_greedy
from scheduler.engine import EngineConfig, LLMEngine


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
def test_packed_gemma_cache_reload_and_engine_parity(gemma_gguf, tmp_path, monkeypatch):
    from gguf import gguf_reader

    parses = []
    build_fields = gguf_reader.GGUFReader._build_fields
    monkeypatch.setattr(gguf_reader.GGUFReader, "_build_fields",
                        lambda self, *a, **k: parses.append(1) or build_fields(self, *a, **k))
    opts = LoadOptions(cache_dir=tmp_path, weights="packed")
    first = load_gguf(gemma_gguf, "sha256:gemma-packed", opts)
    # gguf's metadata parse (the slow part of a pack) once, lent to transformers' config and
    # tokenizer readers (backends/quant/one_reader.py)
    assert len(parses) == 1, f"{len(parses)} parses of the GGUF metadata"
    assert first.weights == "packed" and first.kv_cache_dtype is torch.bfloat16
    entry = tmp_path / "packed" / "sha256-gemma-packed"
    assert all((entry / name).is_file() for name in loader.PACKED_FILES)
    assert loader.int4pack_file(entry).is_file()  # the reloads below read the CPU packs
    # gemma's Q8_0 embedding is kept as int8 rows with residuals, which its tied head reads
    head, embed = first.model.lm_head, first.model.get_input_embeddings()
    assert isinstance(head, ShortlistHead)
    assert head.rows["qweight"].data_ptr() == embed.stored["qweight"].data_ptr()
    tok = first.tokenizer
    prompt = tok.encode("The three primary colors are")
    with torch.inference_mode():
        logits = first.model(torch.tensor([prompt])).logits
    del first
    gc.collect()

    def no_rebuild(*_):
        raise AssertionError("packed again")

    monkeypatch.setattr(loader, "write_packed", no_rebuild)
    # Loads from the cache give back their memory and threads (an earlier packed attempt grew
    # both across evict/reload); the first reload warms allocator and thread pools.
    rss, threads = [], []
    for _ in range(3):
        lm = load_gguf(gemma_gguf, "sha256:gemma-packed", opts)
        with torch.inference_mode():
            assert torch.equal(lm.model(torch.tensor([prompt])).logits, logits)
        del lm
        gc.collect()
        rss.append(_rss())
        threads.append(threading.active_count())
    assert rss[-1] - rss[0] < 300 * 2**20, f"RSS after each reload (bytes): {rss}"
    assert threads[-1] <= threads[0], f"threads after each reload: {threads}"

    lm = load_gguf(gemma_gguf, "sha256:gemma-packed", opts)
    want = reference_greedy(lm, prompt, 8)  # before the engine owns the model
    eng = LLMEngine(lm, EngineConfig(num_ctx=512, num_kv_blocks=64, max_num_batched_tokens=16))
    try:
        got = eng.generate(prompt, SamplingParams(temperature=0.0, num_predict=8))
        assert got == want[: len(got)] and len(got) >= 1, (got, want)
    finally:
        eng.shutdown()


@pytest.mark.slow
def test_a_servers_first_packed_load_packs_in_a_child_process(gemma_gguf, tmp_path, monkeypatch):
    """The server's loads (pack_in_child) leave a first load's packing to a child process, so
    their own process never holds its heap; this one then reads the entry as a warm load."""
    def not_here(*_):
        raise AssertionError("packed in the loading process")

    monkeypatch.setattr(loader, "write_packed", not_here)
    monkeypatch.setattr(loader, "_write_int4packs", not_here)
    opts = LoadOptions(cache_dir=tmp_path, weights="packed", pack_in_child=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child measures kernels at this process's thread count
    try:
        lm = load_gguf(gemma_gguf, "sha256:gemma-child", opts)
    finally:
        torch.set_num_threads(threads)
    entry = tmp_path / "packed" / "sha256-gemma-child"
    assert all((entry / name).is_file() for name in loader.PACKED_FILES)
    assert loader.int4pack_file(entry).is_file()
    kept = json.loads((tmp_path / "packed" / "kernels.json").read_text())  # the child's choices
    assert [key for key in kept if "|threads=1|" in key], list(kept)
    assert lm.weights == "packed" and isinstance(lm.model.lm_head, ShortlistHead)
