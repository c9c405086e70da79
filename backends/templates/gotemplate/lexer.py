"""Tokens of Go's text/template: text between actions, and the words inside `{{ }}`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from .errors import ParseError

LEFT, RIGHT = "{{", "}}"
TRIM_SPACE = " \t\r\n"
KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil",
            "template", "with"}


class Item(Enum):
    TEXT = auto()
    LEFT = auto()
    RIGHT = auto()
    SPACE = auto()
    FIELD = auto()        # .Name
    DOT = auto()          # .
    VARIABLE = auto()     # $ or $name
    IDENTIFIER = auto()   # function name
    KEYWORD = auto()
    BOOL = auto()
    NUMBER = auto()
    STRING = auto()
    RAW_STRING = auto()
    CHAR = auto()
    LPAREN = auto()
    RPAREN = auto()
    PIPE = auto()
    DECLARE = auto()      # :=
    ASSIGN = auto()       # =
    COMMA = auto()
    EOF = auto()


@dataclass
class Token:
    typ: Item
    val: str
    pos: int
    line: int

    def __str__(self) -> str:
        if self.typ is Item.EOF:
            return "EOF"
        if self.typ is Item.KEYWORD:
            return f"<{self.val}>"
        from .gofmt import go_quote

        if len(self.val) > 10:
            return go_quote(self.val[:10]) + "..."
        return go_quote(self.val)


def _is_space(c: str) -> bool:
    return c in TRIM_SPACE


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalnum()


class Lexer:
    """Scans the whole template up front; errors raise ParseError with Go's wording."""

    def __init__(self, text: str, name: str = ""):
        self.text = text
        self.name = name
        self.pos = 0
        self.tokens: list[Token] = []
        self.paren_depth = 0

    def line_at(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def error(self, msg: str, pos: int | None = None) -> ParseError:
        return ParseError(f"template: {self.name}:{self.line_at(self.pos if pos is None else pos)}: {msg}")

    def emit(self, typ: Item, val: str, pos: int) -> None:
        self.tokens.append(Token(typ, val, pos, self.line_at(pos)))

    def run(self) -> list[Token]:
        text = self.text
        while True:
            start = self.pos
            i = text.find(LEFT, self.pos)
            if i < 0:
                if start < len(text):
                    self.emit(Item.TEXT, text[start:], start)
                self.emit(Item.EOF, "", len(text))
                return self.tokens
            trim_left = text.startswith("-", i + 2) and i + 3 < len(text) and _is_space(text[i + 3])
            chunk = text[start:i]
            if trim_left:
                chunk = chunk.rstrip(TRIM_SPACE)
            if chunk:
                self.emit(Item.TEXT, chunk, start)
            self.pos = i + 2 + (2 if trim_left else 0)
            after = self.pos
            # Comments are recognized only right after the delimiter (and its trim marker).
            if text.startswith("/*", after):
                self.lex_comment(i)
            else:
                self.emit(Item.LEFT, LEFT, i)
                self.lex_inside_action()

    def at_right_delim(self) -> tuple[bool, bool]:
        """(at right delimiter, with trim marker)."""
        text, p = self.text, self.pos
        if p + 3 <= len(text) and _is_space(text[p]) and text.startswith("-" + RIGHT, p + 1):
            return True, True
        if text.startswith(RIGHT, p):
            return True, False
        return False, False

    def skip_right_trim(self, trim: bool) -> None:
        self.pos += 4 if trim else 2
        if trim:
            while self.pos < len(self.text) and _is_space(self.text[self.pos]):
                self.pos += 1

    def lex_comment(self, left_pos: int) -> None:
        end = self.text.find("*/", self.pos + 2)
        if end < 0:
            raise self.error("unclosed comment", left_pos)
        self.pos = end + 2
        at, trim = self.at_right_delim()
        if not at:
            raise self.error("comment ends before closing delimiter", left_pos)
        self.skip_right_trim(trim)

    def lex_inside_action(self) -> None:
        text = self.text
        while True:
            at, trim = self.at_right_delim()
            if at and self.paren_depth == 0:
                self.emit(Item.RIGHT, RIGHT, self.pos)
                self.skip_right_trim(trim)
                return
            if at:
                raise self.error("unclosed left paren")
            if self.pos >= len(text):
                raise self.error("unclosed action")
            c = text[self.pos]
            start = self.pos
            if _is_space(c):
                while self.pos < len(text) and _is_space(text[self.pos]):
                    # A space before "-}}" belongs to the trim marker.
                    if self.at_right_delim() == (True, True):
                        break
                    self.pos += 1
                if self.pos > start:
                    self.emit(Item.SPACE, text[start:self.pos], start)
                continue
            if c == "=":
                self.pos += 1
                self.emit(Item.ASSIGN, "=", start)
            elif c == ":":
                if not text.startswith(":=", start):
                    raise self.error("expected :=")
                self.pos += 2
                self.emit(Item.DECLARE, ":=", start)
            elif c == "|":
                self.pos += 1
                self.emit(Item.PIPE, "|", start)
            elif c == ",":
                self.pos += 1
                self.emit(Item.COMMA, ",", start)
            elif c == '"':
                self.lex_quote()
            elif c == "`":
                end = text.find("`", start + 1)
                if end < 0:
                    raise self.error("unterminated raw quoted string")
                self.pos = end + 1
                self.emit(Item.RAW_STRING, text[start:self.pos], start)
            elif c == "'":
                self.lex_char()
            elif c == "$":
                self.pos += 1
                self.scan_alnum()
                self.emit(Item.VARIABLE, text[start:self.pos], start)
            elif c == ".":
                nxt = text[self.pos + 1] if self.pos + 1 < len(text) else ""
                if nxt.isdigit():
                    self.lex_number()
                else:
                    self.pos += 1
                    self.scan_alnum()
                    if self.pos == start + 1:
                        self.emit(Item.DOT, ".", start)
                    else:
                        self.emit(Item.FIELD, text[start:self.pos], start)
            elif c in "+-" or c.isdigit():
                self.lex_number()
            elif _is_alnum(c):
                self.scan_alnum()
                word = text[start:self.pos]
                if word in KEYWORDS:
                    self.emit(Item.KEYWORD, word, start)
                elif word in ("true", "false"):
                    self.emit(Item.BOOL, word, start)
                else:
                    self.emit(Item.IDENTIFIER, word, start)
            elif c == "(":
                self.pos += 1
                self.paren_depth += 1
                self.emit(Item.LPAREN, "(", start)
            elif c == ")":
                self.pos += 1
                self.paren_depth -= 1
                if self.paren_depth < 0:
                    raise self.error("unexpected right paren")
                self.emit(Item.RPAREN, ")", start)
            else:
                raise self.error(f"unrecognized character in action: {_go_rune(c)}")

    def scan_alnum(self) -> None:
        while self.pos < len(self.text) and _is_alnum(self.text[self.pos]):
            self.pos += 1

    def lex_quote(self) -> None:
        text, start = self.text, self.pos
        self.pos += 1
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.error("unterminated quoted string")
            c = text[self.pos]
            if c == "\\":
                self.pos += 2
                continue
            self.pos += 1
            if c == '"':
                break
        self.emit(Item.STRING, text[start:self.pos], start)

    def lex_char(self) -> None:
        text, start = self.text, self.pos
        self.pos += 1
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.error("unterminated character constant")
            c = text[self.pos]
            if c == "\\":
                self.pos += 2
                continue
            self.pos += 1
            if c == "'":
                break
        self.emit(Item.CHAR, text[start:self.pos], start)

    def lex_number(self) -> None:
        text, start = self.text, self.pos
        if text[self.pos] in "+-":
            self.pos += 1
        while self.pos < len(text):
            c = text[self.pos]
            if _is_alnum(c) or c == ".":
                self.pos += 1
            elif c in "+-" and text[self.pos - 1] in "eEpP":
                self.pos += 1
            else:
                break
        word = text[start:self.pos]
        if self.pos < len(text) and _is_alnum(text[self.pos]) or not _valid_number(word):
            raise self.error(f"bad number syntax: {word!r}".replace("'", '"'))
        self.emit(Item.NUMBER, word, start)


def _valid_number(word: str) -> bool:
    from .literals import parse_number

    try:
        parse_number(word)
    except ValueError:
        return False
    return True


def _go_rune(c: str) -> str:
    return f"U+{ord(c):04X} '{c}'"
