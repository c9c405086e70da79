"""Adapter models on a live server: made by peft over the real gemma3:270m, created with the
`ollama` client (create_blob + create(adapters=...)) and with `corral create -f` (ADAPTER ./dir),
then generated from; their tokens equal the engine's own over the same adapters (which equal
peft's, tests/backends/test_lora_gemma.py). A mismatched adapter is refused with 400."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backends.lora import load_adapter
from backends.sampling_params import SamplingParams
from backends.testing import tiny_llama
from scheduler.engine import EngineConfig, LLMEngine
from tests.integration.conftest import start_server, stop_server
from tests.lora.adapters import VARIANTS, engine_tokens, load_gemma, make_peft, peft_files

pytestmark = pytest.mark.slow
N = 8
OPTIONS = {"temperature": 0, "num_predict": N}


@pytest.fixture(scope="module")
def server(tmp_path_factory, corral_cache):
    server = start_server(tmp_path_factory.mktemp("lora-server"), {"CORRAL_CACHE": str(corral_cache)})
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def adapters(gemma_gguf, corral_cache, tmp_path_factory):
    """Two peft adapters over gemma, and an engine holding them: the oracle for the server.

    peft makes the adapters over the float model (it wraps nn.Linear); the oracle applies them
    over the packed weights, as the server does by default."""
    lm = load_gemma(gemma_gguf, corral_cache)
    tmp = tmp_path_factory.mktemp("lora-adapters")
    dirs = []
    for i, variant in enumerate(VARIANTS[:2]):
        lm.model = make_peft(lm.model, tmp / f"a{i}", seed=40 + i, scale=0.05, copy=False,
                             **variant).unload()
        dirs.append(tmp / f"a{i}")
    del lm
    lm = load_gemma(gemma_gguf, corral_cache, weights="packed")
    eng = LLMEngine(lm, EngineConfig(num_ctx=512, num_kv_blocks=64, max_loras=2))
    for i, d in enumerate(dirs):
        eng.add_lora(load_adapter(peft_files(d), lm.model, key=f"a{i}", name=f"a{i}"))
    yield dirs, eng, tmp
    eng.shutdown()


def oracle(eng: LLMEngine, reply, lora: str | None) -> list[int]:
    prompt = reply.context[: reply.prompt_eval_count]
    stream = eng.add_request(prompt, SamplingParams(temperature=0.0, num_predict=N), lora=lora)
    return engine_tokens(stream, eng.loaded.eos_token_ids)


def outputs(reply) -> list[int]:
    return list(reply.context[reply.prompt_eval_count:])


def cli(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://")}
    return subprocess.run([sys.executable, "-m", "serve.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).parents[2])


def test_adapter_models_generate_their_own_tokens(server, adapters):
    import ollama

    dirs, eng, tmp = adapters
    client = ollama.Client(host=server.url, timeout=300)
    files = {name: client.create_blob(path) for name, path in peft_files(dirs[0]).items()}
    client.create(model="a1", from_="gemma3:270m", adapters=files)
    (tmp / "Modelfile").write_text(f"FROM gemma3:270m\nADAPTER ./{dirs[1].name}\n")
    done = cli(server, "create", "a2", "-f", str(tmp / "Modelfile"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.log()[-3000:]}"

    prompt = "Name three colors."
    base = client.generate(model="gemma3:270m", prompt=prompt, options=OPTIONS)
    replies = {m: client.generate(model=m, prompt=prompt, options=OPTIONS) for m in ("a1", "a2")}
    assert outputs(base) == oracle(eng, base, None), server.log()[-3000:]
    for i, (model, reply) in enumerate(replies.items()):
        assert outputs(reply) == oracle(eng, reply, f"a{i}"), (model, server.log()[-3000:])
        assert outputs(reply) != outputs(base), f"{model} answered as the base"

    ps = {m["name"]: m for m in httpx.get(server.url + "/api/ps", timeout=30).json()["models"]}
    assert {"gemma3:270m", "a1:latest", "a2:latest"} <= set(ps), ps
    base_size = ps["gemma3:270m"]["size"]
    for name in ("a1:latest", "a2:latest"):
        assert ps[name]["details"]["parent_model"] == "gemma3:270m"
        assert 0 < ps[name]["size"] < 0.05 * base_size, ps  # the shared base is counted once
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert 'vllm:lora_requests_info{' in metrics and 'max_lora="4"' in metrics, metrics[-2000:]


def test_mismatched_adapter_is_refused(server, tmp_path):
    import ollama

    client = ollama.Client(host=server.url, timeout=300)
    make_peft(tiny_llama().model, tmp_path / "llama", seed=1, **VARIANTS[0])
    files = {name: client.create_blob(path) for name, path in peft_files(tmp_path / "llama").items()}
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="bad", from_="gemma3:270m", adapters=files)
    assert err.value.status_code == 400, err.value
    assert "adapter does not match the base model" in str(err.value), err.value
