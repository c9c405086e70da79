"""Model metadata without loading tensors: GGUF KV pairs and tensor infos, or an HF
safetensors directory's config.json plus safetensors headers, presented in GGUF-style keys as
Ollama's /api/show does. Also Ollama's capability detection and parameter-size formatting.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ggml/type.go FileType names (general.file_type).
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}
GGUF_MAGIC = b"GGUF"
_ST_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F32"}
_EMBEDDING_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "nomic_bert",
                          "new", "modernbert", "mpnet", "electra"}
_POOLING_TYPES = {"mean": 1, "cls": 2, "lasttoken": 3}
_TEMPLATE_ACTION_RE = re.compile(r"\{\{(.*?)\}\}", re.S)


def human_number(n: int) -> str:
    """format.HumanNumber: 268098176 -> "268.10M", 8030261248 -> "8.0B", 22713216 -> "22.71M"."""
    if n >= 1_000_000_000:
        v = n / 1_000_000_000
        return f"{v:.0f}B" if v == int(v) else f"{v:.1f}B"
    if n >= 1_000_000:
        v = n / 1_000_000
        return f"{v:.0f}M" if v == int(v) else f"{v:.2f}M"
    if n >= 1_000:
        return f"{n / 1000:.0f}K"
    return str(n)


def file_type_name(ft: int | None) -> str:
    if ft is None:
        return ""
    return FILE_TYPES.get(int(ft), "unknown")


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


@dataclass
class ModelMetadata:
    format: str                      # "gguf" | "safetensors"
    architecture: str = ""
    parameter_count: int = 0
    file_type: str = ""
    kv: dict[str, Any] = field(default_factory=dict)   # GGUF-style, arrays possibly lazy
    tensors: list[dict[str, Any]] = field(default_factory=list)
    chat_template: str = ""
    gguf_kind: str = "model"         # general.type: model | adapter | projector | mmproj
    _path: Path | None = None

    @property
    def context_length(self) -> int:
        return int(self.kv.get(f"{self.architecture}.context_length", 0) or 0)

    @property
    def embedding_length(self) -> int:
        return int(self.kv.get(f"{self.architecture}.embedding_length", 0) or 0)

    @property
    def is_embedding(self) -> bool:
        return f"{self.architecture}.pooling_type" in self.kv

    @property
    def has_vision(self) -> bool:
        return any(k == "vision.block_count" or k.endswith(".vision.block_count") for k in self.kv)

    @property
    def has_audio(self) -> bool:
        return any(k == "audio.block_count" or k.endswith(".audio.block_count") for k in self.kv)

    @property
    def family(self) -> str:
        return self.architecture

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """/api/show model_info: all KV pairs but general.name and tokenizer.chat_template;
        arrays over 5 items become [] unless verbose."""
        out: dict[str, Any] = {}
        full = _gguf_full_arrays(str(self._path)) if verbose and self._path else {}
        for k, v in self.kv.items():
            if k in ("general.name", "tokenizer.chat_template"):
                continue
            if isinstance(v, _LazyArray):
                v = full.get(k, []) if verbose else ([] if v.length > 5 else v.small)
            elif isinstance(v, list) and len(v) > 5 and not verbose:
                v = []
            out[k] = v
        return out


class _LazyArray:
    """A GGUF array not decoded yet (token lists are huge)."""

    def __init__(self, length: int, small: list[Any] | None = None):
        self.length = length
        self.small = small or []


# GGUF value types: (struct format, size) for scalars; 8 = string, 9 = array.
_GGUF_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4),
                 5: ("<i", 4), 6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8),
                 12: ("<d", 8)}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_F32 = 8, 9, 6


class _GGUFHeader:
    """A minimal reader of the GGUF header (KV pairs and tensor infos) over a memory map.

    gguf.GGUFReader builds numpy views for every element of every array, which takes tens of
    seconds for a 262k-token vocabulary on a busy CPU; this skips arrays it is not asked for
    and never touches tensor data.
    """

    def __init__(self, path: str, decode_arrays: bool):
        import mmap

        with open(path, "rb") as f:
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.decode_arrays = decode_arrays
        if self.buf[:4] != GGUF_MAGIC:
            self.buf.close()
            raise ValueError("not a GGUF file")
        self.pos = 4
        self.version = self._unpack("<I", 4)
        self.n_tensors = self._unpack("<Q", 8)
        self.n_kv = self._unpack("<Q", 8)

    def _unpack(self, fmt: str, size: int) -> Any:
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return v

    def _str(self) -> str:
        n = self._unpack("<Q", 8)
        s = self.buf[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return s

    def _value(self, vtype: int) -> Any:
        if vtype == _GGUF_STRING:
            return self._str()
        if vtype == _GGUF_ARRAY:
            etype, n = self._unpack("<I", 4), self._unpack("<Q", 8)
            if n <= 5 or self.decode_arrays:
                return [self._value(etype) for _ in range(n)]
            if etype == _GGUF_STRING:
                for _ in range(n):
                    self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]
            elif etype in _GGUF_SCALARS:
                self.pos += n * _GGUF_SCALARS[etype][1]
            else:
                for _ in range(n):
                    self._value(etype)
            return _LazyArray(n)
        fmt, size = _GGUF_SCALARS[vtype]
        v = self._unpack(fmt, size)
        if vtype == _GGUF_F32:  # Go encodes float32 with float32 precision: 1e-06, not 9.99e-07
            return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))
        return v

    def read(self) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        from gguf import GGMLQuantizationType

        try:
            kv: dict[str, Any] = {}
            for _ in range(self.n_kv):
                key = self._str()
                kv[key] = self._value(self._unpack("<I", 4))
            tensors: list[dict[str, Any]] = []
            n_params = 0
            for _ in range(self.n_tensors):
                name = self._str()
                dims = [self._unpack("<Q", 8) for _ in range(self._unpack("<I", 4))]
                ttype = self._unpack("<I", 4)
                self.pos += 8  # data offset
                try:
                    tname = GGMLQuantizationType(ttype).name
                except ValueError:
                    tname = str(ttype)
                tensors.append({"name": name, "type": tname, "shape": dims})
                n_params += int(np.prod(dims)) if dims else 1
            return kv, tensors, n_params
        finally:
            self.buf.close()


@functools.lru_cache(maxsize=8)
def _gguf_cached(path: str, size: int, mtime_ns: int) -> ModelMetadata:
    kv, tensors, n_params = _GGUFHeader(path, decode_arrays=False).read()
    chat_template = str(kv.get("tokenizer.chat_template", "") or "")
    arch = str(kv.get("general.architecture", ""))
    kv.setdefault("general.parameter_count", n_params)
    ft = kv.get("general.file_type")
    return ModelMetadata(
        format="gguf",
        architecture=arch,
        parameter_count=int(kv.get("general.parameter_count") or n_params),
        file_type=file_type_name(ft) if ft is not None else _majority_tensor_type(tensors),
        kv=kv,
        tensors=tensors,
        chat_template=chat_template,
        gguf_kind=str(kv.get("general.type", "model")),
        _path=Path(path),
    )


def _majority_tensor_type(tensors: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for t in tensors:
        counts[t["type"]] = counts.get(t["type"], 0) + 1
    return max(counts, key=counts.get) if counts else ""  # type: ignore[arg-type]


@functools.lru_cache(maxsize=2)
def _gguf_full_arrays(path: str) -> dict[str, list[Any]]:
    kv, _, _ = _GGUFHeader(path, decode_arrays=True).read()
    return {k: v for k, v in kv.items() if isinstance(v, list) and len(v) > 5}

def read_gguf(path: str | Path) -> ModelMetadata:
    """GGUF metadata via a memory-mapped GGUFReader; tensor data is never read."""
    st = Path(path).stat()
    return _gguf_cached(str(path), st.st_size, st.st_mtime_ns)


# --- safetensors --------------------------------------------------------------------------

def safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def read_safetensors(files: dict[str, Path]) -> ModelMetadata:
    """Metadata of an HF directory given as relative name -> path (config.json + headers)."""
    config: dict[str, Any] = {}
    if "config.json" in files:
        config = json.loads(Path(files["config.json"]).read_text())
    n_params = 0
    dtype_counts: dict[str, int] = {}
    tensors: list[dict[str, Any]] = []
    for name, path in sorted(files.items()):
        if not name.endswith(".safetensors"):
            continue
        for tname, info in safetensors_header(Path(path)).items():
            if tname == "__metadata__":
                continue
            shape = [int(x) for x in info.get("shape", [])]
            count = int(np.prod(shape)) if shape else 1
            n_params += count
            dtype = str(info.get("dtype", ""))
            dtype_counts[dtype] = dtype_counts.get(dtype, 0) + count
            tensors.append({"name": tname, "type": dtype, "shape": shape})
    main_dtype = max(dtype_counts, key=dtype_counts.get) if dtype_counts else ""  # type: ignore[arg-type]
    file_type = _ST_DTYPES.get(main_dtype, main_dtype)
    arch = _arch_name(config)
    kv: dict[str, Any] = {"general.architecture": arch, "general.parameter_count": n_params}
    ft_num = {v: k for k, v in FILE_TYPES.items()}.get(file_type)
    if ft_num is not None:
        kv["general.file_type"] = ft_num
    kv.update(_hf_config_kv(arch, config))
    pooling = _pooling_type(files, config)
    if pooling is not None:
        kv[f"{arch}.pooling_type"] = pooling
    chat_template = ""
    if "chat_template.jinja" in files:
        chat_template = Path(files["chat_template.jinja"]).read_text()
    elif "tokenizer_config.json" in files:
        tc = json.loads(Path(files["tokenizer_config.json"]).read_text())
        if isinstance(tc.get("chat_template"), str):
            chat_template = tc["chat_template"]
    return ModelMetadata(format="safetensors", architecture=arch, parameter_count=n_params,
                         file_type=file_type, kv=kv, tensors=tensors, chat_template=chat_template)


def _arch_name(config: dict[str, Any]) -> str:
    mt = str(config.get("model_type", "")).replace("-", "_")
    if mt.endswith("_text"):
        mt = mt[: -len("_text")]
    return mt or "unknown"


_HF_KEYS = (
    ("max_position_embeddings", "context_length"),
    ("hidden_size", "embedding_length"),
    ("intermediate_size", "feed_forward_length"),
    ("num_hidden_layers", "block_count"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
    ("head_dim", "attention.key_length"),
    ("layer_norm_eps", "attention.layer_norm_epsilon"),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
    ("rope_theta", "rope.freq_base"),
    ("sliding_window", "attention.sliding_window"),
    ("vocab_size", "vocab_size"),
)


def _hf_config_kv(arch: str, config: dict[str, Any]) -> dict[str, Any]:
    src = dict(config.get("text_config") or {}) | {k: v for k, v in config.items() if k != "text_config"}
    kv: dict[str, Any] = {}
    for hf_key, suffix in _HF_KEYS:
        v = src.get(hf_key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            kv[f"{arch}.{suffix}"] = v
    if _is_encoder(config):
        kv[f"{arch}.attention.causal"] = False
    if "vision_config" in config and isinstance(config["vision_config"], dict):
        layers = config["vision_config"].get("num_hidden_layers")
        if isinstance(layers, int):
            kv[f"{arch}.vision.block_count"] = layers
    return kv


def _is_encoder(config: dict[str, Any]) -> bool:
    archs = [str(a) for a in config.get("architectures") or []]
    mt = str(config.get("model_type", "")).replace("_", "-")
    return mt in {m.replace("_", "-") for m in _EMBEDDING_MODEL_TYPES} or any(
        a.endswith("Model") and not a.endswith("ForCausalLM") and "Bert" in a for a in archs
    )


def _pooling_type(files: dict[str, Path], config: dict[str, Any]) -> int | None:
    """Sentence-transformers pooling config, else mean pooling for encoder architectures."""
    for name, path in files.items():
        if name.endswith("Pooling/config.json"):
            cfg = json.loads(Path(path).read_text())
            for key, ptype in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                               ("pooling_mode_lasttoken", "lasttoken")):
                if cfg.get(key):
                    return _POOLING_TYPES[ptype]
    return _POOLING_TYPES["mean"] if _is_encoder(config) else None


# --- capabilities ---------------------------------------------------------------------------

def template_variables(template: str) -> set[str]:
    """Dotted field names used inside `{{ }}` actions of a Go template."""
    names: set[str] = set()
    for action in _TEMPLATE_ACTION_RE.findall(template or ""):
        names.update(re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)", action))
    return names


def capabilities(
    meta: ModelMetadata | None,
    template: str = "",
    *,
    has_projector: bool = False,
    config_capabilities: list[str] | None = None,
) -> list[str]:
    """server/images.go Capabilities, for what a model at rest can tell."""
    caps: list[str] = list(config_capabilities or [])

    def add(c: str) -> None:
        if c not in caps:
            caps.append(c)

    if meta is not None:
        add("embedding" if meta.is_embedding else "completion")
        if meta.has_vision:
            add("vision")
        if meta.has_audio:
            add("audio")
    if has_projector:
        add("vision")
    names = template_variables(template)
    if "Tools" in names:
        add("tools")
    if "Suffix" in names:
        add("insert")
    open_tag, close_tag = thinking_tags(template)
    if open_tag and close_tag:
        add("thinking")
    return caps


# Ollama's thinking.InferTags over a light block scan of the template text: the registry sits
# below the template engine (backends.templates), whose parse tree backends.parsers reads the
# same way.
_GO_ACTION_RE = re.compile(
    r"\{\{(-[ \t\r\n])?((?:\"(?:\\.|[^\"\\])*\"|`[^`]*`|.)*?)([ \t\r\n]-)?\}\}", re.S)
_GO_STRING_RE = re.compile(r'"(?:\\.|[^"\\])*"|`[^`]*`')
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" \
            "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _first_field(pipe: str, name: str) -> bool:
    """Whether a pipeline mentions `.name` as a field of dot (not `$.name`, not `.X.name`)."""
    bare = _GO_STRING_RE.sub('""', pipe)
    return re.search(r"(?<![\w$.)\]])\." + name + r"\b", bare) is not None


def _scan_blocks(template: str) -> list[Any]:
    """Text and actions nested by if/range/with ... else ... end, as
    ("text", s) | ("action", pipe) | ("block", kind, pipe, body, else_body)."""
    root: list[Any] = []
    stack: list[tuple[list[Any], Any, int]] = []  # (list being filled, block, ends it closes)
    current = root
    pos, trim_next = 0, False
    for m in _GO_ACTION_RE.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        if text:
            current.append(("text", text))
        pos, trim_next = m.end(), bool(m.group(3))
        action = m.group(2).strip()
        word, _, rest = action.partition(" ")
        word = word.strip()
        if action.startswith("/*"):
            continue
        if word in ("if", "range", "with", "define", "block"):
            block = ["block", word, rest, [], None]
            current.append(block)
            stack.append((current, block, 1))
            current = block[3]
        elif word == "else" and stack:
            parent, block, ends = stack.pop()
            block[4] = []
            kind, _, cond = rest.strip().partition(" ")
            if kind in ("if", "with"):  # `else if` shares the end of the block it continues
                inner = ["block", kind, cond, [], None]
                block[4].append(inner)
                stack.append((parent, block, 0))
                stack.append((block[4], inner, 1))
                current = inner[3]
            else:
                stack.append((parent, block, ends))
                current = block[4]
        elif word == "end" and stack:
            parent, _, _ = stack.pop()
            while stack and stack[-1][2] == 0:
                parent, _, _ = stack.pop()
            current = parent
        else:
            current.append(("action", action))
    text = template[pos:]
    if trim_next:
        text = text.lstrip(" \t\r\n")
    if text:
        current.append(("text", text))
    return root


def thinking_tags(template: str) -> tuple[str, str]:
    """thinking.InferTags: for a `.Thinking` inside `range .Messages`, the trimmed first and
    last text of the nearest enclosing list, e.g. ("<think>", "</think>"); ("", "") if none."""
    tags = ["", ""]

    def found_in(lst: list[Any]) -> None:
        if lst and lst[0][0] == "text":
            tags[0] = lst[0][1].strip(_GO_SPACE)
        if lst and lst[-1][0] == "text":
            tags[1] = lst[-1][1].strip(_GO_SPACE)

    def walk(lst: list[Any], in_messages: bool | None) -> None:
        for node in lst:
            if node[0] == "action":
                if in_messages and _first_field(node[1], "Thinking"):
                    found_in(lst)
            elif node[0] == "block" and node[1] != "define":
                _, kind, pipe, body, else_body = node
                inner = _first_field(pipe, "Messages") if kind == "range" else in_messages
                if (inner if kind == "range" else in_messages) and _first_field(pipe, "Thinking"):
                    found_in(lst)
                walk(body, inner)
                if else_body is not None:
                    walk(else_body, inner)

    try:
        walk(_scan_blocks(template or ""), None)
    except (IndexError, ValueError):
        return "", ""
    return tags[0], tags[1]
