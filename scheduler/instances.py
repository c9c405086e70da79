"""Loaded model instances: what residency loads, estimates and frees.

A generative model becomes an `LLMEngine` (its own engine thread, continuous batching); an
encoder (BERT-like, the `embedding` capability) becomes an `Embedder`. The KV pool of an engine
holds `num_ctx` tokens for each of `kv_slots` sequences' worth of context, and the estimate
counts exactly that pool, so placement and the engine agree on the memory a model needs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from backends.embedder import Embedder, max_length_from_dir, pooling_from_dir
from backends.loader import LoadedModel, LoadOptions, linked_dir, load_gguf, load_safetensors
from backends.lora import load_adapter
from backends.model_runner import kv_dtype
from registry.errors import APIError
from scheduler.engine import EngineConfig, LLMEngine
from scheduler.estimate import ModelShape, estimate_bytes
from scheduler.placement import Placement
from scheduler.residency import ModelRef, RunnerOptions
from scheduler.stats import NO_STATS, StatsListener

log = logging.getLogger("corral.scheduler")


@dataclass
class InstanceConfig:
    cache_dir: Path
    num_parallel: int = 0  # 0: as many sequences as the KV pool allows (at least 16)
    kv_slots: int = 4  # full-context sequences the KV pool is sized for, when num_parallel is 0
    max_queue: int = 512
    max_num_batched_tokens: int = 512
    block_size: int = 16
    max_loras: int = 4  # LoRA slots of each generative engine
    kv_cache_type: str = ""  # OLLAMA_KV_CACHE_TYPE (kv_cache_dtype); "": the loader's choice
    listener: StatsListener = NO_STATS  # told of every finished request
    gguf_weights: str = "packed"  # "packed" | "float" (backends/quant), for GGUF models


@dataclass(eq=False)
class ModelInstance:
    loaded: LoadedModel
    engine: LLMEngine | None = None
    embedder: Embedder | None = None
    # One embedding batch at a time per instance: requests batch their own inputs.
    embed_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding: the token ids this model accepts."""
        config = self.loaded.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return int(text.vocab_size)

    @property
    def context_length(self) -> int:
        return self.engine.num_ctx if self.engine else self.loaded.max_context

    def add_adapter(self, ref: ModelRef) -> int:
        """Read an adapter model's LoRA weights into a slot of this engine; their bytes."""
        if self.engine is None:
            raise APIError(400, f"{ref.name}: adapters apply to generative models only")
        try:
            weights = load_adapter(ref.adapter, self.loaded.model, key=ref.key, name=ref.name)
            self.engine.add_lora(weights)
        except ValueError as e:
            raise APIError(500, f"{ref.name}: the adapter cannot be applied: {e}") from None
        return weights.nbytes

    def remove_adapter(self, key: str) -> None:
        if self.engine is not None:
            self.engine.remove_lora(key)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
        device = self.loaded.device
        self.engine = self.embedder = None
        self.loaded.model = None
        self.loaded = None  # type: ignore[assignment]
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _return_freed_heap()


def _return_freed_heap() -> None:
    """Give freed memory back to the OS: glibc keeps freed mid-size blocks in its heap, so
    without a trim an unloaded model's memory, or what a load built and dropped, stays in the
    process's resident set."""
    libc_name = ctypes.util.find_library("c")
    if libc_name and "libc.so" in libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def _is_encoder(model: Any) -> bool:
    return "embedding" in model.capabilities and "completion" not in model.capabilities


def _dtype_name(torch_device: str) -> str:
    if not torch_device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")  # Ollama's OLLAMA_KV_CACHE_TYPE values


def kv_cache_dtype(kv_cache_type: str, device: torch.device) -> torch.dtype | None:
    """OLLAMA_KV_CACHE_TYPE as the KV cache's dtype; None (unset, unknown): the loader's choice.

    Every named type is half precision: bf16 on CPU (its fp16 arithmetic is slow), bf16 or fp16
    on CUDA. 8- and 4-bit KV caches are not implemented; q8_0 and q4_0 get half precision too.
    """
    if kv_cache_type not in KV_CACHE_TYPES:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


