"""A turn's structure as a JSON schema, and the server's JSON answer as the turn's text.

localtable's grammars (prompts/*.gbnf.j2) write lines of fields, `Reasoning: ...`,
`Answer: ...`, each under a rule. Servers that cannot take a GBNF grammar take a
JSON schema (`response_format`, Ollama's `format`), so a grammar is read here
(gbnf.py) into its fields: one JSON property per field, named as the grammar's
line names it, in the grammar's order, with the field's own rule as the property's
`enum` (when it allows few strings) or `pattern`. Where a choice decides several
lines at once (a Decision line that fixes the Position and the Answer after it),
the schema has one object per choice (`anyOf`), so nothing the grammar couples
comes apart. The JSON answer then maps back onto exactly the text the grammar
would have allowed, and the same parser (debate/parsing.py) reads it.

Every `pattern` keeps to characters a JSON string holds as they are (no control
character, no `"`, no backslash): llama.cpp's schema converter matches a pattern
against the raw JSON text while other servers match the decoded string, and on
those characters the two agree. So the JSON form allows a little less than the
grammar (no quotes or line breaks inside a field's free text), never more.
"""

from __future__ import annotations

import json
import re
from itertools import product
from typing import Any

from pydantic import BaseModel, ConfigDict

from localtable.backends.openai.gbnf import (
    MAX_CODEPOINT,
    Alt,
    Chars,
    GrammarError,
    Lit,
    Node,
    Ref,
    Seq,
    parse,
)

ENUM_MAX = 256  # a field's strings listed as an enum, at most; beyond, a pattern
STRANDS_MAX = 64  # objects of an anyOf, at most
TEXT_KEY = "text"  # the property of a grammar that writes one unnamed value
# what a pattern may not hold: C0 controls, DEL, the quote, the backslash
UNSAFE = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F))
# escaped in a pattern; llama.cpp's converter takes exactly these escaped (any other
# escape makes it accept any string)
_REGEX_SPECIAL = frozenset("|.()[]{}*+?^$")
_CLASS_SPECIAL = frozenset("]^-[")


class FormError(ValueError):
    """A grammar that cannot be written as a JSON schema, or an answer that does not
    match the schema; the message says why."""


class FieldForm(BaseModel):
    """One line of the grammar: its name (None: the grammar writes a bare value) and
    what its value may be."""

    model_config = ConfigDict(frozen=True)
    key: str | None
    values: list[str] | None = None  # the value is one of these
    pattern: str | None = None  # else it matches this (anchored ^...$)

    @property
    def prop(self) -> str:
        return self.key if self.key is not None else TEXT_KEY

    def json_schema(self) -> dict[str, Any]:
        if self.values is not None:
            return {"type": "string", "enum": list(self.values)}
        return {"type": "string", "pattern": self.pattern}

    def check(self, value: object) -> str:
        if not isinstance(value, str):
            raise FormError(f"{self.prop} is not a string")
        if self.values is not None and value not in self.values:
            raise FormError(f"{self.prop} {value[:40]!r} is not one of the allowed values")
        if self.pattern is not None and not re.fullmatch(self.pattern[1:-1], value):
            raise FormError(f"{self.prop} {value[:40]!r} does not match its pattern")
        return value

    def line(self, value: str) -> str:
        return value if self.key is None else f"{self.key}: {value}"


