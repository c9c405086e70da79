"""Reading LoRA adapters into tensors keyed by the base model's module names.

Each adapted module gets `A [r, in]` and `B [out, r]` with its scaling folded into B, so the
delta is `x @ A.T @ B.T` whatever the format said about alpha, rank or rsLoRA.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from registry.adapters import (
    PEFT_CONFIG, gguf_module, gguf_tensor_map, is_peft, peft_config, peft_module, weight_files,
)

# llama.cpp's converter permutes q/k rows of these architectures for its rotary layout;
# transformers undoes it when it loads the base, so the adapter's B must be undone alike.
_PERMUTED_ARCHS = ("llama",)


@dataclass
class LoRAModule:
    A: Tensor  # [r, in]
    B: Tensor  # [out, r], scaling included

    @property
    def rank(self) -> int:
        return self.A.shape[0]


@dataclass
class LoRAWeights:
    key: str  # identity: the adapter model's digest
    name: str  # display name (metrics, logs)
    modules: dict[str, LoRAModule] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(m.A.nbytes + m.B.nbytes for m in self.modules.values())


def load_adapter(files: dict[str, Path], model: torch.nn.Module, key: str, name: str,
                 dtype: torch.dtype | None = None) -> LoRAWeights:
    """PEFT or GGUF LoRA weights for `model` (a transformers model) from {file name: path}."""
    modules = _read_peft(files) if is_peft(files) else _read_gguf(files, model)
    dtype = dtype or next(model.parameters()).dtype
    device = next(model.parameters()).device
    for m in modules.values():
        m.A = m.A.to(device=device, dtype=dtype).contiguous()
        m.B = m.B.to(device=device, dtype=dtype).contiguous()
    return LoRAWeights(key=key, name=name, modules=modules)


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern: a key matches a module name or its dotted tail."""
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def peft_scaling(config: dict[str, Any], module: str, rank: int) -> float:
    alpha = _pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _read_peft(files: dict[str, Path]) -> dict[str, LoRAModule]:
    from safetensors.torch import load_file

    config = peft_config(files)
    pairs: dict[str, dict[str, Tensor]] = {}
    for fname in weight_files(files):
        if not fname.endswith(".safetensors"):
            continue
        for key, tensor in load_file(str(files[fname])).items():
            found = peft_module(key)
            if found is not None:
                pairs.setdefault(found[0], {})[found[1]] = tensor.float()
    out = {}
    for module, p in pairs.items():
        rank = p["A"].shape[0]
        out[module] = LoRAModule(A=p["A"], B=p["B"] * peft_scaling(config, module, rank))
    return out


def _linear_names(model: torch.nn.Module) -> list[str]:
    """The model's Linear layers by name, a layer already wrapped for LoRA included once."""
    from backends.lora.layers import LoRALinear, is_linear

    wrapped = {name for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    return sorted(wrapped | {name for name, m in model.named_modules()
                             if is_linear(m)
                             and name.rpartition(".")[0] not in wrapped})


def _reverse_permute(w: Tensor, n_head: int) -> Tensor:
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _read_gguf(files: dict[str, Path], model: torch.nn.Module) -> dict[str, LoRAModule]:
    from gguf import GGUFReader, dequantize

    (fname,) = [n for n in weight_files(files) if n != PEFT_CONFIG]
    reader = GGUFReader(str(files[fname]))
    kv = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("tokenizer.")}
    arch = str(kv.get("general.architecture", ""))
    alpha = float(kv.get("adapter.lora.alpha", 0.0) or 0.0)
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    tmap = gguf_tensor_map(arch, text.num_hidden_layers)
    if tmap is None:
        raise ValueError(f"GGUF LoRA for unknown architecture {arch!r}")
    to_hf = {tmap.get_name(name): name for name in _linear_names(model) if tmap.get_name(name)}
    pairs: dict[str, dict[str, Tensor]] = {}
    for t in reader.tensors:
        found = gguf_module(t.name)
        if found is None:
            continue
        if found[0] not in to_hf:
            raise ValueError(f"the base model has no module for adapter tensor {t.name}")
        data = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        pairs.setdefault(to_hf[found[0]], {})[found[1]] = torch.from_numpy(data.copy()).float()
    out = {}
    for module, p in pairs.items():
        A, B = p["A"], p["B"]
        if arch in _PERMUTED_ARCHS and module.endswith(("q_proj", "k_proj")):
            heads = text.num_attention_heads if module.endswith("q_proj") else (
                text.num_key_value_heads or text.num_attention_heads)
            B = _reverse_permute(B, heads)
        # llama.cpp: scale alpha / rank, or 1 when the adapter gives no alpha.
        scale = alpha / A.shape[0] if alpha else 1.0
        out[module] = LoRAModule(A=A, B=B * scale)
    return out
