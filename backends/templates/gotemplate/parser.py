"""Parser from tokens to the node tree, with text/template/parse's checks and error texts."""

from __future__ import annotations

from collections.abc import Iterable

from . import nodes as n
from .errors import ParseError
from .lexer import Item, Lexer, Token
from .literals import parse_number, unquote, unquote_char

_OPERAND_START = {Item.BOOL, Item.CHAR, Item.DOT, Item.FIELD, Item.IDENTIFIER, Item.NUMBER,
                  Item.RAW_STRING, Item.STRING, Item.VARIABLE, Item.LPAREN}
_NIL = "nil"


class _End:
    pass


class _Else:
    pass


def parse(text: str, funcs: Iterable[str], name: str = "") -> dict[str, n.ListNode]:
    """Parse `text` into its named trees: "" (or `name`) for the main one, plus every define/block."""
    return _Parser(text, set(funcs), name).parse()


class _Parser:
    def __init__(self, text: str, funcs: set[str], name: str):
        self.name = name
        self.tokens = Lexer(text, name).run()
        self.i = 0
        self.funcs = funcs
        self.trees: dict[str, n.ListNode] = {}
        self.vars: list[str] = ["$"]
        self.range_depth = 0

    # token stream -------------------------------------------------------------------------

    def next(self) -> Token:
        tok = self.tokens[min(self.i, len(self.tokens) - 1)]
        self.i += 1
        self.last = tok
        return tok

    def peek(self) -> Token:
        return self.tokens[min(self.i, len(self.tokens) - 1)]

    def backup(self, count: int = 1) -> None:
        self.i -= count

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.typ is Item.SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        j = min(self.i, len(self.tokens) - 1)
        while self.tokens[j].typ is Item.SPACE:
            j += 1
        return self.tokens[j]

    def error(self, msg: str, tok: Token | None = None) -> ParseError:
        line = (tok or getattr(self, "last", None) or self.peek()).line
        return ParseError(f"template: {self.name}:{line}: {msg}")

    def unexpected(self, tok: Token, context: str) -> ParseError:
        return self.error(f"unexpected {tok} in {context}", tok)

    def expect(self, typ: Item, context: str) -> Token:
        tok = self.next_non_space()
        if tok.typ is not typ:
            raise self.unexpected(tok, context)
        return tok

    # structure ----------------------------------------------------------------------------

    def parse(self) -> dict[str, n.ListNode]:
        root = n.ListNode()
        while self.peek().typ is not Item.EOF:
            if self.peek().typ is Item.LEFT:
                start = self.i
                self.next()
                tok = self.next_non_space()
                if tok.typ is Item.KEYWORD and tok.val == "define":
                    self.parse_definition()
                    continue
                self.i = start
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                raise self.error(f"unexpected {{{{{'end' if isinstance(node, _End) else 'else'}}}}}")
            root.nodes.append(node)
        self.add_tree(self.name, root)
        return self.trees

    def add_tree(self, name: str, root: n.ListNode) -> None:
        existing = self.trees.get(name)
        if existing is None or _is_empty(existing):
            self.trees[name] = root
        elif not _is_empty(root):
            raise self.error(f"template: multiple definition of template {name!r}".replace("'", '"'))

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (Item.STRING, Item.RAW_STRING):
            raise self.unexpected(tok, context)
        name = self.string_value(tok)
        self.expect(Item.RIGHT, context)
        saved_vars, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        self.vars = saved_vars
        if not isinstance(end, _End):
            raise self.error(f"unexpected {{{{else}}}} in {context}")
        self.add_tree(name, body)

    def item_list(self) -> tuple[n.ListNode, object]:
        lst = n.ListNode()
        while self.peek_non_space().typ is not Item.EOF:
            node = self.text_or_action()
            if isinstance(node, (_End, _Else)):
                return lst, node
            lst.nodes.append(node)
        raise self.error("unexpected EOF")

    def text_or_action(self):
        tok = self.next_non_space()
        if tok.typ is Item.TEXT:
            return n.TextNode(tok.val)
        if tok.typ is Item.LEFT:
            return self.action()
        raise self.unexpected(tok, "input")

    def action(self):
        tok = self.next_non_space()
        if tok.typ is Item.KEYWORD:
            word = tok.val
            if word == "block":
                return self.block_control()
            if word in ("break", "continue"):
                return self.loop_control(word, tok)
            if word == "else":
                nxt = self.peek_non_space()
                if nxt.typ is Item.KEYWORD and nxt.val in ("if", "with"):
                    return _Else()
                self.expect(Item.RIGHT, "else")
                return _Else()
            if word == "end":
                self.expect(Item.RIGHT, "end")
                return _End()
            if word in ("if", "range", "with"):
                return self.control(word, tok)
            if word == "template":
                return self.template_control()
        self.backup()
        line = self.peek().line
        return n.ActionNode(self.pipeline("command", Item.RIGHT), line)

    def loop_control(self, word: str, tok: Token):
        nxt = self.next_non_space()
        if nxt.typ is not Item.RIGHT:
            raise self.unexpected(nxt, f"{{{{{word}}}}}")
        if self.range_depth == 0:
            raise self.error(f"{{{{{word}}}}} outside {{{{range}}}}")
        return n.BreakNode(tok.line) if word == "break" else n.ContinueNode(tok.line)

    def control(self, context: str, tok: Token) -> n.BranchNode:
        saved = len(self.vars)
        pipe = self.pipeline(context, Item.RIGHT)
        if context == "range":
            self.range_depth += 1
        body, end = self.item_list()
        if context == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(end, _Else):
            nxt = self.peek_non_space()
            if context in ("if", "with") and nxt.typ is Item.KEYWORD and nxt.val == context:
                inner_tok = self.next_non_space()
                else_list = n.ListNode([self.control(context, inner_tok)])
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _End):
                    raise self.error("expected end; found {{else}}")
        del self.vars[saved:]
        cls = {"if": n.IfNode, "range": n.RangeNode, "with": n.WithNode}[context]
        return cls(pipe, body, else_list, tok.line)

    def template_name(self, tok: Token, context: str) -> str:
        if tok.typ not in (Item.STRING, Item.RAW_STRING):
            raise self.unexpected(tok, context)
        return self.string_value(tok)

    def template_control(self) -> n.TemplateNode:
        context = "template clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = None
        if self.next_non_space().typ is not Item.RIGHT:
            self.backup()
            pipe = self.pipeline(context, Item.RIGHT)
        return n.TemplateNode(name, pipe, tok.line)

    def block_control(self) -> n.TemplateNode:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, Item.RIGHT)
        saved_vars, saved_depth = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self.item_list()
        self.vars, self.range_depth = saved_vars, saved_depth
        if not isinstance(end, _End):
            raise self.error(f"unexpected {{{{else}}}} in {context}")
        self.add_tree(name, body)
        return n.TemplateNode(name, pipe, tok.line)

    # pipelines ----------------------------------------------------------------------------

    def pipeline(self, context: str, end: Item) -> n.PipeNode:
        pipe = n.PipeNode(line=self.peek_non_space().line)
        self.declarations(pipe, context)
        while True:
            tok = self.next_non_space()
            if tok.typ is end:
                self.check_pipeline(pipe, context)
                return pipe
            if tok.typ in _OPERAND_START or (tok.typ is Item.KEYWORD and tok.val == _NIL):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def declarations(self, pipe: n.PipeNode, context: str) -> None:
        while True:
            var = self.peek_non_space()
            if var.typ is not Item.VARIABLE:
                return
            start = self.i
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.typ in (Item.ASSIGN, Item.DECLARE):
                self.next_non_space()
                pipe.is_assign = nxt.typ is Item.ASSIGN
                if pipe.is_assign and var.val not in self.vars:
                    raise self.error(f'undefined variable "{var.val}"', var)
                pipe.decl.append(n.VariableNode([var.val]))
                self.vars.append(var.val)
                return
            if nxt.typ is Item.COMMA:
                self.next_non_space()
                pipe.decl.append(n.VariableNode([var.val]))
                self.vars.append(var.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().typ in (Item.VARIABLE, Item.RIGHT, Item.RPAREN):
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            self.i = start
            return

    def check_pipeline(self, pipe: n.PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.error(f"missing value for {context}")
        for idx, cmd in enumerate(pipe.cmds[1:]):
            if isinstance(cmd.args[0], (n.BoolNode, n.DotNode, n.NilNode, n.NumberNode, n.StringNode)):
                raise self.error(f"non executable command in pipeline stage {idx + 2}")

    def command(self) -> n.CommandNode:
        cmd = n.CommandNode([])
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.typ is Item.SPACE:
                continue
            if tok.typ in (Item.RIGHT, Item.RPAREN):
                self.backup()
            elif tok.typ is not Item.PIPE:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self):
        node = self.term()
        if node is None:
            return None
        if self.peek().typ is Item.FIELD:
            fields = []
            while self.peek().typ is Item.FIELD:
                fields.append(self.next().val[1:])
            if isinstance(node, n.FieldNode):
                return n.FieldNode(node.ident + fields)
            if isinstance(node, n.VariableNode):
                return n.VariableNode(node.ident + fields)
            if isinstance(node, (n.BoolNode, n.StringNode, n.NumberNode, n.NilNode, n.DotNode)):
                raise self.error(f'unexpected . after term "{node}"')
            return n.ChainNode(node, fields)
        return node

    def term(self):
        tok = self.next_non_space()
        typ = tok.typ
        if typ is Item.IDENTIFIER:
            if tok.val not in self.funcs:
                raise self.error(f'function "{tok.val}" not defined', tok)
            return n.IdentifierNode(tok.val)
        if typ is Item.DOT:
            return n.DotNode()
        if typ is Item.KEYWORD and tok.val == _NIL:
            return n.NilNode()
        if typ is Item.VARIABLE:
            if tok.val not in self.vars:
                raise self.error(f'undefined variable "{tok.val}"', tok)
            return n.VariableNode([tok.val])
        if typ is Item.FIELD:
            return n.FieldNode([tok.val[1:]])
        if typ is Item.BOOL:
            return n.BoolNode(tok.val == "true")
        if typ is Item.NUMBER:
            return n.NumberNode(parse_number(tok.val), tok.val)
        if typ is Item.CHAR:
            try:
                return n.NumberNode(unquote_char(tok.val), tok.val)
            except ValueError as e:
                raise self.error(str(e), tok) from None
        if typ in (Item.STRING, Item.RAW_STRING):
            return n.StringNode(self.string_value(tok), tok.val)
        if typ is Item.LPAREN:
            return self.pipeline("parenthesized pipeline", Item.RPAREN)
        self.backup()
        return None

    def string_value(self, tok: Token) -> str:
        try:
            return unquote(tok.val)
        except ValueError as e:
            raise self.error(str(e), tok) from None


def _is_empty(lst: n.ListNode) -> bool:
    return all(isinstance(x, n.TextNode) and not x.text.strip() for x in lst.nodes)
