"""Packed GGUF weights (backends/quant): blocks decode exactly, packed matmuls equal the
dequantized reference per quant type and per kernel, kernel choices are cached per CPU, the
embedding gathers quantized rows, and a packed model round-trips through its cache form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf.quants import dequantize
from torch import nn

from backends.quant import kernels
from backends.quant.blocks import Blocks, decode
from backends.quant.gguf_model import _pack, _tied_head, assemble, fuse_siblings
from backends.quant.kernels import CANDIDATES, KernelTable
from backends.quant.modules import (FusedProjections, PackedEmbedding, PackedLinear, ProjectionSlice,
                                    ShortlistHead, top_indices)
from backends.quant.pack import int4_tensors, int8_tensors
from tests.backends.quant_cases import QTYPES, write_and_read

ROOT = Path(__file__).resolve().parents[2]


def _reference(tensor) -> torch.Tensor:
    cols, rows = int(tensor.shape[0]), int(tensor.shape[1])
    return torch.from_numpy(dequantize(tensor.data, tensor.tensor_type).reshape(rows, cols).copy())


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_blocks_decode_exactly(qtype, tmp_path):
    t = write_and_read(tmp_path / "w.gguf", qtype)
    blocks = decode(t.data, t.tensor_type, int(t.shape[1]), int(t.shape[0]))
    np.testing.assert_array_equal(blocks.dequantize(), _reference(t).numpy())


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_packed_matmul_matches_dequantized(qtype, tmp_path):
    t = write_and_read(tmp_path / "w.gguf", qtype)
    rows, cols = int(t.shape[1]), int(t.shape[0])
    ref = _reference(t)
    spec, stored = _pack(nn.Linear(cols, rows, bias=False), qtype,
                         decode(t.data, qtype, rows, cols), None)
    # 4-bit codes pack as they are; 5- to 8-bit ones in groups of 32 as two nibbles each.
    assert spec["fmt"] == ("int4" if qtype.name.startswith("Q4") else
                           "int8" if qtype.name == "Q6_K" else "int4x2")
    torch.manual_seed(0)
    for kernel in CANDIDATES[spec["fmt"]]:
        layer = PackedLinear(spec["fmt"], cols, rows, stored, KernelTable(forced=kernel))
        for batch in (1, 3, 40):  # both buckets
            x = torch.randn(batch, cols)
            want = x @ ref.T
            got = layer(x)
            assert got.dtype == torch.float32 and got.shape == want.shape
            # bf16 activations: ~1%.
            err = _rel_err(got, want)
            assert err < 0.03, f"{qtype.name} {kernel} batch {batch}: relative error {err:.4f}"


def test_kernel_choices_are_measured_once_per_cpu(tmp_path, monkeypatch):
    cache = tmp_path / "kernels.json"
    table = KernelTable(cache)
    choice = table.choose("int8", 512, 256)
    assert set(choice) == {"decode", "batch"} and set(choice.values()) <= set(CANDIDATES["int8"])
    table.save()
    assert kernels.cpu_key() in json.loads(cache.read_text())

    def no_measure(*_):
        raise AssertionError("measured again")

    monkeypatch.setattr(KernelTable, "_measure", no_measure)
    assert KernelTable(cache).choose("int8", 512, 256) == choice


def assert_picks_the_best(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor,
                          qscale: torch.Tensor) -> None:
    """Each row's argmax of a rescored head's logits is the exact argmax, or a token whose
    exact logit is within the residuals' rounding of it (a near-tie either way)."""
    picks, best = got.argmax(-1, keepdim=True), want.argmax(-1, keepdim=True)
    # Each logit is off by at most sum(|x|) times a 28th of its row's int8 step.
    slack = x.abs().sum(-1, keepdim=True) * (qscale[picks] + qscale[best]) / 28
    assert (want.gather(1, picks) >= want.gather(1, best) - slack).all()


GROUPS_OF_32 = [q for q in QTYPES if q.name in ("Q4_0", "Q5_0", "Q8_0")]


