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

from localtable.debate.answers import answer_cut, answer_problem, bare_answer, stance
from localtable.record import ParsedTurn, QuestionKind, SummaryLine

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
    counterpoint: str
    summary: str
    cut: list[SummaryLine] = []  # the lines the grammar's bound stopped (line_cut)


class ParsedLabels(BaseModel):
    """New labelled positions (letters compacted in order of use) and who holds which."""

    model_config = ConfigDict(frozen=True)
    new: dict[str, str]  # letter -> label
    assigned: dict[str, str]  # panelist name -> letter


# A turn's fields, as the grammar (roundtable's turn.gbnf.j2) writes them, by key.
FIELD_NAMES = {
    "reasoning": "Reasoning",
    "influenced_by": "Influenced by",
    "decision": "Decision",
    "position": "Position",
    "answer": "Answer",
}
# A headline sharing this much of its wording with the question restates it
# (`make quality` counts the same measure).
RESTATES_OVERLAP = 0.8


def turn_fields(*, later_round: bool, labelled: bool) -> list[str]:
    """The fields of a turn in the order they are generated: reasoning first, the
    answer last (labelled: an open question whose positions have letters)."""
    if not later_round:
        return ["reasoning", "answer"]
    middle = ["influenced_by", "decision", *(["position"] if labelled else [])]
    return ["reasoning", *middle, "answer"]


def multiline_reasoning(kind: QuestionKind) -> bool:
    """Whether a turn's reasoning may run over several lines: a choice or number
    question's reasoning is working, written step by step on lines (held to one
    line, Qwen ended it at its first line break and guessed the number); an open
    question's is the prose the transcript shows. The fields after the reasoning
    are one line each either way, so the reasoning is whatever precedes them."""
    return kind != "open"


def completed_part(
    text: str, fields: list[str], *, multiline: bool = False
) -> tuple[str, list[str]]:
    """For an output that max_tokens cut off: the part to keep (whole fields, a cut
    reasoning closed with an ellipsis) and the fields still to generate. With a
    multi-line reasoning, it ends where the last line naming the first field after
    it begins, and every field after it is written again: the reasoning's grammar
    allows any line, so those lines may never have been held to their fields'
    (Qwen 0.5B wrote "Decision: Maintain or changed the view." inside its working
    until max_tokens cut it)."""
    if multiline and fields[0] == "reasoning" and len(fields) > 1:
        if not text.startswith(f"{FIELD_NAMES['reasoning']}: "):
            return "", fields
        at = text.rfind(f"\n{FIELD_NAMES[fields[1]]}: ")
        if at < 0:  # cut inside the reasoning
            return text.rstrip() + "…\n", fields[1:]
        return text[: at + 1], fields[1:]
    lines = text.split("\n")
    done = lines[:-1]  # the last line was cut
    n = min(len(done), len(fields) - 1)  # the answer is last: never complete when cut
    if n == 0:
        if not lines[0].startswith(f"{FIELD_NAMES[fields[0]]}: ") or fields[0] != "reasoning":
            return "", fields
        return lines[0].rstrip() + "…\n", fields[1:]
    return "\n".join(done[:n]) + "\n", fields[n:]


def reasoning_finished(text: str, fields: list[str], *, multiline: bool = False) -> bool:
    """Whether an output got past its reasoning: the line of the next field began."""
    if fields[0] != "reasoning" or len(fields) < 2:
        return True
    if multiline:
        return f"\n{FIELD_NAMES[fields[1]]}: " in text
    return "\n" in text


def raw_reasoning(text: str, fields: list[str], *, multiline: bool = False) -> str:
    """The reasoning field as generated (nothing stripped): what the grammar's
    character bound counted; "" when the text does not start with it."""
    prefix = f"{FIELD_NAMES['reasoning']}: "
    if not fields or fields[0] != "reasoning" or not text.startswith(prefix):
        return ""
    if multiline and len(fields) > 1:
        at = text.rfind(f"\n{FIELD_NAMES[fields[1]]}: ")
        return text[len(prefix) : at if at >= 0 else len(text)]
    return text[len(prefix) :].split("\n", 1)[0]


