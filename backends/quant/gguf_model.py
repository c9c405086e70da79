"""A causal LM built from a GGUF file with its linear weights and embedding packed straight from
the quantized blocks, and the packed model's portable form (what the cache stores).

transformers supplies what it already knows: the config from the GGUF metadata, the model class
(built with empty weights), the GGUF -> HF tensor names and each architecture's tensor fix-ups
(gemma's norm offsets, llama's q/k row permutation). A fix-up that only reorders rows is
applied to the codes by probing it with row numbers; any other falls back to the float values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from backends.quant.blocks import DECODED, FLOAT, INT4_EXACT, Blocks, decode
from backends.quant.kernels import KernelTable
from backends.quant.modules import (FusedProjections, PackedEmbedding, PackedLinear, ProjectionSlice,
                                    ShortlistHead)
from backends.quant.pack import (INT4_GROUP, block_tensors, int4_tensors, int4x2_tensors,
                                 int8_residual_tensors, int8_tensors)

log = logging.getLogger(__name__)

Spec = dict[str, Any]  # one packed module: kind, fmt, in/out features, tied_to, ...
FORMATS = {"embedding": ("blocks", "int8", "int8_residual"),
           "linear": ("int4", "int4x2", "int8", "rescored")}
# Projections of one input that fuse into one packed layer when packed alike.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def empty_model(config: Any) -> nn.Module:
    """The model class with parameters on the meta device (buffers such as rotary tables real)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    # Random init is wasted on weights about to be assigned (and most of a warm load's time).
    with init_empty_weights(include_buffers=False), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def _float_array(tensor: Any) -> np.ndarray:
    from gguf import GGMLQuantizationType as QT
    data = np.asarray(tensor.data)
    if tensor.tensor_type == QT.BF16:
        data = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    shape = [int(d) for d in reversed(tensor.shape)]
    return data.astype(np.float32).reshape(shape)


def _row_order(processor: Any, name: str, rows: int, key_map: dict) -> tuple[str, np.ndarray | None]:
    """The HF name and row permutation the architecture's fix-up applies (None: not a pure
    row reorder, so the codes can't be carried over)."""
    probe = np.arange(rows, dtype=np.float64).reshape(rows, 1)
    result = processor.process(weights=probe, name=name, tensor_key_mapping=key_map,
                               parsed_parameters={})
    order = np.asarray(result.weights).reshape(-1)
    if order.shape == (rows,) and np.array_equal(np.sort(order), np.arange(rows)):
        return result.name, order.astype(np.int64)
    return result.name, None


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def read_packed(gguf_path: Path) -> tuple[Any, dict[str, Spec], dict[str, torch.Tensor]]:
    """(config, specs, tensors) for a GGUF file: packed modules by HF module name and every
    tensor the model needs (packed ones under `<module>.<key>`, float ones under their name)."""
    from gguf import GGUFReader
    from transformers import CONFIG_MAPPING
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map, load_gguf_checkpoint)

    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=False)
    config = CONFIG_MAPPING[parsed["config"]["model_type"]].from_dict(dict(parsed["config"]))
    reader = GGUFReader(str(gguf_path))
    arch = str(bytes(reader.fields["general.architecture"].parts[-1]), "utf-8")
    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=parsed["config"])
    model = empty_model(config)
    key_map = get_gguf_hf_weights_map(model, processor)
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    head_name = names.get(id(model.get_output_embeddings()))
    embed_name = names.get(id(model.get_input_embeddings()))
    tied = head_name is not None and f"{head_name}.weight" not in {
        key_map.get(t.name) for t in reader.tensors}
    specs: dict[str, Spec] = {}
    tensors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        packable = t.tensor_type in DECODED and len(t.shape) == 2
        if not packable and t.tensor_type not in FLOAT:
            raise ValueError(f"GGUF tensor {t.name} has type {t.tensor_type.name}, "
                             "which packed loading does not decode")
        if not packable:
            result = processor.process(weights=_float_array(t), name=t.name,
                                       tensor_key_mapping=key_map, parsed_parameters=parsed)
            if result.name in key_map:
                tensors[key_map[result.name]] = torch.from_numpy(np.array(result.weights))
            continue
        cols, rows = int(t.shape[0]), int(t.shape[1])
        hf_name, order = _row_order(processor, t.name, rows, key_map)
        if hf_name not in key_map:
            continue
        module_name = key_map[hf_name].rpartition(".")[0]
        blocks, dense = decode(t.data, t.tensor_type, rows, cols), None
        if order is not None:
            blocks = blocks.take_rows(order)
        else:  # a fix-up that changes values: carried over as float, requantized to int8
            dense = processor.process(weights=blocks.dequantize(), name=t.name,
                                      tensor_key_mapping=key_map, parsed_parameters=parsed).weights
            blocks = None
        is_tied = tied and module_name == embed_name
        spec, stored = _pack(modules[module_name], t.tensor_type, blocks, dense, is_tied)
        specs[module_name] = spec
        tensors.update({f"{module_name}.{k}": v for k, v in stored.items()})
        if is_tied:
            specs[head_name] = _tied_head(head_name, modules[head_name], blocks, embed_name,
                                          spec, tensors)
    fuse_siblings(specs, tensors)
    return config, specs, tensors


