"""What `corral run` sends and prints: generation, chat turns, embeddings, the thinking display (cmd/cmd.go)."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.cells import cell_len

from serve.cli import terminal
from serve.cli.client import Client, StatusError
from serve.cli.format import go_duration, metrics_summary
from serve.cli.progress import Progress, Spinner
from serve.duration import DurationError, parse_go_duration

GREY, BOLD, RESET = "\033[38;5;245m", "\033[1m", "\033[0m"
THINK_LEVELS = ("high", "medium", "low", "max")


@dataclass
class RunOptions:
    model: str
    prompt: str = ""
    word_wrap: bool = True
    format: str = ""
    system: str = ""
    keep_alive: Any = None
    think: Any = None
    think_explicit: bool = False
    hide_thinking: bool = False
    verbose: bool = False
    multimodal: bool = False
    parent_model: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def keep_alive_value(raw: str) -> Any:
    """--keepalive as Ollama's api.Duration marshals it: a Go duration string, or -1 for forever."""
    from serve.cli.errors import CLIError

    try:
        seconds = parse_go_duration(raw)
    except DurationError as exc:
        raise CLIError(str(exc)) from exc
    if seconds < 0 or math.isinf(seconds):
        return -1
    return go_duration(round(seconds * 1e9))


def think_value(raw: str | None) -> Any:
    from serve.cli.errors import CLIError

    if raw is None:
        return None
    if raw in ("", "true"):
        return True
    if raw == "false":
        return False
    if raw in THINK_LEVELS:
        return raw
    raise CLIError(f'invalid value for --think: "{raw}" (must be true, false, high, medium, low, or max)')


# -- images and audio in prompts (cmd/interactive.go extractFileData) -------------------------

_FILE_PATH = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\)[\S\\ ]+?\.(?i:jpg|jpeg|png|webp|wav)\b")
_UNESCAPE = re.compile(r"\\([ ()\[\]{}$&;'\\*?~])")
MAX_FILE_BYTES = 100 * 1024 * 1024


def extract_file_names(text: str) -> list[str]:
    return _FILE_PATH.findall(text)