def answer_line_cut(text: str, kind: QuestionKind, answer_max: int) -> bool:
    """Whether the grammar's character bound stopped a turn's answer: answers.answer_cut
    of its last line as generated (nothing stripped). A choice or a number is complete
    as the grammar writes it."""
    _, found, line = text.rpartition(f"\n{FIELD_NAMES['answer']}: ")
    return kind == "open" and bool(found) and answer_cut(line, answer_max)


def line_cut(line: str) -> bool:
    """Whether the grammar's bound stopped a summary line (summary.gbnf.j2 under
    sentence.gbnf.j2): the model may end one only with ". ! ?", and the characters that
    close a line at its bound are never one, so a line without that end was stopped."""
    return not line.rstrip().endswith((".", "!", "?"))


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
    """An open answer needs words, and a ground after a leading yes/no (bare_answer);
    a choice or number answer must be valid for its kind."""
    if kind == "open":
        _meaningful(value, "answer")
        if bare_answer(value):
            raise ParseFailure(f"the answer {value[:60]!r} states no ground (a bare answer)")
        return value
    problem = answer_problem(kind, options, value)
    if problem is not None:
        raise ParseFailure(problem)
    return value


def word_overlap(text: str, question: str) -> float:
    """The share of the text's distinct words that also occur in the question
    (casefolded); a text with no words counts as 1.0 (it says nothing of its own)."""
    words = set(_WORD.findall(text.casefold()))
    if not words:
        return 1.0
    return len(words & set(_WORD.findall(question.casefold()))) / len(words)


_INLINE_FIELD = re.compile(
    r"\s(?:Answer|Influenced by|Decision|Position|Counterpoint|Summary|Question):\s"
)


def _own_reasoning(text: str) -> str:
    """A reasoning or summary without the fields a small model sometimes writes inside
    it ("... Answer: Yes") before the grammar's own lines: those follow, and shown
    twice they read as a muddle. The record keeps the output as generated."""
    m = _INLINE_FIELD.search(text)
    return text[: m.start()].rstrip() if m and m.start() >= 40 else text


def restates_question(text: str, question: str) -> bool:
    """Whether a headline restates the question: RESTATES_OVERLAP of its words are the
    question's, or it opens with a question that is (seen before schema 4 with Qwen
    1.5B: "Should cities ban private cars from their centres? A. Cities should ...")."""
    if word_overlap(text, question) >= RESTATES_OVERLAP:
        return True
    opening, mark, _ = text.partition("?")
    return bool(mark) and word_overlap(opening, question) >= RESTATES_OVERLAP


def parse_turn(
    text: str,
    *,
    later_round: bool,
    peers: dict[str, str],
    kind: QuestionKind = "open",
    options: list[str] | None = None,
    letters: list[str] | None = None,
    stances: dict[str, str | None] | None = None,
) -> ParsedTurn:
    """Parse a panelist's turn; peers maps the labels it may cite to panelist names,
    letters are the labelled positions it may name (None: positions are not labelled),
    stances the stance of each ("yes", "no" or None): an answer must open with the
    stance of the letter it names (a "Yes" position, a "Yes, ..." answer)."""
    options = options or []
    fields = turn_fields(later_round=later_round, labelled=later_round and letters is not None)
    names = [FIELD_NAMES[k] for k in fields]
    if multiline_reasoning(kind):
        # every field after the reasoning is one line: the reasoning is the rest
        lines = text.split("\n")
        after = len(names) - 1
        if len(lines) <= after:
            raise ParseFailure("missing the lines after the reasoning (output cut off?)")
        reasoning_part = "\n".join(lines[:-after])
        f = _fields(reasoning_part, names[:1], names[0])
        f.update(_fields("\n".join(lines[-after:]), names[1:], "Answer"))
    else:
        f = _fields(text, names, "Answer")
    answer = _answer(f["Answer"], kind, options)
    reasoning = _meaningful(_own_reasoning(f["Reasoning"]), "reasoning")
    if not later_round:
        return ParsedTurn(answer=answer, reasoning=reasoning, order=fields)
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
    claim = f.get("Position")
    if claim is not None and claim != "new" and claim not in (letters or []):
        raise ParseFailure(f"position {claim!r} is not one of the labelled positions")
    if claim is not None and stances is not None and claim in stances:
        mine, theirs = stance(answer), stances[claim]
        if mine != theirs:
            raise ParseFailure(
                f"the answer opens with {mine or 'neither yes nor no'!r} but position "
                f"{claim} is {theirs or 'neither yes nor no'!r}"
            )
    return ParsedTurn(
        answer=answer,
        stance="change" if decision == "changed" else "maintain",
        influenced_by=influenced,
        reasoning=reasoning,
        position_claim=claim,
        order=fields,
    )