def fuse_siblings(specs: dict[str, Spec], tensors: dict[str, torch.Tensor]) -> int:
    """Each set of SIBLINGS packed alike (one format, one input width, each with a bias or none
    with one, as Qwen2's q/k/v) as one spec
    `<parent>.fused_<names>` with "parts" [[name, rows], ...], its tensors concatenated along
    the output rows: every format here keeps its groups within a row, so the rows of one
    sibling pack exactly as they did apart. Returns how many sets were fused."""
    fused = 0
    for name in list(specs):
        parent, _, leaf = name.rpartition(".")
        for names in SIBLINGS:
            if leaf != names[0]:
                continue
            full = [f"{parent}.{n}" for n in names]
            parts = [specs.get(f) for f in full]
            if not all(p and p["kind"] == "linear" and not p.get("tied_to") for p in parts):
                continue
            if (len({(p["fmt"], p["in"]) for p in parts}) != 1 or parts[0]["fmt"] == "rescored"
                    or len({f"{f}.bias" in tensors for f in full}) != 1):
                continue
            group = f"{parent}.fused_{'_'.join(n.removesuffix('_proj') for n in names)}"
            keys = [k.removeprefix(full[0] + ".") for k in list(tensors) if k.startswith(full[0] + ".")]
            for key in keys:  # scale_zeros is [groups, rows, 2]; a bias joins like the rows
                tensors[f"{group}.{key}"] = torch.cat([tensors.pop(f"{f}.{key}") for f in full],
                                                      1 if key == "scale_zeros" else 0)
            for f in full:
                del specs[f]
            specs[group] = {"kind": "linear", "fmt": parts[0]["fmt"], "in": parts[0]["in"],
                            "out": sum(p["out"] for p in parts),
                            "parts": [[n, p["out"]] for n, p in zip(names, parts)]}
            fused += 1
    return fused


def _pack(module: nn.Module, qtype: Any, blocks: Blocks | None, dense: np.ndarray | None,
          tied: bool = False) -> tuple[Spec, dict[str, torch.Tensor]]:
    if isinstance(module, nn.Embedding):
        # Groups of 32 are kept exact where only gathered; tied to the head, they are also
        # multiplied, as int8 rows, and gathered with each element's residual.
        exact = blocks is not None and blocks.group == INT4_GROUP
        fmt = ("int8_residual" if tied else "blocks") if exact else "int8"
        if fmt == "blocks":
            stored = block_tensors(blocks)
        elif fmt == "int8_residual":
            stored = int8_residual_tensors(blocks)
        else:
            stored = int8_tensors(blocks.dequantize() if blocks is not None else dense)
        spec = {"kind": "embedding", "fmt": fmt,
                "padding_idx": module.padding_idx,
                "embed_scale": float(getattr(module, "embed_scale", 1.0))}
        return spec, stored
    cols = blocks.codes.shape[1] if blocks is not None else 0
    if blocks is not None and qtype in INT4_EXACT and cols % 64 == 0:
        return _linear_spec(module, "int4"), int4_tensors(blocks)
    stored = int8_tensors(blocks.dequantize() if blocks is not None else dense)
    if blocks is not None and blocks.group == INT4_GROUP and cols % 32 == 0:  # 2 * cols % 64
        return _linear_spec(module, "int4x2"), {**stored, **int4x2_tensors(blocks)}
    return _linear_spec(module, "int8"), stored


