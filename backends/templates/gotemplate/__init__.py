"""A Go text/template engine, enough of it for Ollama's Modelfile templates.

`Template.parse(text)` gives a template with Go's builtins plus Ollama's functions and
`missingkey=zero`, as Ollama's template.Parse configures it; `execute(data)` renders it.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from . import nodes
from .errors import ExecError, ParseError, TemplateError
from .executor import Executor
from .funcs import BUILTINS, OLLAMA_FUNCS
from .gofmt import OrderedMap, go_json, sprint_value
from .parser import parse

__all__ = ["Template", "TemplateError", "ParseError", "ExecError", "OrderedMap", "go_json",
           "sprint_value", "template_vars", "identifiers", "DEFAULT_FUNCS", "nodes"]

DEFAULT_FUNCS = {**BUILTINS, **OLLAMA_FUNCS}


class Template:
    """A parsed template set: the main tree under `name` plus every define/block."""

    def __init__(self, trees: dict[str, nodes.ListNode], name: str = "",
                 funcs: dict | None = None, missingkey_zero: bool = True):
        self.trees = trees
        self.name = name
        self.funcs = DEFAULT_FUNCS if funcs is None else funcs
        self.missingkey_zero = missingkey_zero

    @classmethod
    def parse(cls, text: str, name: str = "", extra_funcs: dict[str, Callable[..., Any]] | None = None,
              missingkey_zero: bool = True) -> "Template":
        funcs = dict(DEFAULT_FUNCS)
        for fname, fn in (extra_funcs or {}).items():
            funcs[fname] = (fn, 0, None)
        return cls(parse(text, funcs, name), name, funcs, missingkey_zero)

    @property
    def root(self) -> nodes.ListNode:
        return self.trees[self.name]

    def with_root(self, root: nodes.ListNode, missingkey_zero: bool | None = None) -> "Template":
        trees = dict(self.trees)
        trees[self.name] = root
        zero = self.missingkey_zero if missingkey_zero is None else missingkey_zero
        return Template(trees, self.name, self.funcs, zero)

    def copy_root(self) -> nodes.ListNode:
        return copy.deepcopy(self.root)

    def execute(self, data: Any) -> str:
        return Executor(self.trees, self.funcs, self.name, self.missingkey_zero).run(self.root, data)


def identifiers(node: Any) -> list[str]:
    """Field and variable names a node mentions, walked as Ollama's template.Identifiers does."""
    if isinstance(node, nodes.ListNode):
        return [name for child in node.nodes for name in identifiers(child)]
    if isinstance(node, nodes.TemplateNode):
        if node.pipe is None:
            raise ParseError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, nodes.ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, nodes.BranchNode):
        names = identifiers(node.pipe)
        for lst in (node.list, node.else_list):
            if lst is not None:
                names += identifiers(lst)
        return names
    if isinstance(node, nodes.PipeNode):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, (nodes.FieldNode, nodes.VariableNode)):
        return list(node.ident)
    return []


def template_vars(text: str | Template) -> set[str]:
    """Lower-cased identifiers the template references (Ollama's `Vars()`), e.g. {"messages", "tools"}."""
    tmpl = text if isinstance(text, Template) else Template.parse(text)
    names: set[str] = set()
    for tree in tmpl.trees.values():
        names.update(i.lower() for i in identifiers(tree))
    return names
