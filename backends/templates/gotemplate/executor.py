"""Executes a parsed Go template against Python data standing in for Go values."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from . import nodes as n
from .errors import ExecError
from .funcs import FuncError, truth
from .gofmt import sorted_items, sprint_value, type_name

MAX_DEPTH = 64


class _Missing:
    """No final value from a previous pipeline stage (Go's missingVal)."""


MISSING = _Missing()


class _Invalid:
    """Go's invalid reflect.Value: a missing map key without missingkey=zero."""

    def __repr__(self) -> str:
        return "<no value>"


INVALID = _Invalid()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


FuncTable = dict[str, tuple[Callable[..., Any], int, "int | None"]]


class Executor:
    def __init__(self, trees: dict[str, n.ListNode], funcs: FuncTable, name: str,
                 missingkey_zero: bool):
        self.trees = trees
        self.funcs = funcs
        self.name = name
        self.zero = missingkey_zero
        self.out: list[str] = []
        self.vars: list[list[Any]] = []
        self.depth = 0
        self.node: Any = None
        self.line = 1

    def run(self, root: n.ListNode, data: Any) -> str:
        self.vars = [["$", data]]
        self.walk(data, root)
        return "".join(self.out)

    def error(self, msg: str) -> ExecError:
        at = f" at <{self.node}>" if self.node is not None else ""
        return ExecError(f'template: {self.name}:{self.line}: executing "{self.name}"{at}: {msg}')

    # variables ----------------------------------------------------------------------------

    def var(self, name: str) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise self.error(f"undefined variable: {name}")

    def set_var(self, name: str, value: Any) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        raise self.error(f"undefined variable: {name}")

    # statements ---------------------------------------------------------------------------

    def walk(self, dot: Any, node: Any) -> None:
        if isinstance(node, n.TextNode):
            self.out.append(node.text)
        elif isinstance(node, n.ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, n.ActionNode):
            self.line = node.line
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.print_value(node.pipe, value)
        elif isinstance(node, n.RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, (n.IfNode, n.WithNode)):
            self.line = node.line
            mark = len(self.vars)
            value = self.eval_pipeline(dot, node.pipe)
            try:
                if truth(value):
                    self.walk(value if isinstance(node, n.WithNode) else dot, node.list)
                elif node.else_list is not None:
                    self.walk(dot, node.else_list)
            finally:
                del self.vars[mark:]
        elif isinstance(node, n.TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, n.BreakNode):
            raise _Break()
        elif isinstance(node, n.ContinueNode):
            raise _Continue()
        else:
            raise self.error(f"unknown node: {node!r}")

    def walk_range(self, dot: Any, node: n.RangeNode) -> None:
        self.line = node.line
        mark = len(self.vars)
        value = self.eval_pipeline(dot, node.pipe, declare=False)
        decl = [v.ident[0] for v in node.pipe.decl]
        if isinstance(value, (list, tuple, bytes)):
            items = list(enumerate(value))
        elif isinstance(value, dict):
            items = sorted_items(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(decl) > 1:
                raise self.error(f"can't use {value} to iterate over more than one variable")
            items = [(i, i) for i in range(value)]
        elif value is None or value is INVALID:
            items = []
        else:
            raise self.error(f"range can't iterate over {sprint_value(value)}")
        try:
            for key, elem in items:
                inner = len(self.vars)
                if len(decl) == 1:
                    self._bind(node.pipe.is_assign, decl[0], elem)
                elif len(decl) == 2:
                    self._bind(node.pipe.is_assign, decl[0], key)
                    self._bind(node.pipe.is_assign, decl[1], elem)
                try:
                    self.walk(elem, node.list)
                except _Continue:
                    pass
                finally:
                    del self.vars[inner:]
        except _Break:
            pass
        finally:
            del self.vars[mark:]
        if not items and node.else_list is not None:
            self.walk(dot, node.else_list)

    def _bind(self, assign: bool, name: str, value: Any) -> None:
        if assign:
            self.set_var(name, value)
        else:
            self.vars.append([name, value])

    def walk_template(self, dot: Any, node: n.TemplateNode) -> None:
        self.line = node.line
        tree = self.trees.get(node.name)
        if tree is None:
            raise self.error(f'template "{node.name}" not defined')
        if self.depth >= MAX_DEPTH:
            raise self.error(f"exceeded maximum template depth ({MAX_DEPTH})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else None
        saved = self.vars
        self.vars = [["$", new_dot]]
        self.depth += 1
        try:
            self.walk(new_dot, tree)
        finally:
            self.depth -= 1
            self.vars = saved

    def print_value(self, node: Any, value: Any) -> None:
        self.node = node
        if value is None or value is INVALID:
            self.out.append("<no value>")
            return
        if callable(value) and not hasattr(value, "__go_string__"):
            raise self.error(f"can't print {node} of type {type_name(value)}")
        self.out.append(sprint_value(value))

    # expressions --------------------------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: n.PipeNode, declare: bool = True) -> Any:
        value: Any = MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        if value is INVALID:
            value = None
        if declare:
            for var in pipe.decl:
                self._bind(pipe.is_assign, var.ident[0], value)
        return value

    def eval_command(self, dot: Any, cmd: n.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        self.node = cmd
        if isinstance(first, n.FieldNode):
            return self.eval_field_chain(dot, dot, first, first.ident, cmd.args, final, True)
        if isinstance(first, n.ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, n.IdentifierNode):
            return self.eval_function(dot, first.name, cmd, cmd.args, final)
        if isinstance(first, n.PipeNode):
            self.not_a_function(cmd.args, final)
            return self.eval_pipeline(dot, first)
        if isinstance(first, n.VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        self.not_a_function(cmd.args, final)
        if isinstance(first, n.BoolNode):
            return first.value
        if isinstance(first, n.DotNode):
            return dot
        if isinstance(first, n.NilNode):
            raise self.error("nil is not a command")
        if isinstance(first, n.NumberNode):
            return first.value
        if isinstance(first, n.StringNode):
            return first.value
        raise self.error(f"can't evaluate command {first}")

    def not_a_function(self, args: list, final: Any) -> None:
        if len(args) > 1 or final is not MISSING:
            raise self.error(f"can't give argument to non-function {args[0]}")

    def eval_variable(self, dot: Any, var: n.VariableNode, args: list | None, final: Any) -> Any:
        value = self.var(var.ident[0])
        if len(var.ident) == 1:
            if args is not None:
                self.not_a_function(args, final)
            return value
        return self.eval_field_chain(dot, value, var, var.ident[1:], args, final, True)

    def eval_chain(self, dot: Any, chain: n.ChainNode, args: list | None, final: Any) -> Any:
        if args is not None and len(args) > 1:
            raise self.error(f"can't give argument to non-function {chain.node}")
        receiver = self.eval_arg(dot, chain.node)
        return self.eval_field_chain(dot, receiver, chain, chain.fields, args, final, True)

    def eval_field_chain(self, dot: Any, receiver: Any, node: Any, idents: list[str],
                         args: list | None, final: Any, start: bool) -> Any:
        for i, ident in enumerate(idents):
            last = i == len(idents) - 1
            receiver = self.eval_field(dot, ident, node, args if last else None,
                                       final if last else MISSING, receiver, start and i == 0)
        return receiver

    def eval_field(self, dot: Any, name: str, node: Any, args: list | None, final: Any,
                   receiver: Any, at_start: bool) -> Any:
        has_args = (args is not None and len(args) > 1) or final is not MISSING
        if receiver is INVALID or (receiver is None and at_start):
            return INVALID if receiver is INVALID or not self.zero else None
        if receiver is None:
            raise self.error(f"nil pointer evaluating interface {{}}.{name}")
        method = getattr(type(receiver), "__go_methods__", {}).get(name)
        if method is not None:
            call_args = [self.eval_arg(dot, a) for a in (args or [])[1:]]
            if final is not MISSING:
                call_args.append(final)
            return getattr(receiver, method)(*call_args)
        if isinstance(receiver, dict):
            if has_args:
                raise self.error(f"{name} is not a method but has arguments")
            if name in receiver:
                return receiver[name]
            return None if self.zero else INVALID
        if dataclasses.is_dataclass(receiver) and not isinstance(receiver, type):
            if name in {f.name for f in dataclasses.fields(receiver)}:
                if has_args:
                    raise self.error(f"{name} has arguments but cannot be invoked as function")
                return getattr(receiver, name)
        raise self.error(f"can't evaluate field {name} in type {type_name(receiver)}")

    def eval_function(self, dot: Any, name: str, node: Any, args: list, final: Any) -> Any:
        entry = self.funcs.get(name)
        if entry is None:
            raise self.error(f'"{name}" is not a defined function')
        fn, lo, hi = entry
        arg_nodes = args[1:]
        got = len(arg_nodes) + (0 if final is MISSING else 1)
        if got < lo or (hi is not None and got > hi):
            want = lo if hi == lo else (f"at least {lo}" if hi is None else f"{lo}-{hi}")
            raise self.error(f"wrong number of args for {name}: want {want} got {got}")
        if name in ("and", "or"):
            return self.eval_and_or(dot, name, arg_nodes, final)
        values = [self.eval_arg(dot, a) for a in arg_nodes]
        if final is not MISSING:
            values.append(final)
        values = [None if v is INVALID else v for v in values]
        self.node = node
        try:
            return fn(*values)
        except FuncError as e:
            raise self.error(f"error calling {name}: {e}") from None
        except ExecError:
            raise
        except Exception as e:  # a data callable failing inside `call`
            raise self.error(f"error calling {name}: {e}") from None

    def eval_and_or(self, dot: Any, name: str, arg_nodes: list, final: Any) -> Any:
        value: Any = None
        thunks: list[Callable[[], Any]] = [lambda a=a: self.eval_arg(dot, a) for a in arg_nodes]
        if final is not MISSING:
            thunks.append(lambda: final)
        for thunk in thunks:
            value = thunk()
            if value is INVALID:
                value = None
            if truth(value) != (name == "and"):
                return value
        return value

    def eval_arg(self, dot: Any, node: Any) -> Any:
        self.node = node
        if isinstance(node, n.DotNode):
            return dot
        if isinstance(node, n.NilNode):
            return None
        if isinstance(node, n.FieldNode):
            return self.eval_field_chain(dot, dot, node, node.ident, [node], MISSING, True)
        if isinstance(node, n.VariableNode):
            return self.eval_variable(dot, node, None, MISSING)
        if isinstance(node, n.PipeNode):
            return self.eval_pipeline(dot, node)
        if isinstance(node, n.IdentifierNode):
            return self.eval_function(dot, node.name, node, [node], MISSING)
        if isinstance(node, n.ChainNode):
            return self.eval_chain(dot, node, None, MISSING)
        if isinstance(node, (n.BoolNode, n.NumberNode, n.StringNode)):
            return node.value
        raise self.error(f"can't handle {node} for arg")
