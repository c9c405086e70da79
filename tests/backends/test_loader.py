"""Loading: the GGUF conversion cache, symlinked safetensors models, encoders."""

from __future__ import annotations

import json

import pytest
import torch

from backends import loader
from backends.loader import LoadOptions, load_gguf, load_safetensors


def test_default_dtype():
    assert loader.default_dtype("cpu") is torch.float32


def test_safetensors_mapping_loads_through_symlinks(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    src = tmp_path / "src"
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=5,
    ))
    model.save_pretrained(src)
    _write_tokenizer(src)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    files = {}
    for f in sorted(src.iterdir()):
        blob = blobs / f"sha256-{abs(hash(f.name))}"
        blob.write_bytes(f.read_bytes())
        files[f.name] = blob
    cache = tmp_path / "cache"
    lm = load_safetensors(files, LoadOptions(cache_dir=cache))
    assert lm.kind == "causal" and lm.dtype is torch.float32 and 5 in lm.eos_token_ids
    for name, p in model.state_dict().items():
        assert torch.equal(lm.model.state_dict()[name], p)
    linked = list((cache / "linked").iterdir())
    assert len(linked) == 1 and all(p.is_symlink() for p in linked[0].iterdir())
    # Same mapping, same directory.
    load_safetensors(files, LoadOptions(cache_dir=cache))
    assert len(list((cache / "linked").iterdir())) == 1


def test_rejects_escaping_file_names(tmp_path):
    with pytest.raises(ValueError):
        loader.linked_dir({"../x": tmp_path / "x"}, tmp_path / "cache")


def _write_tokenizer(path):
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(300)}
    Tokenizer(models.WordLevel(vocab, unk_token="t0")).save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))


def test_encoder_from_mapping(tmp_path):
    from transformers import BertConfig, BertModel

    src = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(src)
    _write_tokenizer(src)
    lm = load_safetensors({f.name: f for f in src.iterdir()}, LoadOptions(cache_dir=tmp_path / "c"),
                          kind="encoder")
    assert lm.kind == "encoder" and type(lm.model).__name__ == "BertModel"


@pytest.mark.slow
def test_gguf_converts_once_and_matches_generate(gemma_gguf, tmp_path, monkeypatch):
    originals = []
    real_read = loader.read_gguf

    def recording_read(path):
        model, tok = real_read(path)
        originals.append(model)
        return model, tok

    monkeypatch.setattr(loader, "read_gguf", recording_read)
    opts = LoadOptions(cache_dir=tmp_path)
    first = load_gguf(gemma_gguf, "sha256:abc", opts)
    assert len(originals) == 1
    converted = tmp_path / "converted" / "sha256-abc"
    assert (converted / "config.json").is_file()
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    assert first.eos_token_ids[:1] == [1] and 106 in first.eos_token_ids  # <end_of_turn>

    def no_convert(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(loader, "convert_gguf", no_convert)
    second = load_gguf(gemma_gguf, "sha256:abc", opts)
    assert second.max_context == 32768

    prompt = torch.tensor([second.tokenizer.encode("The capital of France is")])
    kw = dict(max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompt))
    with torch.inference_mode():
        want = originals[0].generate(prompt, **kw)
        got = second.model.generate(prompt, **kw)
    assert got.tolist() == want.tolist()


def test_minilm_encoder_loads_from_blob_mapping(minilm_dir, tmp_path):
    files = {str(p.relative_to(minilm_dir)): p for p in minilm_dir.rglob("*") if p.is_file()}
    lm = load_safetensors(files, LoadOptions(cache_dir=tmp_path), kind="encoder")
    assert lm.kind == "encoder" and lm.eos_token_ids == []
    batch = lm.tokenizer(["hello world"], return_tensors="pt")
    with torch.inference_mode():
        hidden = lm.model(**batch).last_hidden_state
    assert hidden.shape[-1] == lm.config.hidden_size == 384


def test_a_corrupted_converted_cache_is_rebuilt_once(tmp_path, monkeypatch):
    from backends import loader
    from safetensors import SafetensorError

    blob = tmp_path / "blob.gguf"
    blob.write_bytes(b"gguf")
    cached = tmp_path / "converted" / "sha256-abc"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    (cached / "model.safetensors").write_bytes(b"\x00garbage")
    conversions, loads = [], []

    def convert(path, out):
        conversions.append(path)
        (out / "config.json").write_text('{"rebuilt": true}')

    def load(directory, opts):
        loads.append((directory / "config.json").read_text())
        if "rebuilt" not in loads[-1]:
            raise SafetensorError("Error while deserializing header: HeaderTooSmall")
        return "loaded"

    monkeypatch.setattr(loader, "convert_gguf", convert)
    monkeypatch.setattr(loader, "load_pretrained_dir", load)
    assert load_gguf(blob, "sha256:abc", LoadOptions(cache_dir=tmp_path)) == "loaded"
    assert len(conversions) == 1 and len(loads) == 2
    assert not (cached / "model.safetensors").exists()


