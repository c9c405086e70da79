"""Hugging Face Jinja chat templates, rendered as transformers' `apply_chat_template` does.

Used for safetensors models and for Ollama's "native" mode (a GGUF's tokenizer.chat_template).
Rendering goes through transformers' own sandboxed environment (`raise_exception`,
`strftime_now`, an unescaped `tojson`, loop controls), so templates behave as they do there.
"""

from __future__ import annotations

import json
from typing import Any

from registry.errors import APIError

from .template import Message


def hf_message(m: Any) -> dict[str, Any]:
    """An Ollama chat message in the OpenAI/HF shape chat templates read."""
    msg = Message.of(m)
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.thinking:
        out["reasoning_content"] = msg.thinking
    if msg.tool_calls:
        calls = []
        for call in msg.tool_calls:
            call = call if isinstance(call, dict) else dict(vars(call))
            fn = dict(call.get("function") or {})
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    pass
            entry: dict[str, Any] = {"type": "function",
                                     "function": {"name": fn.get("name", ""), "arguments": args or {}}}
            if call.get("id"):
                entry["id"] = call["id"]
            calls.append(entry)
        out["tool_calls"] = calls
    if msg.role == "tool":
        if msg.tool_name:
            out["name"] = msg.tool_name
        if msg.tool_call_id:
            out["tool_call_id"] = msg.tool_call_id
    return out


def render_chat_template(chat_template: str, messages: list[Any], *, tools: list[Any] | None = None,
                         add_generation_prompt: bool = True, bos_token: str = "",
                         eos_token: str = "", think: bool | str | None = None,
                         **kwargs: Any) -> str:
    """The prompt text for `messages`; `think` maps to enable_thinking / reasoning_effort.

    Template errors (syntax, `raise_exception`) raise APIError(500, <message>).
    """
    import jinja2
    from transformers.utils.chat_template_utils import render_jinja_template

    extra: dict[str, Any] = {"bos_token": bos_token, "eos_token": eos_token, **kwargs}
    if think is not None:
        extra.setdefault("enable_thinking", think not in (False, "", "none"))
        if isinstance(think, str):
            extra.setdefault("reasoning_effort", think)
    try:
        rendered, _ = render_jinja_template(
            conversations=[[hf_message(m) for m in messages]],
            tools=list(tools) if tools else None,
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except jinja2.TemplateError as e:
        raise APIError(500, str(e)) from None
    return rendered[0]


def jinja_renderer(chat_template: str, *, tools: list[Any] | None = None, bos_token: str = "",
                   eos_token: str = "", think: bool | str | None = None, **kwargs: Any):
    """A Render (messages -> prompt) for prompt.chat_prompt's truncation."""

    def render(messages: list[Message]) -> str:
        return render_chat_template(chat_template, messages, tools=tools, bos_token=bos_token,
                                    eos_token=eos_token, think=think, **kwargs)

    return render
