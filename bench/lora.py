"""The LoRA rows: many adapter models batched on one base, measured through Corral's HTTP API.

(e) aggregate throughput of C clients spread over 4 adapter models vs C clients on the base alone
    (target >= 0.7x): the adapters' deltas are batched into the base's steps, not run apart;
(f) resident memory of the base + 4 adapter models vs the base alone, as `/api/ps` counts it and
    (when the bench started the server) as the server's VmRSS (target <= 1.1x).

The adapters are rank-8 PEFT LoRAs on every projection (q/k/v/o, gate/up/down) with random
weights, shaped from the base's GGUF header, uploaded as blobs and created with `adapters`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import numpy as np

from bench.adapters import OllamaGenerate
from bench.loadgen import make_client, run_phase
from bench.memory import vm_rss_bytes
from bench.metrics import PhaseStats
from bench.ollama_ops import load_model
from bench.prompts import PromptSource
from bench.scenarios import ScenarioResult

NUM_ADAPTERS = 4
RANK = 8
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


async def adapter_shapes(client: httpx.AsyncClient, url: str, model: str) -> dict[str, tuple[int, int]]:
    """HF module name -> (out, in) of each projection, from the base's tensors in `/api/show`."""
    from registry.adapters import base_weight_shapes, gguf_tensor_map
    from registry.model_info import ModelMetadata

    r = await client.post(f"{url}/api/show", json={"model": model})
    r.raise_for_status()
    show = r.json()
    info = show.get("model_info") or {}
    arch = info.get("general.architecture", "")
    meta = ModelMetadata(format="gguf", architecture=arch, kv=info, tensors=show.get("tensors") or [])
    layers = int(info.get(f"{arch}.block_count") or 0)
    tmap = gguf_tensor_map(meta.architecture, layers)
    shapes = base_weight_shapes(meta)
    modules = (f"model.layers.{i}.{p}" for i in range(layers) for p in PROJECTIONS)
    return {m: shapes[tmap.get_name(m)] for m in modules if tmap.get_name(m) in shapes}