class Form(BaseModel):
    """A grammar's fields as JSON: each strand one way the lines may go, in order."""

    model_config = ConfigDict(frozen=True)
    strands: list[list[FieldForm]]

    def json_schema(self) -> dict[str, Any]:
        objects = [_object(strand) for strand in self.strands]
        return objects[0] if len(objects) == 1 else {"anyOf": objects}

    def after(self, prefill: str) -> Form:
        """The form of a whole reply whose start, `prefill` (whole `Name: value` lines,
        as the protocol keeps them after a cut), is already written: each kept line a
        field of that one value, then this form's fields."""
        kept = [FieldForm(key=key, values=[value]) for key, value in kept_lines(prefill)]
        strands = [[*kept, *strand] for strand in self.strands]
        for strand in strands:
            props = [f.prop for f in strand]
            if len(set(props)) != len(props):
                raise FormError(f"the reply's start names a field again ({', '.join(props)})")
        return Form(strands=strands)

    def next_key(self, done: int) -> str | None:
        """The property every strand writes after its first `done` ones; None when the
        strands differ there or end."""
        keys = {s[done].prop if len(s) > done else None for s in self.strands}
        return keys.pop() if len(keys) == 1 else None

    def labels(self) -> dict[str, str]:
        """Property name -> what starts its line in the text ("Reasoning: ", or "")."""
        return {
            f.prop: (f"{f.key}: " if f.key is not None else "") for s in self.strands for f in s
        }

    def text(self, answer: str) -> str:
        """The text of a JSON answer that matches the schema (FormError otherwise)."""
        try:
            obj = json.loads(answer)
        except ValueError:
            raise FormError(f"the answer is not JSON: {answer[:60]!r}") from None
        if not isinstance(obj, dict):
            raise FormError("the answer is not a JSON object")
        keys = list(obj)
        mismatch: FormError | None = None
        for strand in self.strands:  # the strand whose every value matches
            if [f.prop for f in strand] != keys:
                continue
            try:
                return "\n".join(f.line(f.check(obj[f.prop])) for f in strand)
            except FormError as exc:
                mismatch = mismatch or exc
        if mismatch is not None:
            raise mismatch
        expected = " or ".join(dict.fromkeys(", ".join(f.prop for f in s) for s in self.strands))
        raise FormError(f"the answer's fields ({', '.join(keys)[:80]}) are not {expected}")


def kept_lines(prefill: str) -> list[tuple[str, str]]:
    """The (name, value) of each whole line of a reply's start."""
    lines = prefill.split("\n")
    if lines[-1] != "":
        raise FormError("the reply's start does not end with a whole line")
    kept = []
    for line in lines[:-1]:
        key, sep, value = line.partition(": ")
        if not sep or not key:
            raise FormError(f"the reply's start has a line without a name: {line[:40]!r}")
        kept.append((key, value))
    return kept


def json_start(prefill: str, key: str | None) -> str:
    """The start of a reply's JSON object, compact as json.dumps writes it, which
    llama.cpp's schema grammar can go on from: the reply's kept lines (`prefill`) as
    fields, then the opening of field `key`'s value (`{"Reasoning": "...", "Answer":
    "`); "" when there is neither."""
    fields = [f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
              for k, v in kept_lines(prefill)]  # fmt: skip
    if key is not None:
        fields.append(f'{json.dumps(key, ensure_ascii=False)}: "')
        return "{" + ", ".join(fields)
    return "{" + ", ".join(fields) + ", " if fields else ""


def _object(strand: list[FieldForm]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f.prop: f.json_schema() for f in strand},
        "required": [f.prop for f in strand],
        "additionalProperties": False,
    }


# -- the grammar's fields ---------------------------------------------------------


class _Rules:
    def __init__(self, rules: dict[str, Node]) -> None:
        self.rules = rules
        self._breaks: dict[str, bool] = {}
        self._open: set[str] = set()

    def rule(self, name: str) -> Node:
        if name not in self.rules:
            raise FormError(f"the grammar uses rule {name}, which it does not define")
        if name in self._open:
            raise FormError(f"rule {name} is recursive: no JSON schema has the same strings")
        return self.rules[name]

    def breaks(self, node: Node) -> bool:
        """Whether the node writes a line break itself (a literal one): it holds a
        field's end."""
        if isinstance(node, Lit):
            return "\n" in node.text
        if isinstance(node, Chars):
            return False
        if isinstance(node, Ref):
            if node.name not in self._breaks:
                body = self.rule(node.name)
                self._open.add(node.name)
                try:
                    self._breaks[node.name] = self.breaks(body)
                finally:
                    self._open.discard(node.name)
            return self._breaks[node.name]
        if isinstance(node, Seq):
            return any(self.breaks(i) for i in node.items)
        if isinstance(node, Alt):
            return any(self.breaks(o) for o in node.options)
        return self.breaks(node.item)

    def strands(self, node: Node) -> list[list[Node]]:
        """Every way the node's line breaks may fall, each a sequence of literals and
        parts that hold no line break."""
        # a part with no line break of its own stays whole, but the sequences and rules
        # around literals are opened, so that a line's `Name: ` is seen
        if isinstance(node, Lit) or not self.breaks(node) and not isinstance(node, Ref | Seq):
            return [[node]]
        if isinstance(node, Ref):
            body = self.rule(node.name)
            self._open.add(node.name)
            try:
                return self.strands(body)
            finally:
                self._open.discard(node.name)
        if isinstance(node, Alt):
            out = [s for option in node.options for s in self.strands(option)]
        elif isinstance(node, Seq):
            out = [[]]
            for item in node.items:
                out = [a + b for a, b in product(out, self.strands(item))]
                if len(out) > STRANDS_MAX:
                    break
        else:
            raise FormError("a repeat holds a line break: its fields cannot be listed")
        if len(out) > STRANDS_MAX:
            raise FormError(f"the grammar's lines may go more than {STRANDS_MAX} ways")
        return out


