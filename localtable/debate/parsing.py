"""Read the structured part of a turn or a summary from the model's output.

The grammar (prompts/*.gbnf.j2) already forces the shape; this module checks
what the grammar cannot: that a field was not cut off by max_tokens, that an
answer says something, that names and letters refer to real panelists and
positions, that the summarizer did not just copy its prompt (the demo's 135M
model has answered "Headline: The roundtable's answer in one sentence." and
repeated the question as a headline). Anything that fails is a ParseFailure with the reason.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from localtable.debate.answers import answer_problem
from localtable.record import ParsedTurn, PositionGroup, QuestionKind

# An answer says something when it has a letter or a digit: "4", "2+1" and "A" are
# answers; "...", "-" and "?" are not.
_SAYS_SOMETHING = re.compile(r"[^\W_]")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
ECHO_MIN_WORDS = 3  # shorter fields ("Yes.") may well appear in instructions by chance


class ParseFailure(ValueError):
    """The output does not hold a usable turn; the message says why."""


class ParsedSummary(BaseModel):
    model_config = ConfigDict(frozen=True)
    headline: str
    groups: list[PositionGroup]
    counterpoint: str
    summary: str


def _fields(text: str, names: list[str], last: str) -> dict[str, str]:
    """Split 'Name: value' lines in the given order; the last field runs to the end."""
    out: dict[str, str] = {}
    rest = text
    for name in names:
        prefix = f"{name}: "
        if not rest.startswith(prefix):
            raise ParseFailure(f"missing the '{name}:' line (output cut off or malformed)")
        rest = rest[len(prefix) :]
        if name == last:
            out[name] = rest.strip()
            return out
        line, sep, rest = rest.partition("\n")
        if not sep:
            raise ParseFailure(f"the '{name}:' line was cut off (max_tokens too small?)")
        out[name] = line.strip()
    raise AssertionError("last field not in names")


def _meaningful(value: str, field: str) -> str:
    if not _SAYS_SOMETHING.search(value):
        raise ParseFailure(f"the {field} has no letter or digit: {value[:60]!r}")
    return value


def _words(text: str) -> str:
    return " ".join(_WORD.findall(text.casefold()))


def repeats_instructions(value: str, instructions: str) -> bool:
    """Whether a field is only a piece of the prompt's instructions, word for word."""
    words = _words(value)
    return words.count(" ") + 1 >= ECHO_MIN_WORDS and f" {words} " in f" {_words(instructions)} "


def _answer(value: str, kind: QuestionKind, options: list[str]) -> str:
    """An open answer needs words; a choice or number answer must be valid for its kind."""
    if kind == "open":
        return _meaningful(value, "answer")
    problem = answer_problem(kind, options, value)
    if problem is not None:
        raise ParseFailure(problem)
    return value


def parse_turn(
    text: str,
    *,
    later_round: bool,
    peers: dict[str, str],
    kind: QuestionKind = "open",
    options: list[str] | None = None,
) -> ParsedTurn:
    """Parse a panelist's turn; peers maps the labels it may cite to panelist names."""
    options = options or []
    if later_round:
        f = _fields(text, ["Decision", "Answer", "Influenced by", "Reasoning"], "Reasoning")
        decision = f["Decision"]
        if decision not in ("maintained", "changed"):
            raise ParseFailure(f"decision is {decision!r}, not maintained or changed")
        influenced: list[str] = []
        if f["Influenced by"] != "nobody":
            for label in (s.strip() for s in f["Influenced by"].split(", ")):
                if label not in peers:
                    raise ParseFailure(f"influenced by {label!r}, who is not on the panel")
                if peers[label] not in influenced:
                    influenced.append(peers[label])
        return ParsedTurn(
            answer=_answer(f["Answer"], kind, options),
            stance="change" if decision == "changed" else "maintain",
            influenced_by=influenced,
            reasoning=f["Reasoning"],
        )
    f = _fields(text, ["Answer", "Reasoning"], "Reasoning")
    return ParsedTurn(answer=_answer(f["Answer"], kind, options), reasoning=f["Reasoning"])


def parse_summary(
    text: str, *, members: dict[str, str], kind: QuestionKind = "open", instructions: str = ""
) -> ParsedSummary:
    """Parse the summarizer's output; members maps labels to panelist names, in panel order.

    For a choice or number question the headline may be the answer alone ("3.9").
    A headline, counterpoint or summary that only repeats a piece of `instructions`
    (the prompt without the panelists' answers) is refused.
    """
    lines = text.split("\n")
    if not lines or not lines[0].startswith("Headline: "):
        raise ParseFailure("missing the 'Headline:' line")
    headline = lines[0].removeprefix("Headline: ").strip()
    if kind == "open" or not headline:
        headline = _meaningful(headline, "headline")
    i = 1
    positions: dict[str, str] = {}
    while i < len(lines) and (m := re.match(r"Position ([A-H]): (.*)$", lines[i])):
        positions[m.group(1)] = m.group(2).strip()
        i += 1
    if not positions:
        raise ParseFailure("no 'Position A:' line")
    assigned: dict[str, list[str]] = {letter: [] for letter in positions}
    for label, name in members.items():
        prefix = f"{label}: "
        if i >= len(lines) or not lines[i].startswith(prefix):
            raise ParseFailure(f"no position given for {label}")
        letter = lines[i][len(prefix) :].strip()
        if letter not in positions:
            raise ParseFailure(f"{label} is given position {letter!r}, which was not declared")
        assigned[letter].append(name)
        i += 1
    rest = "\n".join(lines[i:])
    f = _fields(rest, ["Counterpoint", "Summary"], "Summary")
    for field, value in (("headline", headline), ("counterpoint", f["Counterpoint"]),
                         ("summary", f["Summary"])):  # fmt: skip
        if repeats_instructions(value, instructions):
            raise ParseFailure(f"the {field} only repeats the prompt: {value[:60]!r}")
    groups = [
        PositionGroup(position=positions[letter], members=names)
        for letter, names in assigned.items()
        if names
    ]
    return ParsedSummary(
        headline=headline,
        groups=groups,
        counterpoint=f["Counterpoint"],
        summary=f["Summary"],
    )
