"""The create pipeline (server/create.go) and copy/delete/list (server/images.go, routes.go).

`create_model` validates what Ollama validates before streaming and raises APIError then;
it returns a generator of progress dicts in Ollama's order and wording, ending with
`{"status": "success"}`. Errors found while running are raised from the generator.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from registry.adapters import is_peft, validate_adapter, weight_files
from registry.errors import APIError
from registry.manifest import (
    MEDIA_TYPE_ADAPTER, MEDIA_TYPE_CONFIG, MEDIA_TYPE_JSON, MEDIA_TYPE_LICENSE, MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL, MEDIA_TYPE_PARAMS, MEDIA_TYPE_PROJECTOR, MEDIA_TYPE_PROMPT, MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE, ConfigV2, Layer, Manifest, go_json,
)
from registry.model import ModelNotFoundError, get_model, load_model
from registry.model_info import ModelMetadata, human_number, is_gguf, read_gguf, read_safetensors
from registry.modelfile import ModelfileFields, modelfile_fields, parse_modelfile
from registry.names import ModelName
from registry.paths import UNRESTRICTED, PathPolicy
from registry.store import Store, validate_digest

Progress = dict[str, Any]
PullFn = Callable[[str], Iterator[Progress]]
DetectFn = Callable[[str], "tuple[str, str, dict[str, Any]] | None"]

QUANTIZE_SOURCE_TYPES = ("F16", "BF16", "F32")
QUANTIZE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
                  "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "F16", "BF16", "F32")
_SAFETENSORS_SIDE_FILES = ("tokenizer.model", "chat_template.jinja", "vocab.txt")


@dataclass
class CreateRequest:
    model: str
    from_: str = ""
    files: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str = ""
    requires: str = ""
    renderer: str = ""
    parser: str = ""
    stream: bool = True

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> "CreateRequest":
        """The structured JSON form (`name`/`quantization` aliases accepted)."""
        return cls(
            model=str(body.get("model") or body.get("name") or ""),
            from_=str(body.get("from") or ""),
            files=dict(body.get("files") or {}),
            adapters=dict(body.get("adapters") or {}),
            template=body.get("template") or None,
            system=body.get("system") or None,
            license=body.get("license") or None,
            parameters=body.get("parameters") or None,
            messages=body.get("messages") or None,
            quantize=str(body.get("quantize") or body.get("quantization") or ""),
            requires=str(body.get("requires") or ""),
            renderer=str(body.get("renderer") or ""),
            parser=str(body.get("parser") or ""),
            stream=body.get("stream", True) is not False,
        )


# --- request forms --------------------------------------------------------------------------

def request_from_body(store: Store, body: dict[str, Any],
                      paths: PathPolicy = UNRESTRICTED) -> CreateRequest:
    """Either JSON form of /api/create. The old `modelfile`/`path` form is parsed here and its
    local files are imported as blobs (what the CLI would have uploaded); `paths` says which
    server-side paths it may read."""
    if not ("modelfile" in body or "path" in body):
        return CreateRequest.from_dict(body)
    text, relative_dir = body.get("modelfile") or "", "."
    path = body.get("path") or ""
    if not text and not path:
        raise APIError(400, "path or Modelfile are required")
    if path:
        relative_dir = str(Path(path).parent)
        if not text:
            try:
                text = paths.check(path).read_text()
            except OSError as e:
                raise APIError(400, f"open {path}: {e.strerror or e}") from None
    fields = modelfile_fields(parse_modelfile(text), relative_dir, paths)
    req = request_from_modelfile(store, fields)
    req.model = str(body.get("model") or body.get("name") or "")
    req.quantize = str(body.get("quantize") or body.get("quantization") or "")
    req.stream = body.get("stream", True) is not False
    return req


def _import_file(store: Store, path: Path) -> str:
    with open(path, "rb") as f, store.blob_writer() as w:
        w.write_from(f)
        return w.commit()


def request_from_modelfile(store: Store, fields: ModelfileFields) -> CreateRequest:
    """Map parsed Modelfile fields to a CreateRequest, importing local files into blobs."""
    files = {name: _import_file(store, p) for name, p in fields.files.items()}
    for name, digest in fields.blob_files.items():
        files[name] = validate_digest(digest)
        if not store.has_blob(digest):
            raise APIError(400, f'blob "{digest}" not found')
    adapters = {}
    for name, p in fields.adapters.items():
        adapters[name] = _import_file(store, p) if p.exists() else validate_digest(str(p))
    return CreateRequest(
        model="",
        from_=fields.from_,
        files=files,
        adapters=adapters,
        template=fields.template,
        system=fields.system,
        license=fields.license or None,
        parameters=fields.parameters or None,
        messages=fields.messages or None,
        requires=fields.requires,
        renderer=fields.renderer,
        parser=fields.parser,
    )


# --- the pipeline ----------------------------------------------------------------------------

def _valid_rel_path(p: str) -> bool:
    """Go's fs.ValidPath: unrooted, slash-separated, no empty, `.` or `..` elements."""
    if p == ".":
        return True
    if not p or "\\" in p or "\x00" in p:
        return False
    return all(el not in ("", ".", "..") for el in p.split("/"))