def _linear_spec(module: nn.Module, fmt: str) -> Spec:
    return {"kind": "linear", "fmt": fmt, "in": module.in_features, "out": module.out_features}


def _tied_head(name: str, head: nn.Linear, blocks: Blocks | None, embed_name: str,
               embed: Spec, tensors: dict[str, torch.Tensor]) -> Spec:
    """The LM head when the GGUF ties it to the embedding (no output tensor): it reads the
    embedding's own tensors. Over int8 rows with residuals it is a ShortlistHead, with the
    codes' top 4 bits as its own int4 copy for its approximate pass at decode rows; over per-row
    int8, or where the int4 kernel can't take the shape, it multiplies the embedding's rows."""
    spec: Spec = {"kind": "linear", "in": head.in_features, "out": head.out_features,
                  "tied_to": embed_name}
    fits = head.in_features % 64 == 0 and head.out_features % 16 == 0  # the int4 pack's tiles
    if embed["fmt"] != "int8_residual" or not fits:
        return {**spec, "fmt": "int8"}
    own = int4_tensors(blocks.top_nibbles())
    tensors.update({f"{name}.{k}": v for k, v in own.items()})
    return {**spec, "fmt": "rescored"}


def assemble(config: Any, specs: dict[str, Spec], tensors: dict[str, torch.Tensor],
             table: KernelTable) -> nn.Module:
    """The model from its config and packed form: empty model, packed modules swapped in, the
    float parameters assigned in place (no copies, no random init)."""
    model = empty_model(config)
    built: dict[str, dict[str, torch.Tensor]] = {}
    for name, spec in sorted(specs.items(), key=lambda kv: bool(kv[1].get("tied_to"))):
        if spec.get("fmt") not in FORMATS[spec["kind"]]:  # an entry an older version wrote
            raise ValueError(f"packed module {name} has format {spec.get('fmt')!r}, "
                             "which this version does not read")
        own = {k.rpartition(".")[2]: v for k, v in tensors.items() if k.rpartition(".")[0] == name}
        stored = {**built.get(spec.get("tied_to") or "", {}), **own}
        built[name] = stored
        if spec["kind"] == "embedding":
            module = PackedEmbedding(stored, torch.float32, spec.get("padding_idx"),
                                     spec.get("embed_scale", 1.0))
        elif spec["fmt"] == "rescored":
            module = ShortlistHead(spec["in"], spec["out"], stored, table)
        elif "parts" in spec:
            module = FusedProjections(spec["fmt"], spec["in"], [n for _, n in spec["parts"]],
                                      stored, table, stored.get("bias"))
            parent = model.get_submodule(name.rpartition(".")[0])
            for index, (part, _) in enumerate(spec["parts"]):
                setattr(parent, part, ProjectionSlice(module, index))
        else:
            module = PackedLinear(spec["fmt"], spec["in"], spec["out"], stored, table,
                                  stored.get("bias"))
        _set_module(model, name, module)
    floats = {k: v for k, v in tensors.items() if k.rpartition(".")[0] not in specs}
    missing = [n for n, p in model.named_parameters() if p.is_meta and n not in floats]
    if missing:
        raise ValueError(f"packed model lacks tensors for {missing[:8]}")
    model.load_state_dict(floats, strict=False, assign=True)
    return model.eval()