@pytest.mark.parametrize("qtype", GROUPS_OF_32, ids=lambda q: q.name)
def test_an_untied_embedding_in_groups_of_32_is_gathered_exactly(qtype, tmp_path):
    t = write_and_read(tmp_path / "e.gguf", qtype, rows=3008, cols=128)
    spec, stored = _pack(nn.Embedding(3008, 128), qtype, decode(t.data, qtype, 3008, 128), None)
    assert spec["fmt"] == "blocks"
    emb = PackedEmbedding(stored, torch.float32, embed_scale=2.0)
    ids = torch.tensor([[0, 7, 3007], [5, 5, 1]])
    torch.testing.assert_close(emb(ids), _reference(t)[ids] * 2.0, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", CANDIDATES["rescored"])
@pytest.mark.parametrize("qtype", GROUPS_OF_32, ids=lambda q: q.name)
def test_a_tied_embedding_keeps_int8_rows_with_residuals_and_its_head_rescores(
        qtype, kernel, tmp_path):
    t = write_and_read(tmp_path / "e.gguf", qtype, rows=3008, cols=128)
    ref = _reference(t)
    blocks = decode(t.data, qtype, 3008, 128)
    spec, stored = _pack(nn.Embedding(3008, 128), qtype, blocks, None, tied=True)
    assert spec["fmt"] == "int8_residual"
    emb = PackedEmbedding(stored, torch.float32, embed_scale=2.0)
    ids = torch.tensor([[0, 7, 3007], [5, 5, 1]])
    # Within a 28th of the row's int8 step of the decoded weight (pack.RESIDUAL_STEPS);
    # without the residual, off by up to half a step.
    err = (emb(ids) / 2.0 - ref[ids]).abs()
    step = stored["qscale"][ids].unsqueeze(-1)
    assert (err <= step / 28 + 1e-7).all()
    assert ((stored["qweight"][ids].float() * step - ref[ids]).abs() > step / 4).any()

    tensors = {f"emb.{k}": v for k, v in stored.items()}
    head_spec = _tied_head("head", nn.Linear(128, 3008), blocks, "emb", spec, tensors)
    assert head_spec == {"kind": "linear", "in": 128, "out": 3008, "tied_to": "emb",
                         "fmt": "rescored"}
    own = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    head = ShortlistHead(128, 3008, {**stored, **own}, KernelTable(forced=kernel), shortlist=16)
    assert head.rows["qweight"].data_ptr() == emb.stored["qweight"].data_ptr()  # one copy
    torch.manual_seed(0)
    for batch in (3, 40):  # both buckets
        x = torch.randn(batch, 128)
        want, got = x @ ref.T, head(x)
        assert_picks_the_best(got, want, x, stored["qscale"])
        # The shortlisted logits are exact but for the residuals' rounding; the rest approximate.
        top = want.topk(4, -1).indices
        bound = (x.abs().sum(-1, keepdim=True) * stored["qscale"][top] / 28)
        assert ((got.gather(1, top) - want.gather(1, top)).abs() <= bound + 1e-4).all()
        assert 0 < _rel_err(got, want) < 0.2


def test_a_tied_head_the_int4_kernel_cannot_take_multiplies_the_embeddings_rows(tmp_path):
    t = write_and_read(tmp_path / "e.gguf", GROUPS_OF_32[-1], rows=3000, cols=128)
    blocks = decode(t.data, GROUPS_OF_32[-1], 3000, 128)
    spec, stored = _pack(nn.Embedding(3000, 128), GROUPS_OF_32[-1], blocks, None, tied=True)
    head_spec = _tied_head("head", nn.Linear(128, 3000), blocks, "emb", spec, {})
    assert head_spec["fmt"] == "int8" and head_spec["tied_to"] == "emb"  # 3000 % 16 != 0
    head = PackedLinear("int8", 128, 3000, stored, KernelTable())
    x = torch.randn(2, 128)
    assert _rel_err(head(x), x @ _reference(t).T) < 0.03


def test_top_nibbles_approximate_codes_wider_than_4_bits(tmp_path):
    from gguf import GGMLQuantizationType as QT

    for qtype, bits in ((QT.Q4_0, 4), (QT.Q5_0, 5), (QT.Q8_0, 8)):
        t = write_and_read(tmp_path / f"{qtype.name}.gguf", qtype)
        blocks = decode(t.data, qtype, int(t.shape[1]), int(t.shape[0]))
        top = blocks.top_nibbles()
        assert int(top.codes.max()) < 16
        err = np.abs(top.dequantize() - blocks.dequantize())
        # Off by at most half the dropped bits' span, and not at all where nothing is dropped.
        bound = np.abs(blocks.scale).repeat(blocks.group, 1) * ((1 << (bits - 4)) - 1) / 2
        assert (err <= bound + 1e-6).all(), qtype.name


def test_a_group_16_embedding_stays_per_row_int8_shared_with_its_head(tmp_path):
    from gguf import GGMLQuantizationType as QT

    t = write_and_read(tmp_path / "e.gguf", QT.Q6_K, rows=300, cols=256)
    blocks = decode(t.data, QT.Q6_K, 300, 256)
    spec, stored = _pack(nn.Embedding(300, 256), QT.Q6_K, blocks, None)
    assert spec["fmt"] == "int8"
    head_spec = _tied_head("head", nn.Linear(256, 300), blocks, "emb", spec, {})
    assert head_spec["fmt"] == "int8" and head_spec["tied_to"] == "emb"
    head = PackedLinear("int8", 256, 300, stored, KernelTable(forced="int8_weight_only"))
    x = torch.randn(2, 256)
    assert _rel_err(head(x), x @ _reference(t).T) < 0.03


def _tiny_packed(tmp_path, arch: str = "llama"):
    """A tiny llama (or qwen2, whose q/k/v have biases) with its linears and embedding
    quantized (Q4_0 / Q8_0) and packed."""
    from gguf import GGMLQuantizationType as QT
    from gguf.quants import quantize
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch, vocab_size=256, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    for name, p in model.named_parameters():
        if name.endswith(".bias"):  # initialized to zeros: make leaving one out show
            p.data = torch.randn_like(p) * 0.5
    specs, tensors = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and name != "lm_head":
            w = module.weight.detach().numpy()
            qtype = QT.Q8_0 if isinstance(module, nn.Embedding) or "down" in name else QT.Q4_0
            raw = quantize(w, qtype)
            blocks = decode(raw, qtype, *w.shape)
            module.weight.data = torch.from_numpy(blocks.dequantize())  # the float reference
            tied = name == "model.embed_tokens"
            specs[name], stored = _pack(module, qtype, blocks, None, tied)
            tensors.update({f"{name}.{k}": v for k, v in stored.items()})
            if tied:
                specs["lm_head"] = _tied_head("lm_head", model.lm_head, blocks, name,
                                              specs[name], tensors)
    tensors.update({k: v for k, v in model.state_dict().items() if "norm" in k or k.endswith(".bias")})
    assert fuse_siblings(specs, tensors) == 4  # as read_packed does: q/k/v and gate/up
    return config, model, specs, tensors


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_model_round_trips_through_its_cache_form(arch, tmp_path):
    from safetensors.torch import load_file, save_file

    config, reference, specs, tensors = _tiny_packed(tmp_path, arch)
    table = KernelTable(tmp_path / "kernels.json")
    first = assemble(config, specs, tensors, table)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "w.safetensors"))
    (tmp_path / "packed.json").write_text(json.dumps(specs))
    second = assemble(config, json.loads((tmp_path / "packed.json").read_text()),
                      load_file(str(tmp_path / "w.safetensors")), table)
    ids = torch.tensor([[1, 17, 33, 200, 5, 9]])
    with torch.inference_mode():
        a, b, ref = first(ids).logits, second(ids).logits, reference(ids).logits
    assert torch.equal(a, b)
    # The shortlisted logits carry the packed layers' error only; the tail is approximate.
    assert torch.equal(a.argmax(-1), ref.argmax(-1))
    top = ref.topk(8, -1).indices
    assert _rel_err(a.gather(-1, top), ref.gather(-1, top)) < 0.05
    assert isinstance(second.lm_head, ShortlistHead) and isinstance(second.model.embed_tokens,
                                                                    PackedEmbedding)
    assert not any(p.is_meta for p in second.parameters())


