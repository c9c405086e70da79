"""Errors of the Go template engine, worded as Go's text/template words them."""

from __future__ import annotations


class TemplateError(Exception):
    """Base class; str(err) is Go's err.Error() text."""


class ParseError(TemplateError):
    """The template text is malformed (Ollama's create answers 400 `template error: <this>`)."""


class ExecError(TemplateError):
    """Executing a parsed template failed."""
