"""LoRA adapters for tests: made by peft over a model, and the same weights as a GGUF LoRA."""

from __future__ import annotations

from copy import deepcopy
import json
from pathlib import Path

import numpy as np
import torch

# Per adapter: what it targets and how it scales, so every per-module path is exercised.
VARIANTS = [
    dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    dict(r=8, lora_alpha=16, use_rslora=True,
         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    dict(r=6, lora_alpha=6, target_modules=["o_proj", "down_proj", "up_proj"],
         rank_pattern={"down_proj": 2}, alpha_pattern={"up_proj": 24}),
]


def make_peft(base_model: torch.nn.Module, out_dir: Path, seed: int, scale: float = 0.2,
              copy: bool = True, **lora):
    """A peft LoRA over `base_model` (a copy of it unless copy=False), saved to `out_dir`; B is
    random (not peft's zeros), so the adapter changes the output. Returns the peft model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(deepcopy(base_model) if copy else base_model,
                                LoraConfig(init_lora_weights=False, **lora))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * scale)
    peft_model.save_pretrained(str(out_dir))
    peft_model.eval()
    return peft_model


def peft_greedy(peft_model, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = peft_model.generate(
            input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0,
        )
    return out[0, len(prompt):].tolist()


def peft_files(directory: Path) -> dict[str, Path]:
    return {name: directory / name for name in ("adapter_config.json", "adapter_model.safetensors")}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation for llama (convert_hf_to_gguf's LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf_lora(peft_dir: Path, out: Path, arch: str, num_layers: int,
                    heads: tuple[int, int] | None = None) -> Path:
    """The PEFT adapter as llama.cpp's convert_lora_to_gguf writes it (alpha/r kept per module
    by folding each module's scale into B against the file's one alpha)."""
    import gguf
    from safetensors.torch import load_file

    from backends.lora.weights import peft_scaling
    from registry.adapters import gguf_tensor_map, peft_module

    config = json.loads((peft_dir / "adapter_config.json").read_text())
    tensors = load_file(str(peft_dir / "adapter_model.safetensors"))
    tmap = gguf_tensor_map(arch, num_layers)
    alpha = 16.0
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        module, part = peft_module(key)
        pairs.setdefault(module, {})[part] = t.float()
    for module, p in sorted(pairs.items()):
        r = p["A"].shape[0]
        b = (p["B"] * (peft_scaling(config, module, r) / (alpha / r))).numpy()
        if heads is not None and module.endswith(("q_proj", "k_proj")):
            b = _permute(b, heads[0] if module.endswith("q_proj") else heads[1])
        name = tmap.get_name(module)
        writer.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(p["A"].numpy()))
        writer.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def load_gemma(gemma_gguf: Path, cache_dir: Path, weights: str = "float"):
    """The real gemma3:270m as the server's loader converts it (same cache key: the blob digest)."""
    import hashlib

    from backends.loader import LoadOptions, load_gguf

    digest = hashlib.sha256(gemma_gguf.read_bytes()).hexdigest()
    return load_gguf(gemma_gguf, digest, LoadOptions(cache_dir=cache_dir, weights=weights))


def engine_tokens(stream, eos: list[int]) -> list[int]:
    return [t for out in stream for t in out.token_ids if t not in eos]
