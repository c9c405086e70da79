"""`corral tokenizer MODEL DIR`: a model's tokenizer as a Hugging Face directory.

Load testers (GuideLLM, `vllm bench`) count prompt and output tokens with a tokenizer they load
by `from_pretrained`; offline, that has to be a local directory. This writes the one Corral
itself decodes with. Unlike the other commands it is no HTTP client: it reads the store and the
cache (OLLAMA_MODELS, CORRAL_CACHE) as `corral serve` would, converting a GGUF model once into
the cache the server shares, so it runs on the server's machine with the server's settings.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serve.cli.errors import CLIError, _out


def tokenizer_source(models_dir: Path, cache_dir: Path, name: str) -> Path:
    """The directory the loader reads `name`'s tokenizer from (the GGUF conversion, or the
    safetensors model's linked directory)."""
    from backends.loader import converted_dir, linked_dir
    from registry.errors import APIError
    from registry.manifest import MEDIA_TYPE_MODEL
    from registry.model import get_model
    from registry.store import Store

    try:
        model = get_model(Store(models_dir), name)
    except APIError as err:
        raise CLIError(err.message) from None
    if model.is_safetensors:
        return linked_dir(model.safetensors_files, cache_dir)
    layers = model.manifest.layers_of(MEDIA_TYPE_MODEL)
    if not layers or model.weights_path is None:
        raise CLIError(f"model '{name}' has no weights")
    return converted_dir(model.weights_path, layers[0].digest.split(":")[1], cache_dir)


def save_tokenizer(models_dir: Path, cache_dir: Path, name: str, out: Path) -> Path:
    from backends.loader import load_tokenizer

    load_tokenizer(tokenizer_source(models_dir, cache_dir, name), cache_dir).save_pretrained(out)
    return Path(out).resolve()


def cmd_tokenizer(args: argparse.Namespace, client: object = None) -> int:
    from serve.settings import Settings

    settings = Settings.from_env()
    _out(str(save_tokenizer(settings.models_dir, settings.cache_dir, args.model, Path(args.dir))))
    return 0
