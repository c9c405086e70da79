"""The Go-typed values Ollama hands its templates: messages, tool calls and tools.

They print and marshal as Ollama's template-side types do (template/template.go): `.Tools`,
`.Function.Arguments` and `.Function.Parameters.Properties` print as JSON, maps marshal with
sorted keys, and JSON numbers inside arguments and schemas are float64 as Go decodes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .gotemplate.gofmt import OrderedMap, go_json


def go_any(v: Any) -> Any:
    """A decoded JSON value as Go's `any` holds it: every number is a float64."""
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return v
    if isinstance(v, int):
        return float(v)
    if isinstance(v, dict):
        return {str(k): go_any(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [go_any(x) for x in v]
    return v


def _omit_empty(pairs: list[tuple[str, Any, bool]]) -> OrderedMap:
    out = OrderedMap()
    for key, value, omitempty in pairs:
        if omitempty and (value is None or value is False or value == "" or
                          (isinstance(value, (list, dict)) and len(value) == 0)):
            continue
        out[key] = value
    return out


class _GoJSONMap(dict):
    """A Go map that prints as compact JSON; `nil` prints `{}` and marshals as null."""

    def __init__(self, *args: Any, nil: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.nil = nil

    def __go_string__(self) -> str:
        return "{}" if self.nil else go_json(dict(self))

    def __go_json__(self) -> Any:
        return None if self.nil else dict(self)


class TemplateArgs(_GoJSONMap):
    """Tool-call arguments."""

    __go_type__ = "template.templateArgs"


class TemplateProperties(_GoJSONMap):
    """A tool's top-level parameter properties (a Go map: printed sorted)."""

    __go_type__ = "template.templateProperties"


class PropertyType(list):
    """JSON schema `type`: one name or several."""

    __go_type__ = "api.PropertyType"

    def __go_string__(self) -> str:
        if not self:
            return ""
        if len(self) == 1:
            return self[0]
        return "[" + " ".join(self) + "]"

    def __go_json__(self) -> Any:
        return self[0] if len(self) == 1 else list(self)


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


@dataclass
class ToolProperty:
    AnyOf: list["ToolProperty"] = field(default_factory=list)
    Type: PropertyType = field(default_factory=PropertyType)
    Items: Any = None
    Description: str = ""
    Enum: list[Any] = field(default_factory=list)
    Properties: OrderedMap | None = None
    Required: list[str] = field(default_factory=list)

    __go_type__ = "api.ToolProperty"
    __go_methods__ = {"ToTypeScriptType": "to_typescript_type"}

    @classmethod
    def from_json(cls, d: Any) -> "ToolProperty":
        if not isinstance(d, dict):
            return cls()
        t = d.get("type")
        types = PropertyType([t] if isinstance(t, str) else list(t or []))
        props = d.get("properties")
        return cls(
            AnyOf=[cls.from_json(x) for x in d.get("anyOf") or []],
            Type=types,
            Items=go_any(d.get("items")),
            Description=d.get("description") or "",
            Enum=go_any(list(d.get("enum") or [])),
            Properties=None if props is None else OrderedMap(
                (k, cls.from_json(v)) for k, v in props.items()),
            Required=list(d.get("required") or []),
        )

    def to_typescript_type(self) -> str:
        if self.AnyOf:
            return " | ".join(p.to_typescript_type() for p in self.AnyOf)
        if not self.Type:
            return "any"
        return " | ".join(_TS_TYPES.get(t, "any") for t in self.Type)

    def __go_json__(self) -> Any:
        return _omit_empty([("anyOf", self.AnyOf, True), ("type", self.Type, True),
                            ("items", self.Items, True), ("description", self.Description, True),
                            ("enum", self.Enum, True), ("properties", self.Properties, True),
                            ("required", self.Required, True)])


@dataclass
class TemplateToolFunctionParameters:
    Type: str = ""
    Defs: Any = None
    Items: Any = None
    Required: list[str] = field(default_factory=list)
    Properties: TemplateProperties = field(default_factory=lambda: TemplateProperties(nil=True))

    __go_type__ = "template.templateToolFunctionParameters"

    def __go_json__(self) -> Any:
        out = _omit_empty([("type", self.Type, False), ("$defs", self.Defs, True),
                           ("items", self.Items, True), ("required", self.Required, True)])
        out["properties"] = self.Properties
        return out


@dataclass
class TemplateToolFunction:
    Name: str = ""
    Description: str = ""
    Parameters: TemplateToolFunctionParameters = field(default_factory=TemplateToolFunctionParameters)

    __go_type__ = "template.templateToolFunction"

    def __go_json__(self) -> Any:
        return OrderedMap(name=self.Name, description=self.Description, parameters=self.Parameters)


@dataclass
class TemplateTool:
    Type: str = ""
    Items: Any = None
    Function: TemplateToolFunction = field(default_factory=TemplateToolFunction)

    __go_type__ = "template.templateTool"

    def __go_string__(self) -> str:
        return go_json(self)

    def __go_json__(self) -> Any:
        out = _omit_empty([("type", self.Type, False), ("items", self.Items, True)])
        out["function"] = self.Function
        return out

    @classmethod
    def from_json(cls, tool: Any) -> "TemplateTool":
        tool = _as_dict(tool)
        fn = _as_dict(tool.get("function"))
        params = _as_dict(fn.get("parameters"))
        props = params.get("properties")
        return cls(
            Type=tool.get("type") or "",
            Items=go_any(tool.get("items")),
            Function=TemplateToolFunction(
                Name=fn.get("name") or "",
                Description=fn.get("description") or "",
                Parameters=TemplateToolFunctionParameters(
                    Type=params.get("type") or "",
                    Defs=go_any(params.get("$defs")),
                    Items=go_any(params.get("items")),
                    Required=list(params.get("required") or []),
                    Properties=TemplateProperties(
                        {k: ToolProperty.from_json(v) for k, v in (props or {}).items()},
                        nil=props is None),
                ),
            ),
        )


class TemplateTools(list):
    """`.Tools`: a slice that prints as JSON ("null" when no tools were given)."""

    __go_type__ = "template.templateTools"

    def __init__(self, items: Any = (), nil: bool = False):
        super().__init__(items)
        self.nil = nil

    def __go_string__(self) -> str:
        return go_json(self)

    def __go_json__(self) -> Any:
        return None if self.nil else list(self)


@dataclass
class TemplateToolCallFunction:
    Index: int = 0
    Name: str = ""
    Arguments: TemplateArgs = field(default_factory=lambda: TemplateArgs(nil=True))

    __go_type__ = "template.templateToolCallFunction"


@dataclass
class TemplateToolCall:
    ID: str = ""
    Function: TemplateToolCallFunction = field(default_factory=TemplateToolCallFunction)

    __go_type__ = "template.templateToolCall"

    @classmethod
    def from_json(cls, call: Any) -> "TemplateToolCall":
        call = _as_dict(call)
        fn = _as_dict(call.get("function"))
        args = fn.get("arguments")
        if isinstance(args, str):  # OpenAI-style string arguments
            import json

            try:
                args = json.loads(args)
            except ValueError:
                args = {}
        return cls(
            ID=call.get("id") or "",
            Function=TemplateToolCallFunction(
                Index=int(fn.get("index") or 0),
                Name=fn.get("name") or "",
                Arguments=TemplateArgs(go_any(args) if isinstance(args, dict) else {},
                                       nil=args is None),
            ),
        )


@dataclass
class TemplateMessage:
    Role: str = ""
    Content: str = ""
    Thinking: str = ""
    Images: list[bytes] = field(default_factory=list)
    ToolCalls: list[TemplateToolCall] = field(default_factory=list)
    ToolName: str = ""
    ToolCallID: str = ""

    __go_type__ = "*template.templateMessage"
    __go_pointer__ = True


def _as_dict(v: Any) -> dict:
    if v is None:
        return {}
    if isinstance(v, dict):
        return v
    if hasattr(v, "model_dump"):
        return v.model_dump()
    if hasattr(v, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(v)
    return dict(vars(v))
