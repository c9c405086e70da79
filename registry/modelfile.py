"""Modelfile parsing and printing (parser/parser.go, api/types.go `FormatParams`).

`parse_modelfile` is a port of Ollama's rune-by-rune state machine, so quoting, comments and
error texts (with their line numbers) match. `format_params` types PARAMETER values by the
Ollama option they name. `modelfile_fields` maps a parsed Modelfile to create-request fields
(local paths are left for the caller to import as blobs). The reverse direction, what
`ollama show --modelfile` prints, is `show_modelfile`, with `quote` and `parameters_text`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.errors import APIError
from registry.gofmt import go_quote
from registry.names import ModelName
from registry.paths import UNRESTRICTED, PathPolicy

# Ollama's options (api/types.go Options + Runner) and their Go kinds.
OPTION_TYPES: dict[str, str] = {
    "num_ctx": "int", "num_batch": "int", "num_gpu": "int", "main_gpu": "int",
    "use_mmap": "bool", "num_thread": "int", "draft_num_predict": "int",
    "num_keep": "int", "seed": "int", "num_predict": "int", "top_k": "int",
    "top_p": "float", "min_p": "float", "typical_p": "float", "repeat_last_n": "int",
    "temperature": "float", "repeat_penalty": "float", "presence_penalty": "float",
    "frequency_penalty": "float", "stop": "list",
}
DEPRECATED_PARAMETERS = (
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
    "mirostat", "mirostat_tau", "mirostat_eta",
)
# Removed from Ollama's Options since; older Modelfiles still carry them, so drop them too.
_REMOVED_PARAMETERS = ("tfs_z", "numa")

COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
ERR_INVALID_COMMAND = ('command must be one of "from", "license", "template", "system", "adapter", '
                       '"draft", "renderer", "parser", "parameter", "message", or "requires"')
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_MISSING_FROM = "no FROM line"
ERR_NO_MODEL_FILES = "no Modelfile or safetensors files found"


class ModelfileError(APIError):
    def __init__(self, message: str, line: int = 0):
        super().__init__(400, f"(line {line}): {message}" if line > 0 else message)
        self.line = line


@dataclass
class Command:
    name: str
    args: str

    def __str__(self) -> str:
        if self.name == "model":
            return f"FROM {self.args}"
        if self.name in ("license", "template", "system", "adapter", "renderer", "parser",
                         "requires", "draft"):
            return f"{self.name.upper()} {quote(self.args)}"
        if self.name == "message":
            role, _, message = self.args.partition(": ")
            return f"MESSAGE {role} {quote(message)}"
        return f"PARAMETER {self.name} {quote(self.args)}"


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def __str__(self) -> str:
        return "".join(f"{c}\n" for c in self.commands)


# --- lexing ------------------------------------------------------------------------------

_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)


class _UnexpectedEOF(Exception):
    pass


def _is_alpha(r: str) -> bool:
    return "a" <= r <= "z" or "A" <= r <= "Z"


def _is_space(r: str) -> bool:
    return r in " \t"


def _is_newline(r: str) -> bool:
    return r in "\r\n"


def _is_print(r: str) -> bool:
    return r == " " or r.isprintable()


def _next_state(r: str, cs: int) -> tuple[int, str]:
    """parseRuneForState: the next state and the rune to keep ('' for none)."""
    if cs == _NIL:
        if r == "#":
            return _COMMENT, ""
        if _is_space(r) or _is_newline(r):
            return _NIL, ""
        return _NAME, r
    if cs == _NAME:
        if _is_alpha(r):
            return _NAME, r
        if _is_space(r):
            return _VALUE, ""
        raise ModelfileError(ERR_INVALID_COMMAND)
    if cs == _VALUE:
        if _is_newline(r) or _is_space(r):
            return _NIL, r
        return _VALUE, r
    if cs == _PARAMETER:
        if _is_alpha(r) or "0" <= r <= "9" or r == "_":
            return _PARAMETER, r
        if _is_space(r):
            return _VALUE, ""
        raise _UnexpectedEOF()
    if cs == _MESSAGE:
        if _is_alpha(r):
            return _MESSAGE, r
        if _is_space(r):
            return _VALUE, ""
        raise _UnexpectedEOF()
    if r in "\r\n":
        return _NIL, ""
    return _COMMENT, ""


def unquote(s: str) -> tuple[str, bool]:
    if s[:3] == '"""':
        if len(s) >= 6 and s[-3:] == '"""':
            return s[3:-3], True
        return "", False
    if s[:1] == '"':
        if len(s) >= 2 and s[-1] == '"':
            return s[1:-1], True
        return "", False
    return s, True