def random_peft(shapes: dict[str, tuple[int, int]], seed: int) -> dict[str, bytes]:
    """A PEFT adapter's two files with random A and small random B (so the output changes)."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    tensors = {}
    for module, (out_f, in_f) in shapes.items():
        key = f"base_model.model.{module}"
        tensors[f"{key}.lora_A.weight"] = rng.standard_normal((RANK, in_f), np.float32) * 0.02
        tensors[f"{key}.lora_B.weight"] = rng.standard_normal((out_f, RANK), np.float32) * 0.02
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK,
              "target_modules": sorted({p.split(".")[1] for p in PROJECTIONS})}
    return {"adapter_config.json": json.dumps(config).encode(),
            "adapter_model.safetensors": save(tensors)}


async def create_adapter_model(client: httpx.AsyncClient, url: str, name: str, base: str,
                               files: dict[str, bytes]) -> None:
    digests = {}
    for fname, data in files.items():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = await client.post(f"{url}/api/blobs/{digest}", content=data)
        r.raise_for_status()
        digests[fname] = digest
    r = await client.post(f"{url}/api/create", json={"model": name, "from": base,
                                                     "adapters": digests, "stream": False},
                          timeout=600)
    if r.status_code != 200:
        raise RuntimeError(f"create {name}: {r.status_code} {r.text[:300]}")


async def ps_bytes(client: httpx.AsyncClient, url: str) -> int:
    r = await client.get(f"{url}/api/ps")
    r.raise_for_status()
    return sum(int(m.get("size") or 0) for m in r.json()["models"])


def vm_rss(pid: int | None) -> int | None:
    return None if pid is None else vm_rss_bytes(pid)


async def lora(url: str, model: str, source: PromptSource, *, concurrency: int,
               requests_per_client: int, num_predict: int, time_limit_s: float,
               server_pid: int | None = None) -> tuple[list[ScenarioResult], list[PhaseStats]]:
    names = [f"bench-lora-{i}" for i in range(NUM_ADAPTERS)]
    async with make_client(1, read_timeout=600) as client:
        shapes = await adapter_shapes(client, url, model)
        if not shapes:
            raise RuntimeError(f"/api/show lists no projection weights of {model}")
        await load_model(client, url, model)
        base_ps, base_rss = await ps_bytes(client, url), vm_rss(server_pid)
        for i, name in enumerate(names):
            await create_adapter_model(client, url, name, model, random_peft(shapes, seed=i))
            await load_model(client, url, name)
        lora_ps, lora_rss = await ps_bytes(client, url), vm_rss(server_pid)
    count = concurrency * requests_per_client
    prompts = [f"{source.tag()} Tell me about the number {n}." for n in range(count)]
    common = dict(concurrency=concurrency, requests_per_client=requests_per_client,
                  num_predict=num_predict, time_limit_s=time_limit_s / 2, prompts=prompts)
    base = await run_phase(url, OllamaGenerate(model), **common)
    spread = await run_phase(url, OllamaGenerate(model),
                             extra_for=lambda i: {"model": names[i % NUM_ADAPTERS]}, **common)
    base_stats = base.stats("corral (base)", concurrency)
    lora_stats = spread.stats(f"corral ({NUM_ADAPTERS} adapters)", concurrency)
    rss = (f"; VmRSS {lora_rss / 2**20:.0f} / {base_rss / 2**20:.0f} MiB = {lora_rss / base_rss:.3f}x"
           if base_rss and lora_rss else "")
    rows = [
        ScenarioResult("lora_throughput", f"LoRA: C={concurrency} over {NUM_ADAPTERS} adapter models",
                       "all on the base", base_stats.tok_s, f"spread over {NUM_ADAPTERS} adapters",
                       lora_stats.tok_s, "tok/s",
                       detail=f"rank {RANK} on {len(shapes)} projections; errors "
                              f"{base_stats.errors}/{lora_stats.errors}; target >= 0.7x"),
        ScenarioResult("lora_memory", f"LoRA: memory of base + {NUM_ADAPTERS} adapter models",
                       "base alone", base_ps / 2**20, f"base + {NUM_ADAPTERS} adapters",
                       lora_ps / 2**20, "MiB",
                       detail=f"/api/ps sizes{rss}; target <= 1.1x"),
    ]
    return rows, [base_stats, lora_stats]


async def _main(concurrency: int, num_predict: int, requests_per_client: int) -> None:
    """`python -m bench.lora`: the two rows alone, on a fresh server (the full report: `make bench`)."""
    import os
    import tempfile

    from bench.procs import corral_server

    work = Path(tempfile.mkdtemp(prefix="corral-bench-lora-"))
    cache = Path(os.environ.get("CORRAL_BENCH_CACHE", Path.home() / ".cache" / "corral-bench")) / "corral-cache"
    server = corral_server(models_dir=work / "models", cache_dir=cache, log_path=work / "corral.log",
                           num_parallel=concurrency)
    with server:
        server.wait_ready("/", 600)
        rows, phases = await lora(server.url, "gemma3:270m", PromptSource(), concurrency=concurrency,
                                  requests_per_client=requests_per_client, num_predict=num_predict,
                                  time_limit_s=3600, server_pid=server.proc.pid)
    for p in phases:
        print(f"{p.system}: {p.tok_s:.2f} tok/s, {p.requests} requests, {p.errors} errors")
    for r in rows:
        ratio = r.subject / r.base if r.base and r.subject is not None else float("nan")
        print(f"{r.title}: {r.base:.1f} -> {r.subject:.1f} {r.unit} = {ratio:.3f}x ({r.detail})")


if __name__ == "__main__":
    import argparse
    import asyncio

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--num-predict", type=int, default=32)
    p.add_argument("--requests-per-client", type=int, default=1)
    a = p.parse_args()
    asyncio.run(_main(a.concurrency, a.num_predict, a.requests_per_client))