_SUBPROCESS_CHECK = """
import sys, torch
from gguf import GGMLQuantizationType as QT
from pathlib import Path
from torch import nn
from tests.backends.test_quant import _reference, _rel_err, assert_picks_the_best
from tests.backends.quant_cases import write_and_read
from backends.quant.blocks import Blocks, decode
from backends.quant.gguf_model import _pack
from backends.quant.kernels import CANDIDATES, KernelTable
from backends.quant.modules import PackedLinear
print("capability", torch.backends.cpu.get_cpu_capability())
for q in (QT.Q4_K, QT.Q5_0, QT.Q6_K):
    t = write_and_read(Path(sys.argv[1]) / (q.name + ".gguf"), q)
    rows, cols = int(t.shape[1]), int(t.shape[0])
    spec, stored = _pack(nn.Linear(cols, rows), q, decode(t.data, q, rows, cols), None)
    # Each tensor 8 bytes off a 64-byte boundary, where safetensors maps them from a file.
    def off8(t):
        buf = torch.empty(t.numel() * t.element_size() + 64, dtype=torch.uint8)
        start = (-buf.data_ptr()) % 64 + 8
        view = buf[start:start + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
        return view.copy_(t)
    stored = {k: off8(v) for k, v in stored.items()}
    for kernel in CANDIDATES[spec["fmt"]]:
        layer = PackedLinear(spec["fmt"], cols, rows, stored, KernelTable(forced=kernel))
        for batch in (1, 40):
            x = torch.randn(batch, cols)
            err = _rel_err(layer(x), x @ _reference(t).T)
            print(q.name, kernel, batch, round(err, 5))
            assert err < 0.03
# A tied Q8_0 embedding's head, through both approximate passes.
from backends.quant.gguf_model import _tied_head
from backends.quant.modules import ShortlistHead
t = write_and_read(Path(sys.argv[1]) / "e.gguf", QT.Q8_0, rows=3008, cols=128)
blocks = decode(t.data, QT.Q8_0, 3008, 128)
spec, stored = _pack(nn.Embedding(3008, 128), QT.Q8_0, blocks, None, tied=True)
tensors = {}
_tied_head("head", nn.Linear(128, 3008), blocks, "emb", spec, tensors)
stored |= {k.removeprefix("head."): v for k, v in tensors.items()}
torch.manual_seed(0)
for kernel in CANDIDATES["rescored"]:
    head = ShortlistHead(128, 3008, stored, KernelTable(forced=kernel))
    for batch in (1, 40):
        x = torch.randn(batch, 128)
        assert_picks_the_best(head(x), x @ _reference(t).T, x, stored["qscale"])
        print("head", kernel, batch)
print("ok")
"""


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_both_cpu_paths_run_the_packed_kernels(capability, tmp_path):
    """ATEN_CPU_CAPABILITY=avx2 forces torch's AVX2 kernels on an AVX-512 machine. In a
    subprocess: a kernel fed a misaligned weight segfaults there (AVX-512 int8)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "default":
        env["ATEN_CPU_CAPABILITY"] = capability
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS_CHECK, str(tmp_path)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("ok"), (
        f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    if capability == "avx2":
        assert "capability AVX2" in proc.stdout, proc.stdout


def test_int4_packs_are_kept_per_cpu_and_read_back(tmp_path, monkeypatch):
    """The CPU layout of the int4 weights is made at the first load and read at the next ones
    (no packing then); a damaged file of them is packed again, not an error."""
    from safetensors.torch import save_file

    from backends import loader

    config, _, specs, tensors = _tiny_packed(tmp_path)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "weights.safetensors"))
    table = KernelTable(tmp_path / "kernels.json")
    read, prepacked = loader._read_packed_tensors(tmp_path)
    assert not prepacked
    first = assemble(config, specs, read, table)
    loader._write_int4packs(first, tmp_path)
    runtime = loader.int4pack_file(tmp_path)
    assert torch.backends.cpu.get_cpu_capability() in runtime.name and runtime.is_file()

    def no_packing(_):
        raise AssertionError("packed again")

    monkeypatch.setattr(kernels, "cpu_int4_pack", no_packing)
    read, prepacked = loader._read_packed_tensors(tmp_path)
    # Nibbles are read only where no pack was kept: an int4x2 weight whose kernels here are
    # int8 ones keeps none (and is not packed either: cpu_int4_pack would raise).
    assert prepacked and not any(k.removesuffix(".nibbles") + ".int4pack" in read
                                 for k in read if k.endswith(".nibbles"))
    second = assemble(config, specs, read, table)
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.inference_mode():
        assert torch.equal(first(ids).logits, second(ids).logits)

    monkeypatch.undo()
    runtime.write_bytes(b"\x00" * 64)
    read, prepacked = loader._read_packed_tensors(tmp_path)
    assert not prepacked and not runtime.exists()
    third = assemble(config, specs, read, table)
    with torch.inference_mode():
        assert torch.equal(first(ids).logits, third(ids).logits)


def test_a_lent_reader_serves_every_reader_of_its_path_on_its_thread(tmp_path):
    import threading

    import gguf

    from backends.quant.one_reader import lend_reader
    from tests.backends.quant_cases import QTYPES

    path, other = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_and_read(path, QTYPES[0])
    write_and_read(other, QTYPES[0])
    with lend_reader(path) as lent:
        assert gguf.GGUFReader(str(path)) is lent and gguf.GGUFReader(path) is lent
        assert gguf.GGUFReader(str(other)) is not lent  # another file is read as usual
        elsewhere = []
        thread = threading.Thread(target=lambda: elsewhere.append(gguf.GGUFReader(str(path))))
        thread.start()
        thread.join()
        assert elsewhere[0] is not lent  # another thread's loads are not lent it
    fresh = gguf.GGUFReader(str(path))
    assert fresh is not lent and len(fresh.tensors) == len(lent.tensors)


@pytest.mark.parametrize("path", ["stacked", "gather", "group"])
def test_lora_wraps_a_packed_layer(tmp_path, path):
    """An adapter over a packed base layer adds its delta to the adapter's rows only."""
    from gguf import GGMLQuantizationType as QT

    from backends.lora.layers import LoRABatch, LoRAContext, LoRALinear, is_linear

    t = write_and_read(tmp_path / "w.gguf", QT.Q4_0)
    rows, cols = int(t.shape[1]), int(t.shape[0])
    _, stored = _pack(nn.Linear(cols, rows), QT.Q4_0, decode(t.data, QT.Q4_0, rows, cols), None)
    base = PackedLinear("int4", cols, rows, stored, KernelTable())
    assert is_linear(base)
    context = LoRAContext()
    layer = LoRALinear(base, context)
    torch.manual_seed(0)
    a, b = torch.randn(4, cols) / 10, torch.randn(rows, 4) / 10
    layer.set_slots({0: (a, b)})
    x = torch.randn(3, cols)
    context.batch = LoRABatch.from_token_slots([0, -1, 0], torch.device("cpu"), path)
    got = layer(x)
    want = base(x)
    want[[0, 2]] += x[[0, 2]] @ a.T @ b.T
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


