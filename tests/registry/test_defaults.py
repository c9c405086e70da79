"""The packaged default models and a store laid out as Ollama writes it."""

import hashlib
import json
import os

import pytest

from registry.create import list_models
from registry.defaults import ensure_default_models
from registry.manifest import MEDIA_TYPE_JSON, MEDIA_TYPE_MODEL
from registry.model import get_model
from registry.model_info import human_number, read_gguf
from registry.show import show_model
from registry.store import Store


def test_human_number():
    assert [human_number(n) for n in (268098176, 8030261248, 8_000_000_000, 22713728, 5_000_000, 1500, 999)] == [
        "268.10M", "8.0B", "8B", "22.71M", "5M", "2K", "999"]


@pytest.fixture(scope="module")
def default_store(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("defaults"))
    assert ensure_default_models(store) == ["gemma3:270m", "all-minilm:latest"]
    return store


@pytest.mark.slow
def test_defaults_idempotent(default_store):
    before = {p: p.stat().st_mtime_ns for p in default_store.root.rglob("*") if p.is_file()}
    assert ensure_default_models(default_store) == []
    after = {p: p.stat().st_mtime_ns for p in default_store.root.rglob("*") if p.is_file()}
    assert before == after
    assert [e["name"] for e in list_models(default_store)] == ["all-minilm:latest", "gemma3:270m"]


@pytest.mark.slow
def test_show_gemma(default_store):
    r = show_model(default_store, "gemma3:270m")
    d = r["details"]
    assert (d["format"], d["family"], d["families"], d["parameter_size"], d["quantization_level"]) == (
        "gguf", "gemma3", ["gemma3"], "268.10M", "Q4_K_M")
    assert r["model_info"]["general.architecture"] == "gemma3"
    assert 260e6 < r["model_info"]["general.parameter_count"] < 275e6
    assert r["model_info"]["tokenizer.ggml.tokens"] == []
    assert "general.name" not in r["model_info"]
    assert "<start_of_turn>" in r["template"] and r["capabilities"] == ["completion"]
    assert 'stop                           "<end_of_turn>"' in r["parameters"]
    assert any(t["name"] == "token_embd.weight" for t in r["tensors"])
    m = get_model(default_store, "gemma3:270m")
    digest = "sha256:" + hashlib.sha256(m.weights_path.read_bytes()).hexdigest()
    assert m.manifest.layers[0].digest == digest
    assert f"FROM {m.weights_path}" in r["modelfile"]


@pytest.mark.slow
def test_show_gemma_verbose_arrays(default_store):
    info = show_model(default_store, "gemma3:270m", verbose=True)["model_info"]
    assert len(info["tokenizer.ggml.tokens"]) == 262144


@pytest.mark.slow
def test_show_minilm(default_store):
    r = show_model(default_store, "all-minilm")
    assert r["details"]["family"] == "bert" and r["details"]["format"] == "safetensors"
    assert r["model_info"]["bert.embedding_length"] == 384
    assert r["model_info"]["bert.block_count"] == 6
    assert r["model_info"]["general.architecture"] == "bert"
    assert r["capabilities"] == ["embedding"]
    m = get_model(default_store, "all-minilm")
    files = m.safetensors_files
    assert {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"} <= set(files)
    assert m.weights_path is None
    media = {x.name: x.media_type for x in m.manifest.layers}
    assert media["model.safetensors"] == MEDIA_TYPE_MODEL and media["config.json"] == MEDIA_TYPE_JSON


def test_store_written_by_ollama(tmp_path):
    """A store built by hand from Ollama's layout rules lists, resolves and shows."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()

    def blob(data: bytes) -> tuple[str, int]:
        d = hashlib.sha256(data).hexdigest()
        (blobs / f"sha256-{d}").write_bytes(data)
        return f"sha256:{d}", len(data)

    # Not a real GGUF: show must still answer (model_info {}), as for a model whose weights
    # are unreadable.
    model = blob(b"not really gguf")
    template = blob(b"{{ .System }} {{ .Prompt }} {{ if .Suffix }}{{ .Suffix }}{{ end }}")
    params = blob(b'{"stop":["<|eot_id|>"],"temperature":0.6}')
    config = blob(json.dumps({"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
                              "model_type": "8.0B", "file_type": "Q4_0", "architecture": "amd64", "os": "linux",
                              "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config[0], "size": config[1]},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": model[0], "size": model[1]},
            {"mediaType": "application/vnd.ollama.image.template", "digest": template[0], "size": template[1]},
            {"mediaType": "application/vnd.ollama.image.params", "digest": params[0], "size": params[1]},
        ]}, indent=2).encode()
    mdir = tmp_path / "manifests/registry.ollama.ai/library/Llama3"
    mdir.mkdir(parents=True)
    (mdir / "8B").write_bytes(manifest)
    store = Store(tmp_path)
    [entry] = list_models(store)
    assert entry["name"] == "Llama3:8B"
    assert entry["digest"] == hashlib.sha256(manifest).hexdigest()
    assert entry["size"] == model[1] + template[1] + params[1] + config[1]
    assert entry["details"]["parameter_size"] == "8.0B"
    assert entry["modified_at"].count(":") >= 2
    m = get_model(store, "llama3:8b")
    assert m.name.model == "Llama3" and m.params == {"stop": ["<|eot_id|>"], "temperature": 0.6}
    r = show_model(store, "LLAMA3:8b")
    assert r["model_info"] == {} and "tensors" not in r
    assert "insert" in r["capabilities"]
    assert r["details"]["quantization_level"] == "Q4_0"
    assert "rootfs" not in json.dumps(r)
    os.utime(mdir / "8B")