def _validate(store: Store, req: CreateRequest) -> ModelName:
    for files in (req.files, req.adapters):
        for fp, digest in files.items():
            if not _valid_rel_path(fp):
                raise APIError(400, "file path must be relative")
            if not digest:
                raise APIError(400, "invalid digest format")
            validate_digest(digest)
    name = ModelName.parse(req.model)
    if not req.model or not name.is_valid():
        raise APIError(400, "invalid model name")
    if not req.from_ and not req.files:
        raise APIError(400, "neither 'from' or 'files' was specified")
    if req.from_ and not ModelName.parse(req.from_).is_valid() and not req.files:
        raise APIError(400, "invalid model name")
    if len(weight_files(req.adapters)) > 1:
        raise APIError(400, "only one adapter is currently supported")
    if req.quantize and req.quantize.upper() not in QUANTIZE_TYPES:
        raise APIError(400, f"unsupported quantization type {req.quantize}")
    return store.canonical(name)


def create_model(
    store: Store,
    req: CreateRequest,
    *,
    noprune: bool = False,
    pull: PullFn | None = None,
    validate_template: Callable[[str], None] | None = None,
    detect_template: DetectFn | None = None,
) -> Iterator[Progress]:
    """Validate now (APIError before any progress), then return the progress generator."""
    name = _validate(store, req)
    if req.template is not None and validate_template is not None:
        validate_template(req.template)
    base: Any = None
    if req.from_ and not req.files:
        try:
            base = get_model(store, req.from_)
        except ModelNotFoundError:
            if pull is None:
                raise
    if req.adapters and base is not None:
        _adapter_files(store, req.adapters, base.metadata)  # a mismatch is a 400, before progress
    return _run(store, req, name, base, noprune, pull, detect_template)


class _Builder:
    def __init__(self, store: Store):
        self.store = store
        self.layers: list[Layer] = []
        self.statuses: list[str] = []
        self.data: dict[str, bytes] = {}

    def add_blob(self, media_type: str, data: bytes, name: str = "") -> Layer:
        existed = self.store.has_blob(_digest(data))
        digest, size = self.store.write_blob(data)
        layer = Layer(media_type, digest, size, name=name)
        self.data[digest] = data
        self._note(layer, existed)
        self.layers.append(layer)
        return layer

    def add_existing(self, layer: Layer) -> None:
        self._note(layer, True)
        self.layers.append(layer)

    def _note(self, layer: Layer, existed: bool) -> None:
        verb = "using existing layer" if existed else "creating new layer"
        self.statuses.append(f"{verb} {layer.digest}")

    def remove(self, *media_types: str) -> list[Layer]:
        removed = [x for x in self.layers if x.media_type in media_types]
        self.layers = [x for x in self.layers if x.media_type not in media_types]
        return removed


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _params_json(params: dict[str, Any]) -> bytes:
    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
            return int(v)  # Go's encoder writes float64 4096 as 4096
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return go_json({k: norm(params[k]) for k in sorted(params)}).encode()


