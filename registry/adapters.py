"""LoRA adapters at rest: which files make one, what they adapt, and whether they fit a base.

Two formats, as Ollama's store holds them under `application/vnd.ollama.image.adapter`:
- PEFT: `adapter_config.json` + `adapter_model.safetensors` (named layers, like safetensors
  model layers), tensors `<module>.lora_A.weight [r, in]` and `<module>.lora_B.weight [out, r]`;
- llama.cpp GGUF LoRA: one unnamed layer, `general.type = adapter`, `adapter.lora.alpha`,
  tensors `blk.N.attn_q.weight.lora_a` (ne [in, r]) and `.lora_b` (ne [r, out]).

Validation reads headers only (no tensor data, no torch): every adapted module must exist in
the base with the shapes the low-rank factors need, so a mismatch fails at create with a reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.errors import APIError
from registry.manifest import MEDIA_TYPE_ADAPTER, Manifest
from registry.model_info import ModelMetadata, is_gguf, read_gguf, safetensors_header

PEFT_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
# PEFT kinds that are not a plain low-rank delta on a Linear layer.
_UNSUPPORTED_PEFT = ("lora_magnitude_vector", "lora_embedding_A", "lora_embedding_B")


@dataclass(frozen=True)
class AdapterShape:
    """One adapted module: its base weight is [out_features, in_features]."""

    in_features: int
    out_features: int
    rank: int


def is_peft(files: dict[str, Path]) -> bool:
    return PEFT_CONFIG in files and any(n.endswith(".safetensors") for n in files)


def weight_files(names: list[str] | dict[str, Any]) -> list[str]:
    """The weight files among an adapter's files (config and side files are not adapters)."""
    return [n for n in names if not n.endswith(".json")]


def peft_module(key: str) -> tuple[str, str] | None:
    """`base_model.model.X.lora_A.weight` -> ("X", "A"); None for other tensors."""
    name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
    for part in ("A", "B"):
        suffix = f".lora_{part}.weight"
        if name.endswith(suffix):
            return name[: -len(suffix)], part
    return None


def gguf_module(key: str) -> tuple[str, str] | None:
    """`blk.0.attn_q.weight.lora_a` -> ("blk.0.attn_q", "A"); None for other tensors."""
    for part in ("a", "b"):
        suffix = f".weight.lora_{part}"
        if key.endswith(suffix):
            return key[: -len(suffix)], part.upper()
    return None


def peft_config(files: dict[str, Path]) -> dict[str, Any]:
    try:
        config = json.loads(Path(files[PEFT_CONFIG]).read_text())
    except (OSError, ValueError) as e:
        raise APIError(400, f"invalid adapter: {PEFT_CONFIG}: {e}") from None
    if not isinstance(config, dict):
        raise APIError(400, f"invalid adapter: {PEFT_CONFIG} is not an object")
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise APIError(400, f"unsupported adapter type {kind}: only LoRA adapters are supported")
    if config.get("use_dora"):
        raise APIError(400, "unsupported adapter: DoRA adapters are not supported")
    if config.get("modules_to_save"):
        raise APIError(400, "unsupported adapter: modules_to_save (full weights) are not supported")
    if config.get("lora_bias") or config.get("bias", "none") != "none":
        raise APIError(400, "unsupported adapter: LoRA biases are not supported")
    return config


