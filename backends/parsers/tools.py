"""Ollama's generic Go-template tool-call parser (tools/tools.go, tools/template.go; reference
§8.4 and surprise 24).

The tag comes from the text the template writes for `.ToolCalls` (`<tool_call>`,
`[TOOL_CALLS] [`, `<|python_tag|>`, or `{`/`[` for bare JSON). `ToolCallParser` passes text
before the tag through as content, holding back anything that may be the start of the tag, then
finds calls by the request's tool names and the first balanced JSON object that parses.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Iterator, Iterable

from backends.templates.gotemplate import nodes

from ._template import template_root
from .thinking import GO_SPACE

_ID_ALPHABET = string.ascii_lowercase + string.digits
# Markers a template writes around calls (`</tool_call>`, `[/TOOL_CALLS]`, `<|eom_id|>`): never
# shown as content when unparsable call text is handed back.
_MARKER_RE = re.compile(r"<[^<>\s{}\"']+>|\[/?[A-Z_]+\]")
# Marker shapes removed from that text even when the template does not show them: special
# tokens and closing tags, not `<word>` (that may be the model's own text).
_SPECIAL_RE = re.compile(r"<\|[^<>|]*\|>|<｜[^<>｜]*｜>|</[^<>\s{}\"']+>|\[/?[A-Z_]+\]")


def tool_call_id() -> str:
    """`call_` + 8 random [a-z0-9], as server/routes.go toolCallId."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    index: int
    id: str = field(default_factory=tool_call_id)

    def to_wire(self) -> dict[str, Any]:
        """The native API form; `arguments` stays an object (OpenAI compat wants a string)."""
        return {"id": self.id, "function": {"index": self.index, "name": self.name,
                                            "arguments": dict(self.arguments)}}


# --- the tag ---------------------------------------------------------------------------------

def _is_tool_calls_if(node: nodes.IfNode) -> bool:
    return any(isinstance(arg, nodes.FieldNode) and "ToolCalls" in arg.ident
               for cmd in node.pipe.cmds for arg in cmd.args)


def find_tool_calls_if(items: Iterable[Any]) -> nodes.IfNode | None:
    """The first `{{ if … .ToolCalls … }}`, depth first (tools/template.go findToolCallNode)."""
    for node in items:
        if isinstance(node, nodes.IfNode) and _is_tool_calls_if(node):
            return node
        if isinstance(node, nodes.ListNode):
            found = find_tool_calls_if(node.nodes)
        elif isinstance(node, nodes.BranchNode):
            found = find_tool_calls_if(node.list.nodes)
            if found is None and node.else_list is not None:
                found = find_tool_calls_if(node.else_list.nodes)
        else:
            continue
        if found is not None:
            return found
    return None


def _first_text(items: Iterable[Any]) -> nodes.TextNode | None:
    """The first non-blank text before any action; a block's text counts only inside it."""
    for node in items:
        if isinstance(node, nodes.TextNode):
            if node.text.strip(GO_SPACE):
                return node
        elif isinstance(node, nodes.ListNode):
            found = _first_text(node.nodes)
            if found is not None:
                return found
        elif isinstance(node, nodes.BranchNode):
            found = _first_text(node.list.nodes)
            if found is None and node.else_list is not None:
                found = _first_text(node.else_list.nodes)
            return found
        elif isinstance(node, nodes.ActionNode):
            return None
    return None


def tool_call_tag(template: Any) -> str:
    """tools.parseTag: the first text the `.ToolCalls` branch writes, cut at `{` and trimmed;
    `{` (JSON at the start of the output) when there is none."""
    root = template_root(template)
    node = find_tool_calls_if(root.nodes) if root is not None else None
    text = _first_text(node.list.nodes) if node is not None else None
    if text is None:
        return "{"
    tag = text.text.replace("\r\n", "\n").split("{", 1)[0].strip(GO_SPACE)
    return tag or "{"


def tool_call_markers(template: Any) -> list[str]:
    """Tag-like markers written in the `.ToolCalls` branch, longest first."""
    root = template_root(template)
    node = find_tool_calls_if(root.nodes) if root is not None else None
    found: set[str] = set()

    def walk(n: Any) -> None:
        if isinstance(n, nodes.TextNode):
            found.update(_MARKER_RE.findall(n.text))
        elif isinstance(n, nodes.ListNode):
            for c in n.nodes:
                walk(c)
        elif isinstance(n, nodes.BranchNode):
            walk(n.list)
            if n.else_list is not None:
                walk(n.else_list)

    if node is not None:
        walk(node.list)
    return sorted(found, key=len, reverse=True)


# --- the calls -------------------------------------------------------------------------------

def tool_names(tools: Iterable[Any] | None) -> list[str]:
    """Function names of a request's tools (dicts as sent, or objects with .function.name)."""
    names: list[str] = []
    for tool in tools or []:
        fn = tool.get("function") if isinstance(tool, dict) else getattr(tool, "function", None)
        name = fn.get("name") if isinstance(fn, dict) else getattr(fn, "name", None)
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _find_tool(names: list[str], buf: str, final: bool) -> tuple[str | None, int]:
    """The earliest (then longest) tool name in buf and where it ends. While streaming, a
    buffer ending in a proper prefix of a name waits ("get" may become "get_weather")."""
    if not buf:
        return None, 0
    if not final:
        longest = max((len(n) for n in names), default=0)
        for i in range(1, min(len(buf), longest) + 1):
            tail = buf[-i:]
            if any(len(tail) < len(n) and n.startswith(tail) for n in names):
                return None, 0
    best: str | None = None
    start = -1
    for name in names:
        pos = buf.find(name)
        if pos < 0:
            continue
        if best is not None and (pos > start or (pos == start and len(name) <= len(best))):
            continue
        best, start = name, pos
    return (best, start + len(best)) if best is not None else (None, 0)