@pytest.mark.parametrize("rows,width,k", [(1, 262144, 64), (5, 4096, 16), (3, 4096, 15), (2, 1000, 8)])
def test_top_indices_finds_what_topk_finds(rows, width, k):
    torch.manual_seed(0)
    x = torch.randn(rows, width)
    x[0, 512:512 + k] += 50  # every winner of row 0 in one chunk
    if rows > 1:
        x[1, ::width // k] += 50  # row 1's winners each in a chunk of its own
    want = x.topk(k, -1).indices.sort(-1).values
    assert torch.equal(top_indices(x, k).sort(-1).values, want)


def _sibling_specs(qtypes, bias: bool = False):
    """Specs and tensors of an attention's q/k/v ([48|16|16 x 256]) packed from `qtypes`."""
    from tests.backends.quant_cases import raw_blocks

    specs, tensors = {}, {}
    for seed, (name, rows, qtype) in enumerate(zip(("q_proj", "k_proj", "v_proj"), (48, 16, 16),
                                                   qtypes)):
        blocks = decode(raw_blocks(qtype, rows, 256, seed), qtype, rows, 256)
        specs[f"attn.{name}"], stored = _pack(nn.Linear(256, rows, bias=False), qtype, blocks, None)
        tensors.update({f"attn.{name}.{k}": v for k, v in stored.items()})
        if bias:
            tensors[f"attn.{name}.bias"] = torch.randn(rows)
    return specs, tensors


def _own(tensors, name):
    return {k.rpartition(".")[2]: v for k, v in tensors.items() if k.rpartition(".")[0] == name}


@pytest.mark.parametrize("qtype,kernel", [(q, k) for q, f in (("Q4_0", "int4"), ("Q5_0", "int4x2"),
                                                              ("Q6_K", "int8"))
                                          for k in CANDIDATES[f]])
def test_siblings_fuse_into_one_layer_with_the_same_outputs(qtype, kernel):
    from gguf import GGMLQuantizationType as QT

    torch.manual_seed(0)
    table = KernelTable(forced=kernel)
    specs, tensors = _sibling_specs([QT[qtype]] * 3)
    separate = [PackedLinear(specs[n]["fmt"], 256, specs[n]["out"], _own(tensors, n), table)
                for n in ("attn.q_proj", "attn.k_proj", "attn.v_proj")]
    assert fuse_siblings(specs, tensors) == 1
    spec = specs["attn.fused_q_k_v"]
    assert list(specs) == ["attn.fused_q_k_v"] and spec["parts"] == [
        ["q_proj", 48], ["k_proj", 16], ["v_proj", 16]]
    group = FusedProjections(spec["fmt"], 256, [48, 16, 16], _own(tensors, "attn.fused_q_k_v"),
                             table)
    slices = [ProjectionSlice(group, i) for i in range(3)]
    for rows in (1, 3, 40):  # both buckets
        x = torch.randn(1, rows, 256)
        want = [layer(x) for layer in separate]
        got = [part(x) for part in slices]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-2, atol=1e-3)
    assert group._input is None  # nothing held between steps


