"""From a request and a model to prompt text: Ollama's message assembly (server/routes.go, §2.1,
§2.2, §8.1) over the template engines in `backends.templates`."""

from __future__ import annotations

import functools
from typing import Any

from backends.templates import DEFAULT_TEMPLATE, PromptTemplate, Values, chat_prompt
from backends.templates.gotemplate.errors import TemplateError
from backends.templates.jinja import jinja_renderer
from registry.errors import APIError
from registry.model import Model


@functools.lru_cache(maxsize=128)
def parse_template(text: str) -> PromptTemplate:
    try:
        return PromptTemplate.parse(text)
    except TemplateError as err:
        raise APIError(400, f"template error: {err}") from None


def model_template(model: Model, override: str | None = None) -> PromptTemplate:
    return parse_template(override or model.template or DEFAULT_TEMPLATE)


def native_chat_template(model: Model) -> str | None:
    """A safetensors model without a Go template renders with its HF Jinja chat template."""
    if model.template is not None or not model.is_safetensors:
        return None
    files = model.safetensors_files
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].read_text()
    config = files.get("tokenizer_config.json")
    if config is not None:
        import json

        template = json.loads(config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def chat_messages(model: Model, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model's MESSAGEs, then the request's; the model SYSTEM first unless the request has one."""
    out = list(model.messages) + list(messages)
    if model.system and (not messages or messages[0].get("role") != "system"):
        out.insert(0, {"role": "system", "content": model.system})
    return out


def render_chat(
    model: Model,
    messages: list[dict[str, Any]],
    tokenizer: Any,
    *,
    num_ctx: int,
    truncate: bool,
    tools: list[Any] | None,
    think: bool | str | None,
) -> tuple[str, list[int]]:
    """The prompt text and its tokens (the last truncation count is the prompt: kept, not
    tokenized again)."""
    encoded: dict[str, list[int]] = {}

    def count(text: str) -> int:
        encoded.clear()
        encoded[text] = tokenizer.encode(text)
        return len(encoded[text])

    native = native_chat_template(model)
    if native is not None:
        render: Any = jinja_renderer(native, tools=tools, think=think,
                                     bos_token=tokenizer.bos_token or "",
                                     eos_token=tokenizer.eos_token or "")
        text = chat_prompt(messages, render, count_tokens=count, num_ctx=num_ctx,
                           truncate=truncate).prompt
    else:
        text = chat_prompt(messages, model_template(model), count_tokens=count, num_ctx=num_ctx,
                           truncate=truncate, tools=tools, think=think).prompt
    return text, encoded[text] if text in encoded else tokenizer.encode(text)


def render_generate(
    model: Model,
    *,
    prompt: str,
    suffix: str,
    system: str | None,
    template: str | None,
    use_model_messages: bool,
    think: bool | str | None,
) -> str:
    """generate's prompt: suffix mode, or system + MESSAGEs + the user prompt (§2.1 step 11)."""
    tmpl = model_template(model, template)
    if suffix:
        return tmpl.execute(Values.with_think(think, prompt=prompt, suffix=suffix))
    messages: list[dict[str, Any]] = []
    system_text = system if system is not None else model.system
    if system_text:
        messages.append({"role": "system", "content": system_text})
    if use_model_messages:
        messages += model.messages
    messages.append({"role": "user", "content": prompt})
    return tmpl.execute(Values.with_think(think, messages=messages))
