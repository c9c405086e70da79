"""Where an engine step's time goes, at 1 and 32 decoding sequences (`make profile`).

In-process, on the real gemma3:270m (the embedded GGUF through the loader, with whatever
weights it loads). The engine runs its steps on this thread (no engine thread), every sequence
decoding greedily, and outputs go to an asyncio loop on another thread as in the server. The
step's parts come from the engine's own `StepTimer` sections; the forward is split by hooks
installed here: the layers' projections, the paged attention call and the LM head. What is
left of the forward (norms, rotary, embedding, activations) is "other forward ops".

    python -m bench.profile [--clients 1,32] [--steps 16] [--kv-dtype bfloat16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import torch

from backends import attention
from backends.loader import LoadOptions, load_gguf
from backends.sampling_params import SamplingParams
from backends.threads import use_torch_threads
from scheduler.engine import EngineConfig, LLMEngine

ROWS = [
    ("schedule", "step preparation: schedule"),
    ("metadata", "step preparation: metadata"),
    ("linears", "layer linears"),
    ("attention", "attention"),
    ("lm_head", "LM head"),
    ("other", "other forward ops"),
    ("sample", "sampling"),
    ("emit", "detokenize + hand-off"),
    ("rest", "unaccounted"),
]
PROMPT = "The history of the city begins"


def _time_module(module: torch.nn.Module, timer, name: str) -> None:
    starts: list[float] = []
    module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
    module.register_forward_hook(
        lambda *_: timer.add(name, time.perf_counter() - starts.pop()) if timer.enabled else None)


def install_hooks(engine: LLMEngine) -> None:
    """Forward hooks on the projections and the LM head; a timed wrapper around attention."""
    timer, model = engine.runner.timer, engine.runner.model
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if ".layers." in name and leaf.endswith("_proj") and not list(module.children()):
            _time_module(module, timer, "linears")
    _time_module(model.get_output_embeddings(), timer, "lm_head")

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return attention.paged_attention(*args, **kwargs)
        finally:
            if timer.enabled:
                timer.add("attention", time.perf_counter() - start)

    from transformers import AttentionInterface

    AttentionInterface.register(attention.ATTN_IMPLEMENTATION, timed)


def _consume(loop: asyncio.AbstractEventLoop, streams) -> list:
    """A reader per stream on `loop`, as the server's response tasks are."""
    async def drain(stream):
        async for _ in stream:
            pass

    return [asyncio.run_coroutine_threadsafe(drain(s), loop) for s in streams]


def profile(engine: LLMEngine, clients: int, steps: int, warmup: int,
            loop: asyncio.AbstractEventLoop) -> dict[str, float]:
    """Mean ms per decode step of each row, with `clients` sequences decoding."""
    tok = engine.loaded.tokenizer
    prompts = [tok.encode(f"{PROMPT} {i}") for i in range(clients)]
    params = SamplingParams(temperature=0.0, num_predict=warmup + steps + 8)
    streams = asyncio.run_coroutine_threadsafe(_add(engine, prompts, params, loop), loop).result()
    readers = _consume(loop, streams)
    while len(engine.scheduler.running) < clients or engine.scheduler.waiting:
        engine.step()  # the prompts' prefill
    for _ in range(warmup):
        engine.step()
    timer = engine.runner.timer
    timer.reset()
    timer.enabled = True
    start = time.perf_counter()
    for _ in range(steps):
        if len(engine.scheduler.running) != clients:
            raise RuntimeError("a sequence stopped inside the measured window")
        engine.step()
    wall = time.perf_counter() - start
    timer.enabled = False
    for s in streams:
        s.abort()
    engine.step()  # takes the aborts
    for r in readers:
        r.result(timeout=60)
    t = dict(timer.totals)
    t["other"] = t.get("forward", 0.0) - sum(t.get(k, 0.0) for k in ("linears", "attention", "lm_head"))
    t["rest"] = wall - sum(t.get(k, 0.0) for k in ("schedule", "metadata", "forward", "sample", "emit"))
    t["step"] = wall
    return {k: v * 1000 / steps for k, v in t.items()}


async def _add(engine, prompts, params, loop):
    return [engine.add_request(p, params, loop=loop) for p in prompts]


def table(results: dict[int, dict[str, float]]) -> str:
    cols = sorted(results)
    head = "| part | " + " | ".join(f"C={c} ms | %" for c in cols) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(cols)]
    for key, label in ROWS + [("step", "**step total**")]:
        cells = []
        for c in cols:
            r = results[c]
            cells.append(f"{r.get(key, 0.0):.1f} | {100 * r.get(key, 0.0) / r['step']:.0f}%")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| tokens/s (decode) | " + " | ".join(
        f"{1000 * c / results[c]['step']:.1f} | " for c in cols) + " |")
    return "\n".join(lines)


def load_gemma(cache_dir: Path, kv_dtype: str | None, weights: str = "packed"):
    from bench.cli import gguf_path

    path = gguf_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_gguf(path, digest, LoadOptions(cache_dir=cache_dir, weights=weights))
    if kv_dtype:
        loaded.kv_cache_dtype = getattr(torch, kv_dtype)
    return loaded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1,32", help="comma-separated decode batch sizes")
    ap.add_argument("--steps", type=int, default=16, help="measured decode steps per size")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (CORRAL_NUM_THREADS)")
    ap.add_argument("--kv-dtype", default=None, help="KV cache dtype (default: the loader's)")
    ap.add_argument("--weights", choices=("float", "packed"), default="packed",
                    help="GGUF weights in memory (CORRAL_GGUF_WEIGHTS)")
    ap.add_argument("--cache-dir", type=Path, default=Path(
        os.environ.get("CORRAL_TEST_CACHE") or Path.home() / ".cache" / "corral-bench" / "cache"))
    a = ap.parse_args(argv)
    use_torch_threads(a.threads)  # as the server does
    loaded = load_gemma(a.cache_dir, a.kv_dtype, a.weights)
    sizes = [int(c) for c in a.clients.split(",")]
    engine = LLMEngine(loaded, EngineConfig(num_ctx=512, max_num_seqs=max(sizes),
                                            num_kv_blocks=max(sizes) * 8 + 8), start=False)
    engine.eos_token_ids = set()  # every sequence decodes through the measured window
    install_hooks(engine)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    results = {c: profile(engine, c, a.steps, a.warmup, loop) for c in sizes}
    kv = engine.runner.kv_caches[0][0].dtype
    print(f"gemma3:270m, weights {loaded.weights} {loaded.dtype}, KV {kv}, "
          f"{torch.get_num_threads()} torch threads, {a.steps} decode steps per size")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
