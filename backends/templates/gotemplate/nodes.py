"""The parse tree of a Go template, mirroring text/template/parse's node kinds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


@dataclass
class TextNode:
    text: str


@dataclass
class FieldNode:
    ident: list[str]  # .A.B -> ["A", "B"]

    def __str__(self) -> str:
        return "".join("." + i for i in self.ident)


@dataclass
class VariableNode:
    ident: list[str]  # $x.A -> ["$x", "A"]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass
class ChainNode:
    node: "Node"
    fields: list[str]

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


@dataclass
class DotNode:
    def __str__(self) -> str:
        return "."


@dataclass
class NilNode:
    def __str__(self) -> str:
        return "nil"


@dataclass
class BoolNode:
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass
class NumberNode:
    value: int | float
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class StringNode:
    value: str
    quoted: str

    def __str__(self) -> str:
        return self.quoted


@dataclass
class IdentifierNode:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass
class CommandNode:
    args: list["Node"]

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


@dataclass
class PipeNode:
    decl: list[VariableNode] = field(default_factory=list)
    cmds: list[CommandNode] = field(default_factory=list)
    is_assign: bool = False
    line: int = 0

    def __str__(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(str(v) for v in self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(str(c) for c in self.cmds)


@dataclass
class ListNode:
    nodes: list["Node"] = field(default_factory=list)


@dataclass
class ActionNode:
    pipe: PipeNode
    line: int = 0


@dataclass
class BranchNode:
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None = None
    line: int = 0


class IfNode(BranchNode):
    pass


class RangeNode(BranchNode):
    pass


class WithNode(BranchNode):
    pass


@dataclass
class TemplateNode:
    name: str
    pipe: PipeNode | None
    line: int = 0


@dataclass
class BreakNode:
    line: int = 0


@dataclass
class ContinueNode:
    line: int = 0


Node = Union[TextNode, FieldNode, VariableNode, ChainNode, DotNode, NilNode, BoolNode, NumberNode,
             StringNode, IdentifierNode, CommandNode, PipeNode, ListNode, ActionNode, IfNode,
             RangeNode, WithNode, TemplateNode, BreakNode, ContinueNode]