def test_siblings_packed_differently_or_with_a_bias_on_some_stay_apart():
    from gguf import GGMLQuantizationType as QT

    specs, tensors = _sibling_specs([QT.Q5_0, QT.Q5_0, QT.Q6_K])  # gemma3's v is Q6_K in places
    assert fuse_siblings(specs, tensors) == 0 and len(specs) == 3
    specs, tensors = _sibling_specs([QT.Q4_0] * 3, bias=True)
    del tensors["attn.k_proj.bias"]
    assert fuse_siblings(specs, tensors) == 0 and len(specs) == 3


def test_siblings_with_biases_fuse_with_their_biases():
    from gguf import GGMLQuantizationType as QT

    specs, tensors = _sibling_specs([QT.Q4_0] * 3, bias=True)
    separate = {n: PackedLinear("int4", 256, specs[n]["out"], _own(tensors, n), KernelTable(),
                                tensors[f"{n}.bias"]) for n in list(specs)}
    assert fuse_siblings(specs, tensors) == 1
    assert tensors["attn.fused_q_k_v.bias"].shape == (80,)
    group = FusedProjections("int4", 256, [48, 16, 16], _own(tensors, "attn.fused_q_k_v"),
                             KernelTable(), tensors["attn.fused_q_k_v.bias"])
    x = torch.randn(2, 256)
    for index, layer in enumerate(separate.values()):
        torch.testing.assert_close(ProjectionSlice(group, index)(x), layer(x))