def _pairs(shapes: dict[str, list[int]], parse) -> dict[str, dict[str, list[int]]]:
    modules: dict[str, dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        if any(tag in key for tag in _UNSUPPORTED_PEFT):
            raise APIError(400, f"unsupported adapter tensor {key}")
        found = parse(key)
        if found is not None:
            modules.setdefault(found[0], {})[found[1]] = shape
    for name, parts in modules.items():
        if set(parts) != {"A", "B"}:
            raise APIError(400, f"invalid adapter: {name} lacks one of its two LoRA factors")
    if not modules:
        raise APIError(400, "invalid adapter: no LoRA tensors found")
    return modules


def peft_shapes(files: dict[str, Path]) -> dict[str, AdapterShape]:
    """HF module name -> shape, from the safetensors headers."""
    shapes: dict[str, list[int]] = {}
    for name, path in files.items():
        if name.endswith(".safetensors"):
            header = safetensors_header(Path(path))
            shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    # PEFT stores A as [r, in] and B as [out, r]: GGUF's order reversed.
    pairs = _pairs(shapes, peft_module)
    return _adapter_shapes({m: {k: dims[::-1] for k, dims in p.items()} for m, p in pairs.items()})


def gguf_shapes(meta: ModelMetadata) -> dict[str, AdapterShape]:
    """GGUF base tensor name (`blk.0.attn_q`) -> shape; GGUF dims are [in, r] and [r, out]."""
    dims = {t["name"]: list(t["shape"]) for t in meta.tensors}
    return _adapter_shapes(_pairs(dims, gguf_module))


def _adapter_shapes(pairs: dict[str, dict[str, list[int]]]) -> dict[str, AdapterShape]:
    """Module -> shape from A as [in, r] and B as [r, out]; the two ranks must agree."""
    out = {}
    for module, p in pairs.items():
        (n_in, r), (r_b, n_out) = p["A"], p["B"]
        if r != r_b:
            raise APIError(400, f"invalid adapter: {module} has rank {r} in A but {r_b} in B")
        out[module] = AdapterShape(n_in, n_out, r)
    return out


def gguf_tensor_map(arch: str, num_layers: int):
    """gguf's HF -> GGUF tensor name map for an architecture, or None when gguf lacks it."""
    import gguf

    archs = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in archs:
        return None
    return gguf.get_tensor_name_map(archs[arch], num_layers)


def _num_layers(meta: ModelMetadata) -> int:
    return int(meta.kv.get(f"{meta.architecture}.block_count", 0) or 0)


def base_weight_shapes(meta: ModelMetadata) -> dict[str, tuple[int, int]]:
    """(out, in) of each 2-D weight of the base, keyed by its name without `.weight`."""
    out = {}
    for t in meta.tensors:
        name, shape = t["name"], list(t["shape"])
        if not name.endswith(".weight") or len(shape) != 2:
            continue
        # GGUF lists dims fastest first ([in, out]); safetensors as torch does ([out, in]).
        out[name[: -len(".weight")]] = (shape[1], shape[0]) if meta.format == "gguf" else tuple(shape)
    return out


def validate_adapter(files: dict[str, Path], base: ModelMetadata | None) -> None:
    """APIError 400 unless the adapter's every module fits a module of `base`."""
    if is_peft(files):
        peft_config(files)
        shapes = peft_shapes(files)
        to_base = _hf_to_base(base) if base is not None else None
    else:
        weights = weight_files(files)
        if len(weights) != 1 or not is_gguf(Path(files[weights[0]])):
            raise APIError(400, "supplied file was not in GGUF format")
        meta = read_gguf(Path(files[weights[0]]))
        if meta.gguf_kind != "adapter":
            raise APIError(400, f"invalid adapter: general.type is {meta.gguf_kind!r}, not 'adapter'")
        if base is not None and meta.architecture != base.architecture:
            raise APIError(400, f"adapter does not match the base model: the adapter is for "
                                f"{meta.architecture!r}, the base is {base.architecture!r}")
        shapes = gguf_shapes(meta)
        to_base = _gguf_to_base(base) if base is not None else None
    if base is None or to_base is None:
        return
    base_shapes = base_weight_shapes(base)
    for module, shape in shapes.items():
        target = to_base(module)
        if target not in base_shapes:
            raise APIError(400, f"adapter does not match the base model: it adapts {module}, "
                                f"which the {base.architecture} base does not have")
        out_f, in_f = base_shapes[target]
        if (shape.out_features, shape.in_features) != (out_f, in_f):
            raise APIError(400, f"adapter does not match the base model: {module} is "
                                f"{shape.out_features}x{shape.in_features} in the adapter but "
                                f"{out_f}x{in_f} in the base")


def _hf_to_base(base: ModelMetadata):
    """HF module name -> the base's tensor name: itself for safetensors, mapped for GGUF."""
    if base.format != "gguf":
        return lambda module: module
    tmap = gguf_tensor_map(base.architecture, _num_layers(base))
    if tmap is None:
        return None
    return lambda module: tmap.get_name(module)


def _gguf_to_base(base: ModelMetadata):
    """GGUF tensor name -> the base's tensor name: itself for GGUF, reverse-mapped for HF."""
    if base.format == "gguf":
        return lambda module: module
    tmap = gguf_tensor_map(base.architecture, _num_layers(base))
    if tmap is None:
        return None
    reverse = {tmap.get_name(n): n for n in base_weight_shapes(base)}
    return lambda module: reverse.get(module)


# --- adapter models and their bases ------------------------------------------------------------

def adapter_layers(manifest: Manifest) -> list:
    return [x for x in manifest.layers if x.media_type == MEDIA_TYPE_ADAPTER]


def adapter_files(model: Any) -> dict[str, Path]:
    """{file name -> blob path} of a model's adapter (a GGUF LoRA is named `adapter.gguf`)."""
    return {(x.name or "adapter.gguf"): model.store.blob_path(x.digest)
            for x in adapter_layers(model.manifest)}


def _weights_digest(model: Any) -> str:
    from registry.manifest import MEDIA_TYPE_MODEL

    return ",".join(x.digest for x in model.manifest.layers if x.media_type == MEDIA_TYPE_MODEL)


def base_model(model: Any) -> Any:
    """The model an adapter model runs on: its `from` model when that is still the same
    weights without adapters (so both share one loaded copy), else the model minus its adapter."""
    from registry.model import ModelNotFoundError, get_model

    parent = model.parent_model
    if parent:
        try:
            candidate = get_model(model.store, parent)
        except (ModelNotFoundError, APIError):
            candidate = None
        if (candidate is not None and not adapter_layers(candidate.manifest)
                and _weights_digest(candidate) == _weights_digest(model)):
            return candidate
    layers = [x for x in model.manifest.layers if x.media_type != MEDIA_TYPE_ADAPTER]
    key = hashlib.sha256(_weights_digest(model).encode()).hexdigest()
    return dataclasses.replace(model, manifest=Manifest(config=model.manifest.config, layers=layers),
                               digest=f"weights-{key}")