def _run(store: Store, req: CreateRequest, name: ModelName, base: Any, noprune: bool,
         pull: PullFn | None, detect_template: DetectFn | None) -> Iterator[Progress]:
    b = _Builder(store)
    config = ConfigV2()
    meta: ModelMetadata | None = None
    autodetected: str | None = None
    if req.files:
        meta, config = yield from _layers_from_files(store, b, req.files)
    else:
        if base is None:
            assert pull is not None
            yield from pull(req.from_)
            base = get_model(store, req.from_)
        src = base.display_name
        for layer in base.manifest.layers:
            b.add_existing(Layer(layer.media_type, layer.digest, layer.size, from_=src, name=layer.name))
        config = ConfigV2.from_dict(base.config.to_dict())
        meta = None
    if req.adapters:
        yield from _adapter_layers(store, b, req.adapters, meta or (base.metadata if base else None))
    if req.quantize:
        q = req.quantize.upper()
        if config.model_format != "safetensors" and config.file_type.upper() not in QUANTIZE_SOURCE_TYPES:
            raise APIError(400, "quantization is only supported for F16, BF16 and F32 models")
        config.quantize = q  # applied by the engine at load time
        config.file_type = q
    for attr in ("renderer", "parser", "requires"):
        if getattr(req, attr):
            setattr(config, attr, getattr(req, attr))

    params = dict(req.parameters or {})
    if req.template is None and meta is not None and meta.chat_template and detect_template:
        found = detect_template(meta.chat_template)
        if found is not None:
            autodetected, text, named_params = found
            b.remove(MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT)
            b.add_blob(MEDIA_TYPE_TEMPLATE, text.encode())
            params = {**(named_params or {}), **params}
    if req.template is not None:
        b.remove(MEDIA_TYPE_TEMPLATE, MEDIA_TYPE_PROMPT)
        b.add_blob(MEDIA_TYPE_TEMPLATE, req.template.encode())
    if req.system is not None:
        b.remove(MEDIA_TYPE_SYSTEM)
        b.add_blob(MEDIA_TYPE_SYSTEM, req.system.encode())
    licenses = [req.license] if isinstance(req.license, str) else list(req.license or [])
    for lic in licenses:
        b.add_blob(MEDIA_TYPE_LICENSE, str(lic).encode())
    if params:
        merged = {}
        for old in b.remove(MEDIA_TYPE_PARAMS):
            obj = json.loads(store.read_blob(old.digest) or b"{}")
            merged.update(obj if isinstance(obj, dict) else {})
        merged.update(params)
        b.add_blob(MEDIA_TYPE_PARAMS, _params_json(merged))
    if req.messages:
        b.remove(MEDIA_TYPE_MESSAGES)
        msgs = [{"role": m.get("role", ""), "content": m.get("content", "")} for m in req.messages]
        b.add_blob(MEDIA_TYPE_MESSAGES, go_json(msgs).encode())

    for status in b.statuses:
        yield {"status": status}
    if autodetected:
        yield {"status": f"using autodetected template {autodetected}"}
    yield {"status": "writing manifest"}
    with store.lock(name), store.gc_lock:
        for layer in b.layers:  # a concurrent create of this name may have pruned a shared blob
            if layer.digest in b.data and not store.has_blob(layer.digest):
                store.write_blob(b.data[layer.digest])
        cdigest, csize = store.write_blob(config.to_bytes())
        manifest = Manifest(config=Layer(MEDIA_TYPE_CONFIG, cdigest, csize), layers=b.layers)
        old: Manifest | None = None
        if store.manifest_path(name).is_file():
            try:
                old = store.read_manifest(name)
            except (OSError, ValueError):
                old = None
        store.write_manifest(name, manifest)
        if old is not None and not noprune:
            keep = {x.digest for x in manifest.all_layers()}
            store.remove_unreferenced(x.digest for x in old.all_layers() if x.digest not in keep)
    yield {"status": "success"}


def _kind(store: Store, fname: str, digest: str) -> str:
    lower = fname.lower()
    if lower.endswith(".gguf"):
        return "gguf"
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".json") or posixpath.basename(fname) in _SAFETENSORS_SIDE_FILES:
        return "json"
    return "gguf" if is_gguf(store.blob_path(digest)) else "other"


def _check_blob(store: Store, digest: str) -> None:
    if not store.has_blob(digest):
        raise APIError(400, f"open {store.blob_path(digest)}: no such file or directory")


def _layers_from_files(store: Store, b: _Builder, files: dict[str, str]):
    for digest in files.values():
        _check_blob(store, digest)
    kinds = {fname: _kind(store, fname, d) for fname, d in files.items()}
    if "safetensors" in kinds.values():
        yield {"status": "converting model"}
        named = {f: store.blob_path(d) for f, d in files.items() if kinds[f] in ("safetensors", "json")}
        meta = read_safetensors(named)
        for fname in sorted(named):
            media = MEDIA_TYPE_MODEL if kinds[fname] == "safetensors" else MEDIA_TYPE_JSON
            d = validate_digest(files[fname])
            b.add_existing(Layer(media, d, store.blob_size(d), name=fname))
        return meta, _config_from(meta, "safetensors")
    ggufs = [f for f in files if kinds[f] == "gguf"]
    if not ggufs:
        raise APIError(400, "unknown type")
    meta = None
    for fname in ggufs:
        yield {"status": "parsing GGUF"}
        d = validate_digest(files[fname])
        m = read_gguf(store.blob_path(d))
        kind = m.gguf_kind
        if kind == "adapter":
            media = MEDIA_TYPE_ADAPTER
        elif kind in ("projector", "mmproj") or m.architecture == "clip":
            media = MEDIA_TYPE_PROJECTOR
        else:
            media = MEDIA_TYPE_MODEL
            meta = meta or m
        b.add_existing(Layer(media, d, store.blob_size(d)))
    if meta is None:
        raise APIError(400, "no model layer found")
    return meta, _config_from(meta, "gguf")


