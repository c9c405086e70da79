"""What a generate or chat handler runs a request's output through: the thinking and tool-call
parsers the model template and the request call for, as Ollama's ChatHandler builds them in the
Go-template path (thinking first, then tool calls in what is left)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .thinking import GO_SPACE, ThinkingParser, infer_tags
from .tools import ToolCall, ToolCallParser, tool_call_markers, tool_call_tag


@dataclass
class ParsedDelta:
    thinking: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.thinking or self.content or self.tool_calls)

    def message(self) -> dict[str, Any]:
        """A chat reply's `message`, with Ollama's omitempty fields left out when empty."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.thinking:
            msg["thinking"] = self.thinking
        if self.tool_calls:
            msg["tool_calls"] = [c.to_wire() for c in self.tool_calls]
        return msg


def thinking_enabled(think: bool | str | None) -> bool:
    """A request's `think` after capability defaults: True or any level turns it on."""
    return think is True or (isinstance(think, str) and bool(think))


class ChatOutputParser:
    """Splits streamed output into thinking, content and tool calls.

    `template` is the model's Go template (text, PromptTemplate or gotemplate.Template; None
    for none). Thinking is split when `think` is on and the template shows thinking tags; the
    parser starts inside the thinking when `rendered_prompt` already ends with the opening tag.
    Tool calls are parsed when the request has tools.
    """

    def __init__(self, template: Any, tools: Iterable[Any] | None = None,
                 think: bool | str | None = None, rendered_prompt: str = ""):
        self.thinking: ThinkingParser | None = None
        self.tools: ToolCallParser | None = None
        if thinking_enabled(think):
            open_tag, close_tag = infer_tags(template)
            if open_tag and close_tag:
                start = rendered_prompt.strip(GO_SPACE).endswith(open_tag)
                self.thinking = ThinkingParser(open_tag, close_tag, start_in_thinking=start)
        tools = list(tools or [])
        if tools:
            self.tools = ToolCallParser(tool_call_tag(template), tools,
                                        markers=tool_call_markers(template))

    @property
    def passthrough(self) -> bool:
        return self.thinking is None and self.tools is None

    def add(self, delta: str) -> ParsedDelta:
        """One engine text delta in; what is now certain out (often empty while buffering)."""
        thinking, content = self.thinking.add(delta) if self.thinking else ("", delta)
        calls: list[ToolCall] = []
        if self.tools is not None:
            content, calls = self.tools.add(content)
        return ParsedDelta(thinking, content, calls)

    def finish(self) -> ParsedDelta:
        """The end of output: everything still held back."""
        thinking, content = self.thinking.finish() if self.thinking else ("", "")
        calls: list[ToolCall] = []
        if self.tools is not None:
            content, calls = self.tools.add(content)
            rest, more = self.tools.finish()
            content, calls = content + rest, calls + more
        return ParsedDelta(thinking, content, calls)