def _go_trim_space(s: str) -> str:
    return s.strip(" \t\n\r\v\f\x85\xa0")


def parse_modelfile(text: str | bytes) -> Modelfile:
    """Parse Modelfile text; raises ModelfileError (APIError 400) with Ollama's message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig", errors="replace")
    elif text.startswith("\ufeff"):
        text = text[1:]
    commands: list[Command] = []
    name = ""
    curr = _NIL
    line = 1
    buf: list[str] = []
    role = ""
    for r in text:
        if _is_newline(r):
            line += 1
        try:
            nxt, r2 = _next_state(r, curr)
        except _UnexpectedEOF:
            raise ModelfileError(f"unexpected EOF: {''.join(buf)}") from None
        except ModelfileError as e:
            raise ModelfileError(e.message, line) from None
        if nxt != curr:
            if curr == _NAME:
                word = "".join(buf)
                if word.lower() not in COMMANDS:
                    raise ModelfileError(ERR_INVALID_COMMAND, line)
                s = word.lower()
                if s == "from":
                    name = "model"
                elif s == "parameter":
                    nxt = _PARAMETER
                elif s == "message":
                    nxt = _MESSAGE
                    name = s
                else:
                    name = s
            elif curr == _PARAMETER:
                name = "".join(buf)
            elif curr == _MESSAGE:
                if "".join(buf) not in ("system", "user", "assistant"):
                    raise ModelfileError(ERR_INVALID_ROLE, line)
                role = "".join(buf)
            elif curr == _VALUE:
                s, ok = unquote(_go_trim_space("".join(buf)))
                if not ok or _is_space(r2):
                    buf.append(r2)
                    continue
                if role:
                    s = f"{role}: {s}"
                    role = ""
                commands.append(Command(name, s))
            buf = []
            curr = nxt
        if r2 and _is_print(r2):
            buf.append(r2)
    if curr == _VALUE:
        s, ok = unquote(_go_trim_space("".join(buf)))
        if not ok:
            raise ModelfileError("unexpected EOF")
        if role:
            s = f"{role}: {s}"
        commands.append(Command(name, s))
    elif curr not in (_NIL, _COMMENT):
        raise ModelfileError("unexpected EOF")
    if not any(c.name == "model" for c in commands):
        raise ModelfileError(ERR_MISSING_FROM)
    return Modelfile(commands)


# --- parameter typing --------------------------------------------------------------------

_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_GO_INT_RE = re.compile(r"^[+-]?[0-9]+$")
_GO_FLOAT_RE = re.compile(r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$", re.I)


def _go_list(vals: list[str]) -> str:
    return "[" + " ".join(vals) + "]"


def format_params(params: dict[str, list[str]]) -> dict[str, Any]:
    """api.FormatParams: type each option's string values; APIError 400 on a bad key/value."""
    out: dict[str, Any] = {}
    for key, vals in params.items():
        kind = OPTION_TYPES.get(key)
        if kind is None:
            raise APIError(400, f"unknown parameter '{key}'")
        v = vals[0] if vals else ""
        if kind == "float":
            if not _GO_FLOAT_RE.match(v):
                raise APIError(400, f"invalid float value {_go_list(vals)}")
            out[key] = float(v)
        elif kind == "int":
            if not _GO_INT_RE.match(v) or not -(2**63) <= int(v) < 2**63:
                raise APIError(400, f"invalid int value {_go_list(vals)}")
            out[key] = int(v)
        elif kind == "bool":
            if v not in _GO_BOOL:
                raise APIError(400, f"invalid bool value {_go_list(vals)}")
            out[key] = _GO_BOOL[v]
        else:
            out[key] = list(vals)
    return out


def is_dropped_parameter(key: str) -> bool:
    return key in DEPRECATED_PARAMETERS or key in _REMOVED_PARAMETERS


# --- mapping to a create request ---------------------------------------------------------