def _fields(strand: list[Node]) -> list[tuple[str | None, list[Node]]]:
    """A strand cut at its line breaks into (name, value parts): a line starts with
    its literal `Name: `; only the first line may be a bare value."""
    fields: list[tuple[str | None, list[Node]]] = []
    key: str | None = None
    head = ""  # literal text of a line before its `: ` was seen
    value: list[Node] = []
    naming = True

    def close() -> None:
        nonlocal key, head, value, naming
        if naming:
            if fields or not head and not value:
                raise FormError(f"a line of the grammar has no name: {head[:40]!r}")
            value = [Lit(head), *value] if head else value
        fields.append((key, value))
        key, head, value, naming = None, "", [], True

    for part in strand:
        if not isinstance(part, Lit):
            if naming and fields:
                raise FormError(f"a line of the grammar has no name: {head[:40]!r}")
            if naming:  # a bare first value: what was read so far is part of it
                value, head, naming = [Lit(head)] if head else [], "", False
            value.append(part)
            continue
        for ch in part.text:
            if ch == "\n":
                close()
            elif naming:
                head += ch
                if head.endswith(": "):
                    key, head, naming = head[:-2], "", False
            elif value and isinstance(value[-1], Lit):
                value[-1] = Lit(value[-1].text + ch)
            else:
                value.append(Lit(ch))
    close()
    return fields


def form_of(grammar: str) -> Form:
    """The JSON form of a grammar localtable wrote; FormError when it has none."""
    try:
        rules = _Rules(parse(grammar))
    except GrammarError as exc:
        raise FormError(str(exc)) from None
    strands = []
    for strand in rules.strands(Ref("root")):
        fields = [_field(rules, key, parts) for key, parts in _fields(strand)]
        props = [f.prop for f in fields]
        if len(set(props)) != len(props):
            raise FormError(f"two lines of the grammar have the same name ({', '.join(props)})")
        strands.append(fields)
    return Form(strands=strands)


def _field(rules: _Rules, key: str | None, parts: list[Node]) -> FieldForm:
    node: Node = parts[0] if len(parts) == 1 else Seq(tuple(parts))
    values = _strings(rules, node, ENUM_MAX)
    if values is not None:
        return FieldForm(key=key, values=sorted(values))
    return FieldForm(key=key, pattern=f"^{_regex(rules, node)}$")


# -- a field's value: its strings, or a pattern --------------------------------------