def test_a_corrupted_blob_is_a_clear_error(tmp_path, monkeypatch):
    import hashlib

    import pytest

    from backends import loader
    from registry.errors import APIError

    good = b"GGUF weights"
    digest = "sha256:" + hashlib.sha256(good).hexdigest()
    blob = tmp_path / "blob.gguf"
    blob.write_bytes(b"GGUF wEights")  # one flipped byte
    monkeypatch.setattr(loader, "convert_gguf", lambda *a: pytest.fail("converted a bad blob"))
    for name in (digest, digest[7:]):  # with the prefix, and the bare hex the store passes
        with pytest.raises(APIError) as err:
            load_gguf(blob, name, LoadOptions(cache_dir=tmp_path))
        assert f"model blob {digest} is corrupted" in err.value.message
    assert not (tmp_path / "converted" / digest.replace(":", "-")).exists()


def test_gguf_weights_setting_is_read_once_and_reaches_load_options(tmp_path):
    from scheduler.instances import InstanceConfig
    from serve.services import build_residency
    from serve.settings import Settings

    assert Settings.from_env({}).gguf_weights == "packed"
    assert Settings.from_env({"CORRAL_GGUF_WEIGHTS": "Float"}).gguf_weights == "float"
    assert Settings.from_env({"CORRAL_GGUF_WEIGHTS": "int3"}).gguf_weights == "packed"
    assert InstanceConfig(cache_dir=tmp_path).gguf_weights == "packed"
    settings = Settings.from_env({"CORRAL_GGUF_WEIGHTS": "float", "CORRAL_CACHE": str(tmp_path),
                                  "HOME": str(tmp_path)})
    factory = build_residency(settings).loader.__self__  # InstanceFactory.load, bound
    assert factory.config.gguf_weights == "float"


def test_a_corrupted_packed_cache_is_rebuilt_once(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    blob = tmp_path / "blob.gguf"
    blob.write_bytes(b"gguf")
    cached = tmp_path / "packed" / "sha256-abc"
    cached.mkdir(parents=True)
    for name in loader.PACKED_FILES:
        (cached / name).write_text("{}")
    builds, loads = [], []

    def build(path, out):
        builds.append(path)
        for name in loader.PACKED_FILES:
            (out / name).write_text('{"rebuilt": true}')

    def load(directory, opts):
        loads.append((directory / loader.PACKED_SPECS).read_text())
        if "rebuilt" not in loads[-1]:
            raise SafetensorError("Error while deserializing header: HeaderTooSmall")
        return "loaded"

    monkeypatch.setattr(loader, "write_packed", build)
    monkeypatch.setattr(loader, "load_packed_dir", load)
    assert load_gguf(blob, "sha256:abc", LoadOptions(cache_dir=tmp_path, weights="packed")) == "loaded"
    assert builds == [blob] and len(loads) == 2


def test_packing_refuses_a_corrupted_blob(tmp_path):
    from registry.errors import APIError

    blob = tmp_path / "blob.gguf"
    blob.write_bytes(b"not the bytes the digest names")
    with pytest.raises(APIError, match="corrupted"):
        loader.packed_dir(blob, "sha256:" + "0" * 64, tmp_path)
    assert not (tmp_path / "packed" / ("sha256-" + "0" * 64)).exists()


def _bpe_tokenizer_json(directory, extra_merge=None) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    text = ["the quick brown fox jumps over the lazy dog", "a lighthouse keeper kept a ledger"] * 50
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    tok.save(str(directory / "tokenizer.json"))
    if extra_merge:  # a merge part with a space in it (byte-level vocabularies can have them)
        data = json.loads((directory / "tokenizer.json").read_text())
        data["model"]["merges"].append(extra_merge)
        data["model"]["vocab"]["".join(extra_merge)] = len(data["model"]["vocab"])
        for part in extra_merge:
            data["model"]["vocab"].setdefault(part, len(data["model"]["vocab"]))
        (directory / "tokenizer.json").write_text(json.dumps(data))


@pytest.mark.parametrize("extra_merge", [None, ["a b", "c"]], ids=["plain", "space-in-merge"])
def test_a_compacted_tokenizer_encodes_the_same(tmp_path, extra_merge):
    from tokenizers import Tokenizer

    _bpe_tokenizer_json(tmp_path, extra_merge)
    before = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    loader.compact_tokenizer(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    merges = data["model"]["merges"]
    assert all(isinstance(m, list if extra_merge else str) for m in merges)
    after = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "the lazy keeper jumps over a brown ledger, quickly"
    assert after.encode(text).ids == before.encode(text).ids
    assert after.get_vocab() == before.get_vocab()