@dataclass
class ModelfileFields:
    """What a Modelfile asks for; local paths still to be imported as blobs by the caller."""
    from_: str = ""
    files: dict[str, Path] = field(default_factory=dict)   # relative name -> local path
    blob_files: dict[str, str] = field(default_factory=dict)  # name -> digest (`FROM @sha256:`)
    adapters: dict[str, Path] = field(default_factory=dict)
    draft_files: dict[str, Path] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    requires: str = ""
    renderer: str = ""
    parser: str = ""


_SEMVER_RE = re.compile(
    r"^v(0|[1-9]\d*)(\.(0|[1-9]\d*)(\.(0|[1-9]\d*))?)?"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)


def expand_path(path: str, relative_dir: str | os.PathLike[str]) -> Path:
    if path.startswith("/") or path.startswith("\\") or os.path.isabs(path):
        return Path(os.path.abspath(path))
    if path.startswith("~"):
        return Path(os.path.abspath(os.path.expanduser(path)))
    return Path(os.path.abspath(os.path.join(relative_dir, path)))


def files_for_model(directory: Path) -> list[Path]:
    """The model files of a directory, in Ollama's order of preference, plus its config files."""
    def glob(pattern: str) -> list[Path]:
        return sorted(p for p in directory.glob(pattern) if p.is_file())

    files = glob("model*.safetensors")
    if files:
        files += glob("*/model*.safetensors")
    else:
        for pattern in ("adapters.safetensors", "adapter_model.safetensors", "consolidated*.safetensors",
                        "pytorch_model*.bin", "consolidated*.pth", "*.gguf", "*.bin"):
            files = glob(pattern)
            if files:
                break
        else:
            raise APIError(400, ERR_NO_MODEL_FILES)
    files += glob("*.json") + glob("*/*.json") + glob("chat_template.jinja")
    tokenizer = glob("tokenizer.model") or glob("*/tokenizer.model")
    files += tokenizer
    if (directory / "vocab.txt").is_file():
        files.append(directory / "vocab.txt")  # BERT tokenizers (WordPiece) need it
    seen: dict[Path, None] = {}
    for f in files:
        seen.setdefault(f, None)
    return list(seen)


def local_file_map(path: Path) -> dict[str, Path]:
    """Relative name -> real path for a FROM/ADAPTER path (file or model directory)."""
    if not path.is_dir():
        return {path.name: path}
    root = path.resolve()
    out: dict[str, Path] = {}
    for f in files_for_model(path):
        real = f.resolve()
        try:
            rel = real.relative_to(root)
        except ValueError:
            raise APIError(400, f"insecure path: {os.path.relpath(real, root)}") from None
        out[rel.as_posix()] = real
    return out


def _name_shaped(arg: str) -> bool:
    """A FROM argument that can only be read as a model name, never as a server path."""
    return not arg.startswith(("/", "\\", ".", "~")) and ModelName.parse(arg).is_valid()


def modelfile_fields(mf: Modelfile, relative_dir: str | os.PathLike[str] = ".",
                     paths: PathPolicy = UNRESTRICTED) -> ModelfileFields:
    """Modelfile.CreateRequest: map commands to request fields (APIError 400 on bad values).

    `paths` decides which local paths may be read; it is asked before any path is looked at, so
    a refused path gives the same 403 whether or not it exists (registry/paths.py)."""
    out = ModelfileFields()
    raw_params: dict[str, Any] = {}
    for c in mf.commands:
        if c.name == "model":
            if c.args.startswith("@"):
                digest = c.args[1:]
                out.blob_files[digest.replace(":", "-")] = digest
                continue
            path = expand_path(c.args, relative_dir)
            if not paths.allows(path) and _name_shaped(c.args):
                out.from_ = c.args
                continue
            path = paths.check(path)
            if not path.exists():
                out.from_ = c.args
                continue
            out.files.update(local_file_map(path))
        elif c.name == "draft":
            out.draft_files.update(local_file_map(paths.check(expand_path(c.args, relative_dir))))
        elif c.name == "adapter":
            if c.args.startswith("@"):
                out.adapters = {c.args[1:].replace(":", "-"): Path(c.args[1:])}
                continue
            path = paths.check(expand_path(c.args, relative_dir))
            if not path.exists():
                raise APIError(400, f"stat {path}: no such file or directory")
            out.adapters = local_file_map(path)
        elif c.name in ("template", "system", "renderer", "parser"):
            setattr(out, c.name, c.args)
        elif c.name == "license":
            out.license.append(c.args)
        elif c.name == "requires":
            req = c.args if c.args.startswith("v") else "v" + c.args
            if not _SEMVER_RE.match(req):
                raise APIError(400, "requires must be a valid semver (e.g. 0.14.0)")
            out.requires = req[1:]
        elif c.name == "message":
            role, _, content = c.args.partition(": ")
            out.messages.append({"role": role, "content": content})
        else:
            if is_dropped_parameter(c.name):
                continue
            for k, v in format_params({c.name: [c.args]}).items():
                if isinstance(raw_params.get(k), list):
                    raw_params[k] = raw_params[k] + v
                else:
                    raw_params[k] = v
    out.parameters = raw_params
    return out