def _strings(rules: _Rules, node: Node, limit: int) -> set[str] | None:
    """Every string the node allows, when they are at most `limit`; else None."""
    if isinstance(node, Lit):
        return {node.text}
    if isinstance(node, Chars):
        if node.negated or sum(b - a + 1 for a, b in node.ranges) > limit:
            return None
        return {chr(c) for a, b in node.ranges for c in range(a, b + 1)}
    if isinstance(node, Ref):
        rules.rule(node.name)
        rules._open.add(node.name)
        try:
            return _strings(rules, rules.rules[node.name], limit)
        finally:
            rules._open.discard(node.name)
    if isinstance(node, Alt):
        out: set[str] = set()
        for option in node.options:
            found = _strings(rules, option, limit)
            if found is None or len(out | found) > limit:
                return None
            out |= found
        return out
    if isinstance(node, Seq):
        acc = {""}
        for item in node.items:
            found = _strings(rules, item, limit)
            if found is None or len(acc) * len(found) > limit:
                return None
            acc = {a + b for a in acc for b in found}
        return acc
    if node.high is None or node.high > limit:
        return None
    found = _strings(rules, node.item, limit)
    if found is None:
        return None
    out, layer = set(), {""}
    for n in range(node.high + 1):
        if n >= node.low:
            out |= layer
        if len(out) > limit:
            return None
        if n < node.high:
            layer = {a + b for a in layer for b in found}
            if len(layer) > limit:
                return None
    return out


def _regex(rules: _Rules, node: Node) -> str:
    if isinstance(node, Lit):
        return "".join(_literal_char(c) for c in node.text)
    if isinstance(node, Chars):
        return _class(node)
    if isinstance(node, Ref):
        rules.rule(node.name)
        rules._open.add(node.name)
        try:
            return _regex(rules, rules.rules[node.name])
        finally:
            rules._open.discard(node.name)
    if isinstance(node, Seq):
        return "".join(_regex(rules, i) for i in node.items)
    if isinstance(node, Alt):
        return "(" + "|".join(_regex(rules, o) for o in node.options) + ")"
    inner = _regex(rules, node.item)
    atom = inner if _is_atom(node.item, inner) else f"({inner})"
    low, high = node.low, node.high
    if (low, high) == (0, 1):
        return atom + "?"
    if (low, high) == (0, None):
        return atom + "*"
    if (low, high) == (1, None):
        return atom + "+"
    if high == low:
        return f"{atom}{{{low}}}"
    return f"{atom}{{{low},{'' if high is None else high}}}"


def _is_atom(node: Node, regex: str) -> bool:
    return (
        isinstance(node, Chars)
        or (isinstance(node, Lit) and len(node.text) == 1)
        or (regex.startswith("(") and regex.endswith(")") and _balanced_group(regex))
    )


def _balanced_group(regex: str) -> bool:
    """Whether the regex is one group: its first ( closes at its last character."""
    depth, i = 0, 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = regex.index("]", i + 1 if regex[i + 1 : i + 2] != "]" else i + 2)
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0 and i < len(regex) - 1:
                return False
        i += 1
    return True


def _unsafe(c: int) -> bool:
    return any(a <= c <= b for a, b in UNSAFE)


def _literal_char(c: str) -> str:
    if _unsafe(ord(c)):
        raise FormError(
            f"a fixed part of a field holds {c!r}, which a JSON pattern cannot hold as it is"
        )
    return "\\" + c if c in _REGEX_SPECIAL else c


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(ranges: list[tuple[int, int]], cut: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a, b in ranges:
        pieces = [(a, b)]
        for c, d in cut:
            pieces = [
                p
                for x, y in pieces
                for p in ((x, min(y, c - 1)), (max(x, d + 1), y))
                if p[0] <= p[1]
            ]
        out += pieces
    return _merge(out)


def _class(node: Chars) -> str:
    """The class as a regex class over the safe characters only."""
    if node.negated:
        excluded = _merge([*node.ranges, *UNSAFE])
        return "[^" + "".join(_class_range(a, b) for a, b in excluded) + "]"
    kept = _subtract(_merge(list(node.ranges)), list(UNSAFE))
    if not kept:
        raise FormError("a field allows only characters a JSON pattern cannot hold")
    return "[" + "".join(_class_range(a, b) for a, b in kept) + "]"


def _class_range(a: int, b: int) -> str:
    return _class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}"


def _class_char(c: int) -> str:
    """A class member as both llama.cpp's grammar and a regex engine read it."""
    if 0x20 < c < 0x7F and chr(c) not in _CLASS_SPECIAL and chr(c) not in '"\\':
        return chr(c)
    if c < 0x100:
        return f"\\x{c:02X}"
    if c <= 0xFFFF:
        return f"\\u{c:04X}"
    return f"\\U{min(c, MAX_CODEPOINT):08X}"
