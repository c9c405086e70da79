"""Thinking traces in the Go-template path (Ollama's thinking package, reference §8.5).

`infer_tags` reads the tags a template wraps `.Thinking` in; `ThinkingParser` splits a model's
streamed output into thinking and content at those tags.
"""

from __future__ import annotations

from typing import Any, Callable

from backends.templates.gotemplate import nodes

from ._template import template_root

# Go's unicode.IsSpace, which Ollama trims with; str.isspace also counts \x1c-\x1f.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
           "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _children(node: Any) -> list[Any]:
    """What Ollama's templateVisit descends into (not ChainNode, as in Go)."""
    if isinstance(node, nodes.ListNode):
        return list(node.nodes)
    if isinstance(node, nodes.BranchNode):
        return [n for n in (node.pipe, node.list, node.else_list) if n is not None]
    if isinstance(node, nodes.ActionNode):
        return [node.pipe]
    if isinstance(node, nodes.TemplateNode):
        return [node.pipe] if node.pipe is not None else []
    if isinstance(node, nodes.PipeNode):
        return list(node.cmds)
    if isinstance(node, nodes.CommandNode):
        return list(node.args)
    return []


def _visit(node: Any, enter: Callable[[Any, list[Any]], None], ancestors: list[Any]) -> None:
    ancestors.append(node)
    enter(node, ancestors)
    for child in _children(node):
        _visit(child, enter, ancestors)
    ancestors.pop()


def _range_uses(rng: nodes.RangeNode, field: str) -> bool:
    found = False

    def enter(node: Any, _: list[Any]) -> None:
        nonlocal found
        if isinstance(node, nodes.FieldNode) and node.ident and node.ident[0] == field:
            found = True

    _visit(rng.pipe, enter, [])
    return found


def infer_tags(template: Any) -> tuple[str, str]:
    """thinking.InferTags: for a `.Thinking` inside `range .Messages`, the trimmed first and
    last text nodes of its nearest enclosing list, e.g. ("<think>", "</think>"); ("", "")
    when the template shows no such tags."""
    root = template_root(template)
    if root is None:
        return "", ""
    tags = ["", ""]

    def enter(node: Any, ancestors: list[Any]) -> None:
        if not (isinstance(node, nodes.FieldNode) and node.ident and node.ident[0] == "Thinking"):
            return
        rng = next((a for a in reversed(ancestors) if isinstance(a, nodes.RangeNode)), None)
        if rng is None or not _range_uses(rng, "Messages"):
            return
        lst = next(a for a in reversed(ancestors) if isinstance(a, nodes.ListNode))
        if lst.nodes and isinstance(lst.nodes[0], nodes.TextNode):
            tags[0] = lst.nodes[0].text.strip(GO_SPACE)
        if lst.nodes and isinstance(lst.nodes[-1], nodes.TextNode):
            tags[1] = lst.nodes[-1].text.strip(GO_SPACE)

    _visit(root, enter, [])
    return tags[0], tags[1]


def _overlap(s: str, delim: str) -> int:
    """Length of the longest suffix of s that is a prefix of delim."""
    for i in range(min(len(s), len(delim)), 0, -1):
        if s.endswith(delim[:i]):
            return i
    return 0


class ThinkingParser:
    """thinking.Parser: looking for the opening tag (leading whitespace allowed), eating
    whitespace after it, thinking, eating whitespace after the closing tag, content.

    Output that does not start with the opening tag is all content, untrimmed. Text that may
    still turn into a tag is held back until the next delta (or `finish`).
    """

    LOOKING, EAT_AFTER_OPEN, THINKING, EAT_AFTER_CLOSE, DONE = range(5)

    def __init__(self, open_tag: str, close_tag: str, start_in_thinking: bool = False):
        if not open_tag or not close_tag:
            raise ValueError("thinking tags must not be empty")
        self.open_tag = open_tag
        self.close_tag = close_tag
        self.state = self.LOOKING
        self._acc = ""
        if start_in_thinking:  # the prompt already ends with the opening tag
            self.add(open_tag)

    def add(self, delta: str) -> tuple[str, str]:
        """Feed a piece of output; returns the (thinking, content) now certain."""
        self._acc += delta
        thinking: list[str] = []
        content: list[str] = []
        more = True
        while more:
            t, c, more = self._eat()
            thinking.append(t)
            content.append(c)
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """The held-back text at the end of output: a partial closing tag is thinking, a
        partial opening tag (or bare whitespace) before anything else is content."""
        acc, self._acc = self._acc, ""
        if self.state == self.THINKING:
            return acc, ""
        if self.state in (self.LOOKING, self.DONE):
            return "", acc
        return "", ""

    def _eat(self) -> tuple[str, str, bool]:
        acc = self._acc
        if self.state == self.LOOKING:
            trimmed = acc.lstrip(GO_SPACE)
            if trimmed.startswith(self.open_tag):
                after = trimmed[len(self.open_tag):].lstrip(GO_SPACE)
                self._acc = after
                self.state = self.THINKING if after else self.EAT_AFTER_OPEN
                return "", "", True
            if self.open_tag.startswith(trimmed):  # a partial tag, or only whitespace so far
                return "", "", False
            self.state = self.DONE
            self._acc = ""
            return "", acc, False
        if self.state == self.EAT_AFTER_OPEN:
            trimmed = acc.lstrip(GO_SPACE)
            self._acc = trimmed
            if not trimmed:
                return "", "", False
            self.state = self.THINKING
            return "", "", True
        if self.state == self.THINKING:
            i = acc.find(self.close_tag)
            if i >= 0:
                thinking = acc[:i]
                rest = acc[i + len(self.close_tag):].lstrip(GO_SPACE)
                self._acc = ""
                self.state = self.DONE if rest else self.EAT_AFTER_CLOSE
                return thinking, rest, False
            n = _overlap(acc, self.close_tag)
            self._acc = acc[len(acc) - n:] if n else ""
            return acc[:len(acc) - n], "", False
        if self.state == self.EAT_AFTER_CLOSE:
            trimmed = acc.lstrip(GO_SPACE)
            self._acc = ""
            if trimmed:
                self.state = self.DONE
            return "", trimmed, False
        self._acc = ""
        return "", acc, False