# --- printing ------------------------------------------------------------------------------

def quote(s: str) -> str:
    if "\n" in s or s.startswith(" ") or s.endswith(" "):
        if '"' in s:
            return f'"""{s}"""'
        return f'"{s}"'
    return s


def go_float(f: float) -> str:
    """Go's %v (strconv 'g', shortest) formatting of a float64: 0.7, 4096, 1e+06, 1e-05."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    r = repr(abs(f))  # the shortest round-tripping digits, as Go's shortest formatting
    if "e" in r:
        m, _, e = r.partition("e")
        ip, _, fp = m.partition(".")
        digits, exp = (ip + fp).rstrip("0") or "0", int(e) + len(ip) - 1
    else:
        ip, _, fp = r.partition(".")
        ip = ip.lstrip("0")
        if ip:
            digits, exp = (ip + fp).rstrip("0"), len(ip) - 1
        else:
            stripped = fp.lstrip("0")
            digits, exp = stripped.rstrip("0"), -(len(fp) - len(stripped)) - 1
    if exp < -4 or exp >= 6:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp >= 0:
        whole = digits[: exp + 1].ljust(exp + 1, "0")
        frac = digits[exp + 1:]
    else:
        whole, frac = "0", "0" * (-exp - 1) + digits
    return sign + whole + ("." + frac if frac else "")


def go_v(value: Any) -> str:
    """fmt's %v for a JSON-decoded value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + " ".join(go_v(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    return str(value)


def go_sharp_v(value: Any) -> str:
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(go_sharp_v(v) for v in value) + "}"
    return go_v(value)


def parameters_text(params: dict[str, Any]) -> str:
    """/api/show `parameters`: `%-30s %#v` lines, one per list element."""
    lines: list[str] = []
    for k, v in params.items():
        for item in (v if isinstance(v, list) else [v]):
            lines.append(f"{k:<30} {go_sharp_v(item)}")
    return "\n".join(lines)


def show_modelfile(
    short_name: str,
    model_path: str,
    *,
    adapters: list[str] = (),  # type: ignore[assignment]
    projectors: list[str] = (),  # type: ignore[assignment]
    template: str = "{{ .Prompt }}",
    system: str = "",
    renderer: str = "",
    parser: str = "",
    params: dict[str, Any] | None = None,
    licenses: list[str] = (),  # type: ignore[assignment]
    messages: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> str:
    """The text `ollama show --modelfile` prints (server/images.go Model.String)."""
    cmds = [Command("model", model_path)]
    cmds += [Command("adapter", a) for a in adapters]
    cmds += [Command("model", p) for p in projectors]
    cmds.append(Command("template", template))
    if system:
        cmds.append(Command("system", system))
    if renderer:
        cmds.append(Command("renderer", renderer))
    if parser:
        cmds.append(Command("parser", parser))
    for k, v in (params or {}).items():
        for item in (v if isinstance(v, list) else [v]):
            cmds.append(Command(k, go_v(item)))
    cmds += [Command("license", lic) for lic in licenses]
    cmds += [Command("message", f"{m.get('role', '')}: {m.get('content', '')}") for m in messages]
    header = ('# Modelfile generated by "ollama show"\n'
              "# To build a new Modelfile based on this, replace FROM with:\n"
              f"# FROM {short_name}\n\n")
    return header + str(Modelfile(cmds))