def test_an_adapter_wraps_a_fused_sibling():
    from gguf import GGMLQuantizationType as QT

    from backends.lora.layers import LoRABatch, LoRAContext, LoRALinear, is_linear

    torch.manual_seed(0)
    specs, tensors = _sibling_specs([QT.Q5_0] * 3)
    fuse_siblings(specs, tensors)
    group = FusedProjections("int4x2", 256, [48, 16, 16], _own(tensors, "attn.fused_q_k_v"),
                             KernelTable())
    q_proj, k_proj = ProjectionSlice(group, 0), ProjectionSlice(group, 1)
    assert is_linear(k_proj)
    context = LoRAContext()
    wrapped = LoRALinear(k_proj, context)
    A, B = torch.randn(4, 256) / 8, torch.randn(16, 4) / 8
    wrapped.set_slots({0: (A, B)})
    x = torch.randn(1, 3, 256)
    base, q_before = k_proj(x).clone(), q_proj(x).clone()
    context.batch = LoRABatch.from_token_slots([0, -1, 0], torch.device("cpu"))
    x = x.clone()  # a new step's input: the fused layer runs again
    got = wrapped(x)
    delta = (x @ A.T @ B.T)[0]
    torch.testing.assert_close(got[0, 0], base[0, 0] + delta[0])
    torch.testing.assert_close(got[0, 1], base[0, 1])
    torch.testing.assert_close(got[0, 2], base[0, 2] + delta[2])
    assert torch.equal(q_proj(x), q_before)  # the sibling's columns are untouched