def parse_summary(
    text: str, *, kind: QuestionKind = "open", question: str = "", instructions: str = ""
) -> ParsedSummary:
    """Parse the summarizer's output: summary, counterpoint, then the answer line
    that the layouts show as the headline.

    For a choice or number question the headline may be the answer alone ("3.9").
    An open question's headline must answer it: one that is a question or shares
    RESTATES_OVERLAP of its words with the question is refused, and so is a field
    that only repeats a piece of `instructions` (the prompt without the answers).
    """
    f = _fields(text, ["Summary", "Counterpoint", "Answer"], "Answer")
    headline = f["Answer"]
    if kind == "open" or not headline:
        headline = _meaningful(headline, "headline")
        if headline.rstrip().endswith("?"):
            raise ParseFailure(f"the headline asks a question: {headline[:60]!r}")
        if question and restates_question(headline, question):
            raise ParseFailure(f"the headline restates the question: {headline[:60]!r}")
    for field, value in (("headline", headline), ("counterpoint", f["Counterpoint"]),
                         ("summary", f["Summary"])):  # fmt: skip
        if repeats_instructions(value, instructions):
            raise ParseFailure(f"the {field} only repeats the prompt: {value[:60]!r}")
    summary = _own_reasoning(f["Summary"])
    # a counterpoint ran on with "Question: <the question> Answer: ..." (2b64b94)
    counterpoint = _own_reasoning(f["Counterpoint"])
    # a choice or number headline is free (its answer alone is complete)
    lines: dict[SummaryLine, str] = {"summary": f["Summary"], "counterpoint": f["Counterpoint"]}
    if kind == "open":
        lines["headline"] = f["Answer"]
    cut = [line for line, raw in lines.items() if line_cut(raw)]
    return ParsedSummary(headline=headline, counterpoint=counterpoint, summary=summary, cut=cut)


def parse_labels(
    text: str, *, members: dict[str, str], existing: list[str], instructions: str = ""
) -> ParsedLabels:
    """Parse the labels of a round's new positions; members maps the labels of the
    panelists to place to their names (in panel order), existing are the letters
    already labelled. Declared letters nobody holds are dropped and the rest
    renumbered in order, so the positions stay A, B, C... without gaps."""
    lines = text.split("\n")
    declared: dict[str, str] = {}
    i = 0
    while i < len(lines) and (m := re.match(r"Position ([A-H]): (.*)$", lines[i])):
        label = _meaningful(m.group(2).strip(), "position label")
        if repeats_instructions(label, instructions):
            raise ParseFailure(f"the label only repeats the prompt: {label[:60]!r}")
        declared[m.group(1)] = label
        i += 1
    raw: dict[str, str] = {}
    for label, name in members.items():
        prefix = f"{label}: "
        if i >= len(lines) or not lines[i].startswith(prefix):
            raise ParseFailure(f"no position given for {label}")
        letter = lines[i][len(prefix) :].strip()
        if letter not in declared and letter not in existing:
            raise ParseFailure(f"{label} is given position {letter!r}, which was not declared")
        raw[name] = letter
        i += 1
    letters = "ABCDEFGH"
    renamed: dict[str, str] = {}
    for old in declared:
        if old in raw.values():
            renamed[old] = letters[len(existing) + len(renamed)]
    return ParsedLabels(
        new={renamed[old]: declared[old] for old in renamed},
        assigned={name: renamed.get(letter, letter) for name, letter in raw.items()},
    )
