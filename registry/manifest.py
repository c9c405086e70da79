"""Manifest, Layer and ConfigV2 (manifest/manifest.go, types/model/config.go).

Written exactly as Go's json.Encoder writes them: compact, keys in struct order, `from`/`name`
omitted when empty, a trailing newline. Reading tolerates unknown fields (e.g. `rootfs`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from registry.gofmt import go_json

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_MODEL = "application/vnd.ollama.image.model"
MEDIA_TYPE_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TYPE_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_TYPE_DRAFT = "application/vnd.ollama.image.draft"
MEDIA_TYPE_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_TYPE_PROMPT = "application/vnd.ollama.image.prompt"
MEDIA_TYPE_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_TYPE_PARAMS = "application/vnd.ollama.image.params"
MEDIA_TYPE_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_TYPE_LICENSE = "application/vnd.ollama.image.license"
MEDIA_TYPE_EMBED = "application/vnd.ollama.image.embed"
MEDIA_TYPE_TENSOR = "application/vnd.ollama.image.tensor"
MEDIA_TYPE_JSON = "application/vnd.ollama.image.json"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int
    from_: str = ""
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            d["from"] = self.from_
        if self.name:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Layer":
        return cls(
            media_type=str(d.get("mediaType", "")),
            digest=str(d.get("digest", "")),
            size=int(d.get("size", 0) or 0),
            from_=str(d.get("from", "") or ""),
            name=str(d.get("name", "") or ""),
        )


@dataclass
class Manifest:
    config: Layer
    layers: list[Layer] = field(default_factory=list)
    schema_version: int = 2
    media_type: str = MEDIA_TYPE_MANIFEST

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": self.schema_version,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_bytes(self) -> bytes:
        return (go_json(self.to_dict()) + "\n").encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        return cls(
            config=Layer.from_dict(d.get("config") or {}),
            layers=[Layer.from_dict(x) for x in d.get("layers") or []],
            schema_version=int(d.get("schemaVersion", 2) or 2),
            media_type=str(d.get("mediaType", MEDIA_TYPE_MANIFEST) or MEDIA_TYPE_MANIFEST),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise ValueError("manifest is not a JSON object")
        return cls.from_dict(obj)

    def all_layers(self) -> list[Layer]:
        """Layers plus the config blob (what a manifest references)."""
        return [*self.layers, self.config] if self.config.digest else list(self.layers)

    def size(self) -> int:
        return sum(layer.size for layer in self.all_layers())

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]


@dataclass
class ConfigV2:
    model_format: str = ""
    model_family: str = ""
    model_families: list[str] | None = None
    model_type: str = ""
    file_type: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    remote_host: str = ""
    remote_model: str = ""
    capabilities: list[str] = field(default_factory=list)
    context_length: int = 0
    embedding_length: int = 0
    base_name: str = ""
    quantize: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    extra: dict[str, Any] = field(default_factory=dict)

    _OMITEMPTY = (
        "renderer", "parser", "requires", "remote_host", "remote_model", "capabilities",
        "context_length", "embedding_length", "base_name", "quantize",
    )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model_format": self.model_format,
            "model_family": self.model_family,
            "model_families": self.model_families,
            "model_type": self.model_type,
            "file_type": self.file_type,
        }
        for k in self._OMITEMPTY:
            v = getattr(self, k)
            if v:
                d[k] = v
        d["architecture"] = self.architecture
        d["os"] = self.os
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    def to_bytes(self) -> bytes:
        return (go_json(self.to_dict()) + "\n").encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConfigV2":
        known = {
            "model_format", "model_family", "model_families", "model_type", "file_type",
            *cls._OMITEMPTY, "architecture", "os",
        }
        c = cls()
        for k in known:
            if k in d and d[k] is not None:
                setattr(c, k, d[k])
        c.model_families = d.get("model_families")
        c.extra = {k: v for k, v in d.items() if k not in known and k != "rootfs"}
        return c

    @classmethod
    def from_bytes(cls, data: bytes) -> "ConfigV2":
        try:
            obj = json.loads(data)
        except ValueError:
            return cls()
        return cls.from_dict(obj if isinstance(obj, dict) else {})