def _media_kind(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio"
    return None


def extract_file_data(text: str) -> tuple[str, list[str]]:
    """Paths of images/audio in a prompt become base64 attachments and leave the text."""
    from serve.cli.errors import CLIError

    images: list[str] = []
    for raw in extract_file_names(text):
        path = Path(_UNESCAPE.sub(r"\1", raw))
        if not path.is_file():
            continue
        data = path.read_bytes()
        kind = _media_kind(data[:16])
        if kind is None:
            raise CLIError(f"invalid file type: {path}")
        if len(data) > MAX_FILE_BYTES:
            raise CLIError("file size exceeds maximum limit (100MB)")
        _err(f"Added {kind} '{path}'\n")
        for form in (f"'{path}'", f"'{raw}'", raw):
            text = text.replace(form, "")
        images.append(base64.b64encode(data).decode("ascii"))
    return text.strip(), images


def is_multimodal(info: dict[str, Any]) -> bool:
    capabilities = info.get("capabilities") or []
    if "vision" in capabilities or "audio" in capabilities or info.get("projector_info"):
        return True
    return any(".vision." in key for key in info.get("model_info") or {})


# -- output -----------------------------------------------------------------------------------


class Display:
    """displayResponse: streams text, word-wrapping at the terminal's width when on a terminal."""

    def __init__(self, word_wrap: bool) -> None:
        self.word_wrap = word_wrap and terminal.stdout_is_terminal()
        self.width = shutil.get_terminal_size((80, 24)).columns
        self.line_length = 0
        self.word_buffer = ""

    def write(self, content: str) -> None:
        if not content:
            return
        if not self.word_wrap or self.width < 10:
            _out(self.word_buffer + content)
            self.word_buffer = ""
            return
        out: list[str] = []
        for ch in content:
            if self.line_length + 1 > self.width - 5:
                if cell_len(self.word_buffer) > self.width - 10:
                    out.append(self.word_buffer + ch)
                    self.word_buffer, self.line_length = "", 0
                    continue
                if self.word_buffer:
                    out.append(f"\x1b[{cell_len(self.word_buffer)}D")  # back over the partial word
                out.append("\x1b[K\n" + self.word_buffer + ch)
                self.line_length = cell_len(self.word_buffer) + cell_len(ch)
                continue
            out.append(ch)
            width = cell_len(ch)
            self.line_length += width
            if width >= 2:
                self.word_buffer = ""  # wide (CJK) characters break anywhere
            elif ch in " \t":
                self.word_buffer = ""
            elif ch in "\r\n":
                self.line_length, self.word_buffer = 0, ""
            else:
                self.word_buffer += ch
        _out("".join(out))


def _thinking_open(plain: bool) -> str:
    return "Thinking...\n" if plain else f"{GREY}{BOLD}Thinking...\n{RESET}{GREY}"


def _thinking_close(plain: bool) -> str:
    return "...done thinking.\n\n" if plain else f"{GREY}{BOLD}...done thinking.\n\n{RESET}"


class Responder:
    """Prints one streamed reply: thinking section, content, tool calls; keeps what was said."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.plain = not terminal.stdout_is_terminal()
        self.display = Display(opts.word_wrap)
        self.thinking = ""
        self.content = ""
        self.think_open = False
        self.latest: dict[str, Any] = {}
        self.spinner = Progress(transient=True)
        self.spinner.add(Spinner(""))

    def feed(self, thinking: str, content: str, tool_calls: list[Any] | None) -> None:
        if content or not self.opts.hide_thinking:
            self.spinner.stop()
        if thinking and not self.opts.hide_thinking:
            if not self.think_open:
                _out(_thinking_open(self.plain))
                self.think_open = True
            self.thinking += thinking
            self.display.write(thinking)
        elif thinking:
            self.thinking += thinking
        if self.think_open and (content or tool_calls):
            if not self.thinking.endswith("\n"):
                _out("\n")
            _out(_thinking_close(self.plain))
            self.think_open = False
            self.display = Display(self.opts.word_wrap)
        self.content += content
        self.display.write(content)
        for i, call in enumerate(tool_calls or []):
            fn = call.get("function") or {}
            args = json.dumps(fn.get("arguments") or {}, separators=(",", ":"))
            _out(("\n" if i else "") + f"  Model called a non-existent function '{fn.get('name', '')}()' with arguments: {args}")

    def close(self) -> None:
        self.spinner.stop()


def _request_common(opts: RunOptions) -> dict[str, Any]:
    req: dict[str, Any] = {"model": opts.model}
    if opts.format:
        req["format"] = opts.format if opts.format == "json" else _json_or_text(opts.format)
    if opts.options:
        req["options"] = dict(opts.options)
    if opts.keep_alive is not None:
        req["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        req["think"] = opts.think
    return req


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def generate(client: Client, opts: RunOptions) -> None:
    """One prompt through /api/generate, streamed to stdout (the non-interactive path)."""
    req = _request_common(opts)
    req["prompt"] = opts.prompt
    if opts.multimodal:
        req["prompt"], images = extract_file_data(opts.prompt)
        if images:
            req["images"] = images
    if opts.system:
        req["system"] = opts.system
    responder = Responder(opts)
    try:
        for chunk in client.stream("/api/generate", req):
            responder.latest = chunk
            responder.feed(chunk.get("thinking") or "", chunk.get("response") or "", chunk.get("tool_calls"))
    except KeyboardInterrupt:
        return
    finally:
        responder.close()
    if opts.prompt:
        _out("\n\n")
    if responder.latest.get("done") and opts.verbose:
        _err(metrics_summary(responder.latest))


def chat(client: Client, opts: RunOptions) -> dict[str, Any] | None:
    """The session so far through /api/chat; returns the assistant message, None if interrupted."""
    req = _request_common(opts)
    req["messages"] = list(opts.messages)
    responder = Responder(opts)
    role = "assistant"
    try:
        for chunk in client.stream("/api/chat", req):
            responder.latest = chunk
            msg = chunk.get("message") or {}
            role = msg.get("role") or role
            responder.feed(msg.get("thinking") or "", msg.get("content") or "", msg.get("tool_calls"))
    except KeyboardInterrupt:
        return None
    finally:
        responder.close()
    if opts.messages:
        _out("\n\n")
    if opts.verbose:
        _err(metrics_summary(responder.latest))
    reply: dict[str, Any] = {"role": role, "content": responder.content}
    if responder.thinking:
        reply["thinking"] = responder.thinking
    return reply


def load_model(client: Client, opts: RunOptions) -> None:
    """Preload: generate with no prompt (done_reason "load"); fails early on an unsupported think."""
    req: dict[str, Any] = {"model": opts.model}
    if opts.keep_alive is not None:
        req["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        req["think"] = opts.think
    spinner = Progress(transient=True)
    spinner.add(Spinner(""))
    try:
        for _ in client.stream("/api/generate", req):
            pass
    finally:
        spinner.stop()


def show_or_pull(client: Client, name: str, insecure: bool) -> dict[str, Any]:
    from serve.cli.transfer import pull_model

    try:
        return client.request("POST", "/api/show", {"model": name}) or {}
    except StatusError as exc:
        if exc.status_code != 404:
            raise
    pull_model(client, name, insecure)
    return client.request("POST", "/api/show", {"model": name}) or {}


def infer_think(info: dict[str, Any], opts: RunOptions) -> Any:
    if opts.think_explicit:
        return opts.think
    return True if "thinking" in (info.get("capabilities") or []) else None


def embed(client: Client, opts: RunOptions, truncate: str | None, dimensions: int) -> int:
    from serve.cli.errors import CLIError

    if not opts.prompt:
        raise CLIError(f'embedding models require input text. Usage: corral run {opts.model} "your text here"')
    req: dict[str, Any] = {"model": opts.model, "input": opts.prompt}
    if opts.keep_alive is not None:
        req["keep_alive"] = opts.keep_alive
    if truncate is not None:
        req["truncate"] = truncate == "true"
    if dimensions > 0:
        req["dimensions"] = dimensions
    resp = client.request("POST", "/api/embed", req) or {}
    embeddings = resp.get("embeddings") or []
    if not embeddings:
        raise CLIError("no embeddings returned")
    _out(json.dumps(embeddings[0], separators=(",", ":")) + "\n")
    return 0
