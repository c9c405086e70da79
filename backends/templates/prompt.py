"""Building a chat prompt: image tags, history truncation to num_ctx, and rendering.

Follows Ollama's server/prompt.go `chatPrompt`: drop the oldest messages until the rendered
prompt fits, always keeping the system messages and the last message.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from .template import DEFAULT_TEMPLATE, Message, PromptTemplate, Values

__all__ = ["ChatPrompt", "chat_prompt", "truncate_messages", "tag_images", "render_messages",
           "Message", "Values", "PromptTemplate", "DEFAULT_TEMPLATE", "IMAGE_TOKENS"]

# Ollama's heuristic: each image counts as 768 tokens for models with a projector.
IMAGE_TOKENS = 768

Render = Callable[[list[Message]], str]
CountTokens = Callable[[str], int]


@dataclass
class ChatPrompt:
    prompt: str
    images: list[Any] = field(default_factory=list)
    first_message: int = 0  # index of the oldest non-system message kept


def truncate_messages(messages: list[Message], render: Render, count_tokens: CountTokens,
                      num_ctx: int, image_tokens: int = 0) -> tuple[list[Message], int]:
    """(system messages dropped with the cut-off head, index of the first message kept)."""
    last = len(messages) - 1
    for i in range(len(messages)):
        system = [m for m in messages[:i] if m.role == "system"]
        kept = messages[i:]
        n = count_tokens(render(system + kept))
        n += image_tokens * sum(len(m.images) for m in kept)
        if n <= num_ctx or i == last:
            return system, i
    return [], 0


def tag_images(messages: list[Message], start: int = 0,
               tag: bool = True) -> tuple[list[Message], list[Any]]:
    """Number the images from `start` on and mark them `[img-N]` in the content, as Ollama does."""
    out = list(messages)
    images: list[Any] = []
    for i in range(start, len(out)):
        m = out[i]
        if not m.images:
            continue
        prefix, content = "", m.content
        for img in m.images:
            marker = f"[img-{len(images)}]"
            images.append(img)
            if not tag:
                continue
            if "[img]" in content:
                content = content.replace("[img]", marker, 1)
            else:
                prefix += marker
        if tag:
            out[i] = copy.copy(m)
            out[i].content = prefix + content
    return out, images


def render_messages(template: PromptTemplate, tools: list[Any] | None = None,
                    think: bool | str | None = None) -> Render:
    """A Render over a Go template with fixed tools and think settings."""

    def render(messages: list[Message]) -> str:
        return template.execute(Values.with_think(think, messages=messages, tools=tools))

    return render


def chat_prompt(messages: list[Any], render: Render | PromptTemplate, *,
                count_tokens: CountTokens | None = None, num_ctx: int = 0, truncate: bool = True,
                tools: list[Any] | None = None, think: bool | str | None = None,
                image_tokens: int = 0, tag: bool = True) -> ChatPrompt:
    """The prompt for the next chat turn.

    `render` is a PromptTemplate (rendered with `tools`/`think`) or any callable over messages
    (e.g. a Jinja chat template). Truncation needs `count_tokens` and `num_ctx`; `image_tokens`
    is 768 for models with a projector, else 0. `tag=False` leaves contents untouched (a
    renderer that places images itself).
    """
    if isinstance(render, PromptTemplate):
        render = render_messages(render, tools, think)
    msgs = [Message.of(m) for m in messages]
    system: list[Message] = []
    start = 0
    if truncate and count_tokens is not None and msgs:
        system, start = truncate_messages(msgs, render, count_tokens, num_ctx, image_tokens)
    tagged, images = tag_images(msgs, start, tag)
    return ChatPrompt(render(system + tagged[start:]), images, start)
