"""create with an adapter: PEFT and GGUF LoRA layers, checked against the base at create."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguf import GGUFWriter
from safetensors.numpy import save_file

from registry.adapters import base_model
from registry.create import CreateRequest, create_model, run_create
from registry.errors import APIError
from registry.manifest import MEDIA_TYPE_ADAPTER
from registry.model import get_model
from registry.store import Store
from tests.registry.test_create import upload

HIDDEN, Q_OUT = 8, 16


def base_gguf(path):
    """A one-layer llama GGUF whose attn_q is 16x8 (GGUF lists it as [8, 16])."""
    w = GGUFWriter(str(path), "llama")
    w.add_uint32("general.file_type", 1)
    w.add_block_count(1)
    w.add_embedding_length(HIDDEN)
    w.add_tensor("token_embd.weight", np.zeros((4, HIDDEN), dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((Q_OUT, HIDDEN), dtype=np.float16))
    for f in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        f()
    return path


def peft_dir(tmp, module="model.layers.0.self_attn.q_proj", out=Q_OUT, r=2, **config):
    d = tmp / f"peft-{module}-{out}"
    d.mkdir()
    key = f"base_model.model.{module}"
    save_file({f"{key}.lora_A.weight": np.ones((r, HIDDEN), np.float32),
               f"{key}.lora_B.weight": np.ones((out, r), np.float32)},
              str(d / "adapter_model.safetensors"))
    (d / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": r, "lora_alpha": 4, "target_modules": ["q_proj"], **config}))
    return d


def gguf_lora(path, arch="llama", out=Q_OUT, r=2, kind="adapter"):
    w = GGUFWriter(str(path), arch)
    w.add_string("general.type", kind)
    w.add_float32("adapter.lora.alpha", 4.0)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.ones((r, HIDDEN), np.float32))
    w.add_tensor("blk.0.attn_q.weight.lora_b", np.ones((out, r), np.float32))
    for f in (w.write_header_to_file, w.write_kv_data_to_file, w.write_tensors_to_file, w.close):
        f()
    return path


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "models")
    run_create(s, CreateRequest(model="base", files={"b.gguf": upload(s, base_gguf(tmp_path / "b.gguf"))}))
    return s


def create(store, adapters):
    return run_create(store, CreateRequest(model="a1", from_="base", adapters=adapters))


def check_early(store, adapters):
    """create_model itself refuses (the route answers 400 before any progress line)."""
    return create_model(store, CreateRequest(model="a1", from_="base", adapters=adapters))


def upload_dir(store, d):
    return {p.name: upload(store, p) for p in sorted(d.iterdir())}


def test_peft_adapter_is_stored_as_named_layers(store, tmp_path):
    events = create(store, upload_dir(store, peft_dir(tmp_path)))
    assert events[0] == {"status": "converting adapter"} and events[-1] == {"status": "success"}
    model = get_model(store, "a1")
    layers = [x for x in model.manifest.layers if x.media_type == MEDIA_TYPE_ADAPTER]
    assert sorted(x.name for x in layers) == ["adapter_config.json", "adapter_model.safetensors"]
    base = base_model(model)
    assert base.display_name == "base:latest" and base.digest == get_model(store, "base").digest


def test_gguf_lora_is_one_layer(store, tmp_path):
    create(store, {"lora.gguf": upload(store, gguf_lora(tmp_path / "l.gguf"))})
    layers = [x for x in get_model(store, "a1").manifest.layers if x.media_type == MEDIA_TYPE_ADAPTER]
    assert len(layers) == 1 and layers[0].name == ""


@pytest.mark.parametrize("make, reason", [
    (lambda s, t: upload_dir(s, peft_dir(t, out=12)), "q_proj is 12x8 in the adapter but 16x8 in the base"),
    (lambda s, t: upload_dir(s, peft_dir(t, module="model.layers.3.self_attn.q_proj")),
     "it adapts model.layers.3.self_attn.q_proj, which the llama base does not have"),
    (lambda s, t: upload_dir(s, peft_dir(t, use_dora=True)), "DoRA adapters are not supported"),
    (lambda s, t: {"l.gguf": upload(s, gguf_lora(t / "l.gguf", arch="gemma3"))},
     "the adapter is for 'gemma3', the base is 'llama'"),
    (lambda s, t: {"l.gguf": upload(s, gguf_lora(t / "l.gguf", out=4))}, "blk.0.attn_q is 4x8"),
    (lambda s, t: {"l.gguf": upload(s, gguf_lora(t / "l.gguf", kind="model"))}, "general.type is 'model'"),
    (lambda s, t: {"x.bin": upload(s, (t / "x.bin").write_bytes(b"junk") and t / "x.bin")},
     "supplied file was not in GGUF format"),
])
def test_mismatched_adapter_is_refused_at_create(store, tmp_path, make, reason):
    with pytest.raises(APIError) as err:
        check_early(store, make(store, tmp_path))
    assert err.value.status == 400 and reason in err.value.message, err.value.message
    assert get_model(store, "base")  # nothing else changed