class InstanceFactory:
    """The loader and estimator residency is built with, for registry models."""

    def __init__(self, config: InstanceConfig):
        self.config = config
        kv_type = config.kv_cache_type
        if kv_type and kv_type not in KV_CACHE_TYPES:
            log.warning("OLLAMA_KV_CACHE_TYPE=%s is not one of %s; ignored", kv_type,
                        ", ".join(KV_CACHE_TYPES))
        elif kv_type in ("q8_0", "q4_0"):
            log.warning("OLLAMA_KV_CACHE_TYPE=%s: 8- and 4-bit KV caches are not implemented; "
                        "the KV cache is half precision (as f16)", kv_type)

    def _kv_tokens(self, model: Any, options: RunnerOptions) -> int:
        """The pool for num_ctx tokens per slot; num_ctx past the model's trained context is
        clamped (the engine clamps it too), so a client's huge num_ctx can't size the pool."""
        slots = self.config.num_parallel or self.config.kv_slots
        trained = model.metadata.context_length if model.metadata is not None else 0
        num_ctx = min(options.num_ctx, trained) if trained > 0 else options.num_ctx
        return num_ctx * max(1, slots)

    def estimate(self, ref: ModelRef, options: RunnerOptions) -> int:
        meta = ref.model.metadata
        if meta is None:
            return 0
        shape = ModelShape.from_kv(meta.architecture, meta.kv, meta.parameter_count)
        dtype = _dtype_name("cuda" if torch.cuda.is_available() else "cpu")
        dtype_bytes = 4.0 if dtype == "float32" else 2.0
        quantize = ref.model.config.quantize.upper()
        weights = ("int8" if quantize.startswith("Q8") else "nf4") if quantize else dtype
        encoder = _is_encoder(ref.model)
        packed = (self.config.gguf_weights == "packed" and dtype == "float32" and not quantize
                  and not encoder and not ref.model.is_safetensors)
        if packed:  # the loader packs GGUF weights on CPU and gives them a bf16 KV cache
            weights, dtype_bytes = "packed", 2.0
        kv_bytes = 2.0 if self.config.kv_cache_type in KV_CACHE_TYPES else dtype_bytes
        kv_tokens = 0 if encoder else self._kv_tokens(ref.model, options)
        max_seqs = 1 if encoder else max(16, self.config.num_parallel)
        return estimate_bytes(shape, weights, kv_tokens, kv_bytes,
                              self.config.max_num_batched_tokens, max_seqs)

    def load(self, ref: ModelRef, options: RunnerOptions, placement: Placement) -> ModelInstance:
        instance = self._load(ref, options, placement)
        # What the load built and dropped (packing, fusing siblings) stays resident otherwise:
        # ~50 MiB of gemma3:270m's packed load.
        _return_freed_heap()
        return instance

    def _load(self, ref: ModelRef, options: RunnerOptions, placement: Placement) -> ModelInstance:
        model = ref.model
        opts = LoadOptions(
            cache_dir=self.config.cache_dir, device=placement.primary,
            quantize=model.config.quantize, weights=self.config.gguf_weights, pack_in_child=True,
            max_memory=placement.max_memory() if placement.is_split else None,
        )
        if _is_encoder(model):
            files = model.safetensors_files
            loaded = load_safetensors(files, opts, kind="encoder")
            directory = linked_dir(files, self.config.cache_dir)
            embedder = Embedder(
                loaded.model, loaded.tokenizer, pooling=pooling_from_dir(directory),
                max_length=min(options.num_ctx, max_length_from_dir(directory, loaded.max_context)),
            )
            return ModelInstance(loaded, embedder=embedder)
        if model.is_safetensors:
            loaded = load_safetensors(model.safetensors_files, opts)
        else:
            loaded = load_gguf(model.weights_path, model.manifest.layers_of(
                "application/vnd.ollama.image.model")[0].digest.split(":")[1], opts)
        asked = kv_cache_dtype(self.config.kv_cache_type, loaded.device)
        if asked is not None:  # OLLAMA_KV_CACHE_TYPE wins over the loader's choice
            loaded.kv_cache_dtype = asked
        kv_bytes = self._kv_tokens(ref.model, options) * ModelShape.from_kv(
            model.metadata.architecture, model.metadata.kv, 0
        ).kv_bytes_per_token(kv_dtype(loaded).itemsize) if model.metadata else 1 << 28
        engine = LLMEngine(loaded, EngineConfig(
            block_size=self.config.block_size,
            kv_memory_bytes=max(kv_bytes, 1 << 20),
            max_num_seqs=self.config.num_parallel or None,
            max_num_batched_tokens=self.config.max_num_batched_tokens,
            num_ctx=options.num_ctx,
            max_queue=self.config.max_queue,
            name=ref.name,
            max_loras=self.config.max_loras,
        ), listener=self.config.listener)
        return ModelInstance(loaded, engine=engine)
