"""The parse tree of a model template, however the caller holds it (text, PromptTemplate, or
a gotemplate.Template); None when there is no Go template to read tags from."""

from __future__ import annotations

from typing import Any

from backends.templates.gotemplate import Template, TemplateError, nodes


def template_root(template: Any) -> nodes.ListNode | None:
    if template is None:
        return None
    if isinstance(template, nodes.ListNode):
        return template
    tmpl = getattr(template, "tmpl", template)  # PromptTemplate wraps a gotemplate.Template
    if isinstance(tmpl, Template):
        return tmpl.root
    if isinstance(template, str):
        try:
            return Template.parse(template).root
        except TemplateError:
            return None
    raise TypeError(f"not a template: {type(template).__name__}")
