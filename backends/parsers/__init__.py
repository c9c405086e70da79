"""Parsers of model output in the Go-template path: thinking traces and tool calls.

- `ChatOutputParser(template, tools, think, rendered_prompt)`: what a handler feeds engine
  text deltas to; `.add(delta)` and `.finish()` give `ParsedDelta(thinking, content, tool_calls)`.
- `infer_tags(template)` / `ThinkingParser`: Ollama's thinking.InferTags and thinking.Parser.
- `tool_call_tag(template)` / `ToolCallParser` / `ToolCall`: Ollama's tools package.
"""

from .chat import ChatOutputParser, ParsedDelta, thinking_enabled
from .thinking import ThinkingParser, infer_tags
from .tools import ToolCall, ToolCallParser, tool_call_id, tool_call_markers, tool_call_tag

__all__ = ["ChatOutputParser", "ParsedDelta", "thinking_enabled", "ThinkingParser", "infer_tags",
           "ToolCall", "ToolCallParser", "tool_call_id", "tool_call_markers", "tool_call_tag"]