def _no_constants(value: str) -> Any:
    raise ValueError(f"not JSON: {value}")  # Go's encoding/json has no NaN or Infinity


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _args_in(obj: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, bool]:
    def as_map(key: str) -> dict[str, Any] | None:
        v = obj.get(key)
        if isinstance(v, dict):
            return v
        return _json_object(v) if isinstance(v, str) else None

    if "name" in obj:
        for key in ("arguments", "parameters"):
            args = as_map(key)
            if args is not None:
                return args, True
        return None, True  # a call without arguments
    args = as_map(name)
    if args is not None:
        return args, True
    for v in obj.values():
        children = [v] if isinstance(v, dict) else [c for c in v if isinstance(c, dict)] \
            if isinstance(v, list) else []
        for child in children:
            args, found = _args_in(child, name)
            if found:
                return args, True
    return None, False


def _outside_strings(buf: str) -> Iterator[tuple[int, str]]:
    """(index, char) of the characters of buf outside JSON strings (escape aware)."""
    in_string = escaped = False
    for i, c in enumerate(buf):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            in_string = not in_string
        elif not in_string:
            yield i, c


def _find_arguments(name: str, buf: str) -> tuple[dict[str, Any] | None, int]:
    """The first balanced, parsable JSON object in buf (string and escape aware), reduced to
    the call's arguments, and the index just past it; (None, 0) when there is none yet."""
    start, depth = -1, 0
    for i, c in _outside_strings(buf):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and start >= 0:
                data = _json_object(buf[start:i + 1])
                if data is None:
                    start = -1
                    continue
                args, found = _args_in(data, name)
                return (args if found else data) or {}, i + 1
            depth = max(depth, 0)
    return None, 0


def _balanced(buf: str, open_c: str, close_c: str) -> bool:
    depth = 0
    for _, c in _outside_strings(buf):
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return True
    return False


class ToolCallParser:
    """tools.Parser over a stream of text deltas.

    Content before the tag passes through; a possible start of the tag is held back. After a
    named tag everything is call text; with a `{`/`[` tag, calls are looked for only when the
    output starts with that character, and a balanced non-call JSON value is content again.
    Call text that never yields a call comes back as content from `finish`, markers removed.
    """

    LOOKING, CALLING, DONE = range(3)

    def __init__(self, tag: str, tools: Iterable[Any] | None, markers: Iterable[str] = ()):
        self.tag = tag or "{"
        self.names = tool_names(tools)
        self.markers = sorted({self.tag, *markers} - {"{", "["}, key=len, reverse=True)
        self.state = self.LOOKING
        self.count = 0  # calls parsed so far: the next call's index
        self._buf = ""

    @property
    def bare_json(self) -> bool:
        return self.tag in ("{", "[")

    def add(self, delta: str) -> tuple[str, list[ToolCall]]:
        """Feed a piece of output; returns (content now certain, calls completed)."""
        if self.state == self.DONE:
            return delta, []
        self._buf += delta
        content = ""
        if self.state == self.LOOKING:
            i, found = self._find_tag()
            content, self._buf = (self._buf, "") if i < 0 else (self._buf[:i], self._buf[i:])
            if self.bare_json and content.strip(GO_SPACE):
                self.state = self.DONE
                content, self._buf = content + self._buf, ""
                return content, []
            if not found:
                return content, []
            self.state = self.CALLING
        calls = self._parse_calls(final=False)
        if self.bare_json and _balanced(self._buf, self.tag, "}" if self.tag == "{" else "]"):
            self.state = self.DONE
            content, self._buf = content + self._buf, ""
        return content, calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The end of output: calls still in the buffer, and whatever text is left as content."""
        calls = self._parse_calls(final=True) if self.state == self.CALLING else []
        rest, self._buf = self._buf, ""
        if self.state == self.LOOKING:  # a partial tag that never completed is plain text
            return rest, calls
        if self.state == self.DONE:
            return rest, calls
        if self.bare_json:
            return ("" if self.count else rest), calls
        for marker in self.markers:
            rest = rest.replace(marker, "")
        rest = _SPECIAL_RE.sub("", rest)
        if not rest.strip(GO_SPACE + "[]{},`"):  # only what closed the calls already parsed
            return "", calls
        return rest.strip(GO_SPACE), calls

    def _find_tag(self) -> tuple[int, bool]:
        i = self._buf.find(self.tag)
        if i >= 0:
            return i, True
        for n in range(min(len(self._buf), len(self.tag)), 0, -1):
            if self._buf.endswith(self.tag[:n]):
                return len(self._buf) - n, False
        return -1, False

    def _parse_calls(self, final: bool) -> list[ToolCall]:
        calls: list[ToolCall] = []
        while True:
            name, end = _find_tool(self.names, self._buf, final)
            if name is None:
                return calls
            args, args_end = _find_arguments(name, self._buf)
            if args is None:
                return calls
            calls.append(ToolCall(name=name, arguments=args, index=self.count))
            self.count += 1
            self._buf = self._buf[max(end, args_end):]
