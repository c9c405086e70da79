"""Prompt templates: Ollama's Go templates (gotemplate + template + prompt) and HF Jinja ones (jinja).

- `PromptTemplate.parse(text)` / `.execute(Values(...))`: Ollama's template.Parse / Execute.
- `chat_prompt(messages, template_or_render, ...)`: image tags, truncation to num_ctx, render.
- `jinja.render_chat_template(...)`: transformers-style apply_chat_template (native mode).
"""

from .gotemplate import ExecError, ParseError, TemplateError, template_vars
from .prompt import ChatPrompt, chat_prompt, truncate_messages
from .template import DEFAULT_TEMPLATE, Message, PromptTemplate, Values

__all__ = ["PromptTemplate", "Values", "Message", "DEFAULT_TEMPLATE", "ChatPrompt", "chat_prompt",
           "truncate_messages", "template_vars", "TemplateError", "ParseError", "ExecError"]
