"""Ollama's template.Template: a Go template plus the rules for executing it on a chat.

Three modes, picked per call as Ollama's `Execute` picks them: Suffix (prompt and suffix both
set), Messages (the template mentions `.Messages`) and Legacy (once per turn with `.System`,
`.Prompt`, `.Response`, the last turn cut off after `.Response`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from .gotemplate import Template, nodes, template_vars
from .gotemplate.funcs import BUILTINS
from .template_data import TemplateMessage, TemplateTool, TemplateToolCall, TemplateTools

DEFAULT_TEMPLATE = "{{ .Prompt }}"


@dataclass
class Message:
    """A chat message as templates see it (Ollama's api.Message)."""

    role: str
    content: str = ""
    thinking: str = ""
    images: list[Any] = field(default_factory=list)
    tool_calls: list[Any] = field(default_factory=list)
    tool_name: str = ""
    tool_call_id: str = ""

    @classmethod
    def of(cls, m: Any) -> "Message":
        if isinstance(m, Message):
            return m
        get = m.get if isinstance(m, dict) else (lambda k, d=None: getattr(m, k, d))
        return cls(role=(get("role") or "").lower(), content=get("content") or "",
                   thinking=get("thinking") or "", images=list(get("images") or []),
                   tool_calls=list(get("tool_calls") or []), tool_name=get("tool_name") or "",
                   tool_call_id=get("tool_call_id") or "")


@dataclass
class Values:
    """What a prompt is rendered from (Ollama's template.Values)."""

    messages: list[Any] = field(default_factory=list)
    tools: list[Any] | None = None
    prompt: str = ""
    suffix: str = ""
    think: bool = False
    think_level: str = ""
    is_think_set: bool = False
    force_legacy: bool = False

    @classmethod
    def with_think(cls, think: bool | str | None = None, **kwargs: Any) -> "Values":
        """Values with `.Think`/`.ThinkLevel`/`.IsThinkSet` derived from a request's `think`."""
        if isinstance(think, str):
            on = think in ("high", "medium", "low", "max")
            return cls(think=on, think_level=think, is_think_set=True, **kwargs)
        if think is None:
            return cls(**kwargs)
        return cls(think=think, think_level="medium" if think else "", is_think_set=True, **kwargs)


_RESPONSE_ACTION = nodes.ActionNode(nodes.PipeNode(cmds=[nodes.CommandNode([nodes.FieldNode(["Response"])])]))


class PromptTemplate:
    """A parsed Modelfile template. `parse` raises gotemplate.ParseError with Go's text."""

    def __init__(self, raw: str, tmpl: Template, variables: set[str]):
        self.raw = raw
        self.tmpl = tmpl
        self.vars = variables

    @classmethod
    def parse(cls, text: str) -> "PromptTemplate":
        tmpl = Template.parse(text)
        variables = template_vars(tmpl)
        if "messages" not in variables and "response" not in variables:
            tmpl.root.nodes.append(copy.deepcopy(_RESPONSE_ACTION))
        return cls(text, tmpl, variables)

    def __str__(self) -> str:
        return self.raw

    def contains(self, s: str) -> bool:
        return s in self.raw

    @property
    def uses_messages(self) -> bool:
        return "messages" in self.vars

    def execute(self, values: Values) -> str:
        system, messages = collate([Message.of(m) for m in values.messages])
        think = {"Think": values.think, "ThinkLevel": values.think_level,
                 "IsThinkSet": values.is_think_set}
        if values.prompt and values.suffix:
            return self.tmpl.execute({"Prompt": values.prompt, "Suffix": values.suffix,
                                      "Response": "", **think})
        if not values.force_legacy and self.uses_messages:
            return self.tmpl.execute({
                "System": system,
                "Messages": [template_message(m) for m in messages],
                "Tools": template_tools(values.tools),
                "Response": "",
                **think,
            })
        return self._execute_legacy(messages, think)

    def _execute_legacy(self, messages: list[Message], think: dict) -> str:
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def flush() -> None:
            out.append(self.tmpl.execute({**turn, **think}))
            turn.update(System="", Prompt="", Response="")

        for m in messages:
            if m.role == "system":
                if turn["Prompt"] or turn["Response"]:
                    flush()
                turn["System"] = m.content
            elif m.role == "user":
                if turn["Response"]:
                    flush()
                turn["Prompt"] = m.content
            elif m.role == "assistant":
                turn["Response"] = m.content
        # Ollama runs the cut tree as a fresh template: no custom funcs, no defines, no missingkey=zero.
        cut = cut_after_response(copy.deepcopy(self.tmpl.root))
        last = Template({self.tmpl.name: cut}, self.tmpl.name, dict(BUILTINS), missingkey_zero=False)
        out.append(last.execute({**turn, **think}))
        return "".join(out)


def collate(messages: list[Message]) -> tuple[str, list[Message]]:
    """System contents joined by blank lines, and consecutive same-role messages merged (not tool)."""
    system: list[str] = []
    collated: list[Message] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
        if collated and collated[-1].role == m.role and m.role != "tool":
            prev = collated[-1]
            collated[-1] = copy.copy(prev)
            collated[-1].content = prev.content + "\n\n" + m.content
        else:
            collated.append(m)
    return "\n\n".join(system), collated


def template_message(m: Message) -> TemplateMessage:
    return TemplateMessage(Role=m.role, Content=m.content, Thinking=m.thinking,
                           Images=list(m.images),
                           ToolCalls=[TemplateToolCall.from_json(c) for c in m.tool_calls],
                           ToolName=m.tool_name, ToolCallID=m.tool_call_id)


def template_tools(tools: list[Any] | None) -> TemplateTools:
    if tools is None:
        return TemplateTools(nil=True)
    return TemplateTools(TemplateTool.from_json(t) for t in tools)


def cut_after_response(root: nodes.ListNode) -> nodes.ListNode:
    """Drop every node after the first `.Response` field, as Ollama's deleteNode does."""
    cut = False

    def matches(node: Any) -> bool:
        nonlocal cut
        if isinstance(node, nodes.FieldNode) and "Response" in node.ident:
            cut = True
            return False
        return cut

    def walk(node: Any) -> Any:
        if matches(node):
            return None
        if isinstance(node, nodes.ListNode):
            node.nodes = [c for c in (walk(x) for x in node.nodes) if c is not None]
        elif isinstance(node, nodes.BranchNode):
            # Only the bodies are walked, never the condition, as in Ollama.
            node.list = walk(node.list) or nodes.ListNode()
            if node.else_list is not None:
                node.else_list = walk(node.else_list)
        elif isinstance(node, nodes.ActionNode):
            pipe = walk(node.pipe)
            if pipe is None:
                return None
            node.pipe = pipe
        elif isinstance(node, nodes.PipeNode):
            cmds = []
            for cmd in node.cmds:
                args = [a for a in (walk(x) for x in cmd.args) if a is not None]
                if not args:
                    return None
                cmd.args = args
                cmds.append(cmd)
            if not cmds:
                return None
            node.cmds = cmds
        return node

    return walk(root) or nodes.ListNode()