def _adapter_layers(store: Store, b: _Builder, adapters: dict[str, str],
                    base: ModelMetadata | None):
    """A PEFT adapter as named layers (config + safetensors), a GGUF LoRA as one layer;
    either replaces an adapter the base model had, after checking that it fits the base."""
    peft = is_peft(adapters)
    yield {"status": "converting adapter" if peft else "parsing GGUF"}
    _adapter_files(store, adapters, base)
    b.remove(MEDIA_TYPE_ADAPTER)
    for fname in sorted(adapters) if peft else weight_files(adapters):
        d = validate_digest(adapters[fname])
        b.add_existing(Layer(MEDIA_TYPE_ADAPTER, d, store.blob_size(d), name=fname if peft else ""))


def _adapter_files(store: Store, adapters: dict[str, str], base: ModelMetadata | None) -> None:
    for digest in adapters.values():
        _check_blob(store, digest)
    validate_adapter({name: store.blob_path(validate_digest(d)) for name, d in adapters.items()}, base)


def _config_from(meta: ModelMetadata, fmt: str) -> ConfigV2:
    return ConfigV2(
        model_format=fmt,
        model_family=meta.architecture,
        model_families=[meta.architecture] if meta.architecture else None,
        model_type=human_number(meta.parameter_count),
        file_type=meta.file_type,
        context_length=meta.context_length,
        embedding_length=meta.embedding_length,
    )


# --- copy / delete / list ---------------------------------------------------------------------

def copy_model(store: Store, source: str, destination: str) -> None:
    """/api/copy: byte copy of the manifest; blobs are shared."""
    src = ModelName.parse(source)
    if not source or not src.is_valid():
        raise APIError(400, f'source "{source}" is invalid')
    dst = ModelName.parse(destination)
    if not destination or not dst.is_valid():
        raise APIError(400, f'destination "{destination}" is invalid')
    resolved = store.resolve(src)
    if resolved is None:
        raise ModelNotFoundError(source, f'model "{source}" not found')
    store.copy(resolved, dst)


def delete_model(store: Store, name: str) -> None:
    """/api/delete: remove the manifest, prune empty dirs, GC unreferenced blobs."""
    n = ModelName.parse(name)
    if not name or not n.is_valid():
        raise APIError(400, f'name "{name}" is invalid')
    resolved = store.resolve(n)
    if resolved is None:
        raise ModelNotFoundError(name)
    store.delete(resolved)


def model_details(model: Any) -> dict[str, Any]:
    c = model.config
    d: dict[str, Any] = {
        "parent_model": model.parent_model,
        "format": c.model_format,
        "family": c.model_family,
        "families": c.model_families,
        "parameter_size": c.model_type,
        "quantization_level": c.file_type,
    }
    if c.context_length:
        d["context_length"] = c.context_length
    if c.embedding_length:
        d["embedding_length"] = c.embedding_length
    return d


def list_models(store: Store) -> list[dict[str, Any]]:
    """/api/tags entries, newest first."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for name in store.list_names():
        try:
            m = load_model(store, name)
        except (OSError, ValueError):
            continue
        entry: dict[str, Any] = {
            "name": m.display_name,
            "model": m.display_name,
            "modified_at": m.modified_at,
            "size": m.size(),
            "digest": m.digest,
            "details": model_details(m),
        }
        try:
            caps = m.capabilities
        except Exception:  # unreadable weights must not hide the model from the list
            caps = []
        if caps:
            entry["capabilities"] = caps
        if m.config.remote_model:
            entry["remote_model"] = m.config.remote_model
        if m.config.remote_host:
            entry["remote_host"] = m.config.remote_host
        rows.append((m.mtime_ns, entry))
    rows.sort(key=lambda r: r[0], reverse=True)
    return [r[1] for r in rows]


def run_create(store: Store, req: CreateRequest, **kwargs: Any) -> list[Progress]:
    """Drain the pipeline (for callers that do not stream)."""
    return list(create_model(store, req, **kwargs))
