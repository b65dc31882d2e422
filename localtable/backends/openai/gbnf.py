"""Read a GBNF grammar, as localtable's templates write them (prompts/*.gbnf.j2), into
a tree: literals, character classes, rule references, sequences, alternatives and
bounded repeats. form.py turns the tree into a JSON schema for servers that take
one instead of a grammar.

The syntax is llama.cpp's (src/llama-grammar.cpp): a rule per line, `name ::= ...`,
newlines allowed inside parentheses, `#` comments. Anything outside it is a
GrammarError: a grammar this reader misunderstood would constrain the model to
something else than the record says.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CODEPOINT = 0x10FFFF
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_SIMPLE_ESCAPES = {
    "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "\\": "\\", '"': '"',
    "[": "[", "]": "]", "-": "-", "/": "/",
}  # fmt: skip
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


class GrammarError(ValueError):
    """The grammar is not one this reader can follow; the message says where."""


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Chars:
    """A character class: inclusive code point ranges, or every character but them."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Rep:
    item: Node
    low: int
    high: int | None  # None: no upper bound


Node = Lit | Chars | Ref | Seq | Alt | Rep
ANY = Chars(ranges=(), negated=True)  # `.`


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> GrammarError:
        line = self.text.count("\n", 0, self.pos) + 1
        return GrammarError(f"grammar line {line}: {what}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def space(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "#":
                while self.pos < len(self.text) and self.text[self.pos] not in "\r\n":
                    self.pos += 1
            elif c in " \t" or (newlines and c in "\r\n"):
                self.pos += 1
            else:
                return

    def name(self) -> str:
        start = self.pos
        while self.peek() and self.peek() in _NAME_CHARS:
            self.pos += 1
        if start == self.pos:
            raise self.fail(f"expected a rule name at {self.text[start : start + 10]!r}")
        return self.text[start : self.pos]

    def char(self) -> int:
        """One character of a literal or a class, escapes decoded (a UTF-16 surrogate
        pair, as JSON escapes write characters past U+FFFF, is one character)."""
        c = self.peek()
        if not c:
            raise self.fail("the grammar ends inside a literal or a class")
        self.pos += 1
        if c != "\\":
            return ord(c)
        e = self.peek()
        self.pos += 1
        if e in _SIMPLE_ESCAPES:
            return ord(_SIMPLE_ESCAPES[e])
        if e not in _HEX_DIGITS:
            raise self.fail(f"unknown escape \\{e}")
        digits = self.text[self.pos : self.pos + _HEX_DIGITS[e]]
        if len(digits) != _HEX_DIGITS[e] or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise self.fail(f"bad escape \\{e}{digits}")
        self.pos += len(digits)
        value = int(digits, 16)
        if 0xD800 <= value < 0xDC00 and self.text.startswith("\\u", self.pos):
            low = int(self.text[self.pos + 2 : self.pos + 6], 16)
            if 0xDC00 <= low < 0xE000:
                self.pos += 6
                return 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
        if value > MAX_CODEPOINT or 0xD800 <= value < 0xE000:
            raise self.fail(f"escape \\{e}{digits} is not a character")
        return value

    def literal(self) -> Lit:
        self.pos += 1  # the opening quote
        out = []
        while self.peek() != '"':
            out.append(chr(self.char()))
        self.pos += 1
        return Lit("".join(out))

    def chars(self) -> Chars:
        self.pos += 1  # [
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges = []
        while self.peek() != "]":
            low = self.char()
            high = low
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] != "]":
                self.pos += 1
                high = self.char()
            if high < low:
                raise self.fail(f"empty range {chr(low)!r}-{chr(high)!r}")
            ranges.append((low, high))
        self.pos += 1
        return Chars(ranges=tuple(ranges), negated=negated)

    def repeat(self, item: Node) -> Node:
        c = self.peek()
        if c in "*+?":
            self.pos += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            return Rep(item, low, high)
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.fail("unterminated {")
        body = self.text[self.pos + 1 : end].replace(" ", "")
        self.pos = end + 1
        lo_text, comma, hi_text = body.partition(",")
        if not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
            raise self.fail(f"bad repeat {{{body}}}")
        low = int(lo_text)
        high = low if not comma else (int(hi_text) if hi_text else None)
        if high is not None and high < low:
            raise self.fail(f"bad repeat {{{body}}}")
        return Rep(item, low, high)

    def sequence(self, nested: bool) -> Node:
        items: list[Node] = []
        while True:
            c = self.peek()
            if c == '"':
                items.append(self.literal())
            elif c == "[":
                items.append(self.chars())
            elif c == "(":
                self.pos += 1
                self.space(True)
                inner = self.alternatives(True)
                if self.peek() != ")":
                    raise self.fail("expected )")
                self.pos += 1
                items.append(inner)
            elif c == ".":
                self.pos += 1
                items.append(ANY)
            elif c and c in _NAME_CHARS:
                items.append(Ref(self.name()))
            elif c and c in "*+?{":
                if not items:
                    raise self.fail(f"nothing to repeat before {c!r}")
                items[-1] = self.repeat(items[-1])
            else:
                break
            self.space(nested)
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def alternatives(self, nested: bool) -> Node:
        options = [self.sequence(nested)]
        while self.peek() == "|":
            self.pos += 1
            self.space(True)
            options.append(self.sequence(nested))
        return options[0] if len(options) == 1 else Alt(tuple(options))


def parse(text: str) -> dict[str, Node]:
    """The rules of a grammar by name (`root` among them)."""
    reader = _Reader(text)
    rules: dict[str, Node] = {}
    reader.space(True)
    while reader.pos < len(text):
        name = reader.name()
        reader.space(False)
        if not text.startswith("::=", reader.pos):
            raise reader.fail(f"expected ::= after {name}")
        reader.pos += 3
        reader.space(True)
        if name in rules:
            raise reader.fail(f"rule {name} is defined twice")
        rules[name] = reader.alternatives(False)
        if reader.peek() not in ("", "\n", "\r"):
            raise reader.fail(f"unexpected {reader.peek()!r}")
        reader.space(True)
    if "root" not in rules:
        raise GrammarError("the grammar has no root rule")
    return rules
