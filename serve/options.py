"""Request `options`: Ollama's types, precedence and the split into load-time and sampling parts.

Precedence is Ollama's: defaults, then the model's params layer, then the request's `options`
(for `num_ctx`: request, model PARAMETER, OLLAMA_CONTEXT_LENGTH). Unknown keys are ignored; a
wrong type is an error that Ollama reports as HTTP 500 (reference §2.6, surprise 12); Corral
answers 400 with the same text, on purpose: a 5xx tells operators the server is broken and makes
clients retry a request that can never succeed. Integers must fit Go's int64, as they must to
decode in Ollama at all; `num_thread` is checked and then ignored (the server owns the threads).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

from backends.sampling_params import SamplingParams
from scheduler.residency import RunnerOptions
from registry.errors import APIError

log = logging.getLogger("corral.serve")

INT_OPTIONS = {
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "seed",
    "num_predict", "top_k", "repeat_last_n", "draft_num_predict",
}
FLOAT_OPTIONS = {
    "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty",
    "frequency_penalty",
}
BOOL_OPTIONS = {"use_mmap", "ignore_eos"}  # ignore_eos: Corral's, from vLLM's OpenAI extension
# Removed options that Ollama still accepts and ignores.
IGNORED_OPTIONS = {
    "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline", "low_vram", "f16_kv",
    "logits_all", "vocab_only", "use_mlock", "numa", "tfs_z",
}


@dataclass
class Options:
    runner: RunnerOptions
    sampling: SamplingParams
    num_keep: int = 4


INT64 = 2**63
FLOAT32_MAX = 3.4028234663852886e38


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _typed(key: str, value: Any) -> Any:
    if key in INT_OPTIONS:
        if _number(value) and -INT64 <= value < INT64:
            return int(value)
        raise APIError(400, f'option "{key}" must be of type integer')
    if key in FLOAT_OPTIONS:
        if _number(value) and abs(value) <= FLOAT32_MAX:
            return float(value)
        raise APIError(400, f'option "{key}" must be of type float32')
    if key in BOOL_OPTIONS:
        if isinstance(value, bool):
            return value
        raise APIError(400, f'option "{key}" must be of type boolean')
    if key == "stop":
        if not isinstance(value, list):
            raise APIError(400, f'option "{key}" must be of type array')
        if not all(isinstance(v, str) for v in value):
            raise APIError(400, f'option "{key}" must be of an array of strings')
        return list(value)
    return None


def typed_options(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate an options map; unknown and removed keys are dropped with a log line."""
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if value is None:
            continue
        if key in IGNORED_OPTIONS:
            continue
        if key not in INT_OPTIONS | FLOAT_OPTIONS | BOOL_OPTIONS | {"stop"}:
            log.warning("invalid option provided: %s", key)
            continue
        out[key] = _typed(key, value)
    return out


def resolve_options(
    model_params: Mapping[str, Any],
    request_options: Mapping[str, Any] | None,
    default_num_ctx: int,
    max_num_ctx: int = 0,
    max_num_predict: int = 0,
) -> Options:
    """Merge defaults < model params < request options into runner and sampling parts.

    The server's ceilings (0: none) bound what any request or model may ask for: `num_ctx`
    above the ceiling is cut to it, and `num_predict` too, unlimited (negative) included."""
    merged = typed_options(model_params)
    merged.update(typed_options(request_options))
    if max_num_ctx > 0:
        merged["num_ctx"] = min(merged.get("num_ctx", default_num_ctx), max_num_ctx)
    if max_num_predict > 0:
        asked = merged.get("num_predict", -1)
        merged["num_predict"] = max_num_predict if asked < 0 else min(asked, max_num_predict)
    seed = merged.get("seed", -1)
    sampling = SamplingParams(
        temperature=merged.get("temperature", 0.8),
        top_k=merged.get("top_k", 40),
        top_p=merged.get("top_p", 0.9),
        min_p=merged.get("min_p", 0.0),
        typical_p=merged.get("typical_p", 1.0),
        repeat_penalty=merged.get("repeat_penalty", 1.0),
        repeat_last_n=merged.get("repeat_last_n", 64),
        presence_penalty=merged.get("presence_penalty", 0.0),
        frequency_penalty=merged.get("frequency_penalty", 0.0),
        seed=None if seed < 0 else seed,
        num_predict=merged.get("num_predict", -1),
        stop=merged.get("stop", []),
        ignore_eos=merged.get("ignore_eos", False),
    )
    runner = RunnerOptions(
        num_ctx=max(4, merged.get("num_ctx", default_num_ctx)),
        num_batch=merged.get("num_batch", 512),
        num_gpu=merged.get("num_gpu", -1),
        main_gpu=merged.get("main_gpu"),
        use_mmap=merged.get("use_mmap"),
    )
    return Options(runner=runner, sampling=sampling, num_keep=merged.get("num_keep", 4))
