"""A resolved model at rest: its manifest, config and the layers' contents.

Safetensors models are stored with named layers, as Ollama's experimental safetensors path
does: each `*.safetensors` file is one `application/vnd.ollama.image.model` layer whose `name`
is its path relative to the model directory, and each config/tokenizer file (`*.json`,
`*/*.json`, `tokenizer.model`, `chat_template.jinja`, `vocab.txt`) an
`application/vnd.ollama.image.json` layer named the same way; the config says
`model_format: "safetensors"`. `Model.safetensors_files` rebuilds the directory view
(relative name -> blob path) the loader needs, without copying anything.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from registry.errors import APIError
from registry.manifest import (
    MEDIA_TYPE_ADAPTER, MEDIA_TYPE_DRAFT, MEDIA_TYPE_JSON, MEDIA_TYPE_LICENSE, MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS, MEDIA_TYPE_PROJECTOR, MEDIA_TYPE_PROMPT, MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE, ConfigV2, Layer, Manifest,
)
from registry.model_info import ModelMetadata, capabilities, read_gguf, read_safetensors
from registry.names import ModelName, parse_name
from registry.store import Store

DEFAULT_TEMPLATE = "{{ .Prompt }}"


class ModelNotFoundError(APIError):
    """404 `model '<name>' not found`; `.name` lets each endpoint reword it as Ollama does."""

    def __init__(self, name: str, message: str | None = None):
        super().__init__(404, message or f"model '{name}' not found")
        self.name = name


@dataclass
class Model:
    store: Store
    name: ModelName
    manifest: Manifest
    manifest_bytes: bytes
    digest: str            # sha256 hex of the manifest file bytes, no prefix
    config: ConfigV2
    mtime_ns: int

    @property
    def display_name(self) -> str:
        return self.name.display_shortest()

    short_name = display_name

    @property
    def modified_at(self) -> str:
        return rfc3339_local(self.mtime_ns)

    def _layers(self, *media_types: str) -> list[Layer]:
        return [layer for layer in self.manifest.layers if layer.media_type in media_types]

    def _text(self, layer: Layer) -> str:
        return self.store.read_blob(layer.digest).decode("utf-8", errors="replace")

    @property
    def is_safetensors(self) -> bool:
        return self.config.model_format == "safetensors" or any(
            layer.name for layer in self._layers(MEDIA_TYPE_MODEL)
        )

    @property
    def weights_path(self) -> Path | None:
        """The GGUF blob of a GGUF model (None for safetensors models)."""
        if self.is_safetensors:
            return None
        layers = self._layers(MEDIA_TYPE_MODEL)
        return self.store.blob_path(layers[0].digest) if layers else None

    @property
    def safetensors_files(self) -> dict[str, Path]:
        """Relative file name -> blob path, for a safetensors model's directory view."""
        return {
            layer.name: self.store.blob_path(layer.digest)
            for layer in self._layers(MEDIA_TYPE_MODEL, MEDIA_TYPE_JSON)
            if layer.name
        }

    @property
    def parent_model(self) -> str:
        layers = self._layers(MEDIA_TYPE_MODEL)
        return layers[0].from_ if layers else ""

    @property
    def adapters(self) -> list[Path]:
        return [self.store.blob_path(x.digest) for x in self._layers(MEDIA_TYPE_ADAPTER)]

    @property
    def projectors(self) -> list[Path]:
        return [self.store.blob_path(x.digest) for x in self._layers(MEDIA_TYPE_PROJECTOR)]

    @property
    def draft(self) -> Path | None:
        layers = self._layers(MEDIA_TYPE_DRAFT)
        return self.store.blob_path(layers[0].digest) if layers else None

    @cached_property
    def template(self) -> str | None:
        """The Go template of a template (or legacy prompt) layer; None when there is none."""
        layers = self._layers(MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT)
        return self._text(layers[-1]) if layers else None

    @cached_property
    def system(self) -> str:
        layers = self._layers(MEDIA_TYPE_SYSTEM)
        return self._text(layers[-1]) if layers else ""

    @cached_property
    def params(self) -> dict[str, Any]:
        layers = self._layers(MEDIA_TYPE_PARAMS)
        if not layers:
            return {}
        obj = json.loads(self.store.read_blob(layers[-1].digest) or b"{}")
        return obj if isinstance(obj, dict) else {}

    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        layers = self._layers(MEDIA_TYPE_MESSAGES)
        if not layers:
            return []
        obj = json.loads(self.store.read_blob(layers[-1].digest) or b"[]")
        return obj if isinstance(obj, list) else []

    @cached_property
    def licenses(self) -> list[str]:
        return [self._text(x) for x in self._layers(MEDIA_TYPE_LICENSE)]

    @cached_property
    def metadata(self) -> ModelMetadata | None:
        """GGUF or safetensors metadata of the weights (tensor data is never read)."""
        try:
            if self.is_safetensors:
                files = self.safetensors_files
                return read_safetensors(files) if files else None
            path = self.weights_path
            return read_gguf(path) if path is not None and path.is_file() else None
        except (OSError, ValueError, KeyError, struct.error):
            return None  # unreadable weights: show/list still answer, as Ollama's do

    @cached_property
    def capabilities(self) -> list[str]:
        return capabilities(
            self.metadata,
            self.template or "",
            has_projector=bool(self.projectors),
            config_capabilities=self.config.capabilities,
        )

    def size(self) -> int:
        return self.manifest.size()


def rfc3339_local(mtime_ns: int) -> str:
    """Go's RFC3339Nano in the local zone: `2025-05-10T08:06:48.639712648-07:00`."""
    secs, nanos = divmod(mtime_ns, 1_000_000_000)
    dt = datetime.fromtimestamp(secs, tz=timezone.utc).astimezone()
    frac = f".{nanos:09d}".rstrip("0") if nanos else ""
    offset = dt.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac.rstrip(".") + zone


def load_model(store: Store, name: ModelName) -> Model:
    """Read the model of an existing, already resolved name."""
    path = store.manifest_path(name)
    data = path.read_bytes()
    manifest = Manifest.from_bytes(data)
    config = ConfigV2()
    if manifest.config.digest and store.has_blob(manifest.config.digest):
        config = ConfigV2.from_bytes(store.read_blob(manifest.config.digest))
    import hashlib

    return Model(store, name, manifest, data, hashlib.sha256(data).hexdigest(), config,
                 path.stat().st_mtime_ns)


def get_model(store: Store, name: str | ModelName) -> Model:
    """Resolve a name case-insensitively and load it; ModelNotFoundError (404) if missing."""
    raw = name if isinstance(name, str) else name.display_shortest()
    parsed = parse_name(name) if isinstance(name, str) else name
    resolved = store.resolve(parsed)
    if resolved is None:
        raise ModelNotFoundError(raw)
    try:
        return load_model(store, resolved)
    except (OSError, ValueError):
        raise ModelNotFoundError(raw) from None
