"""What an answer means for each question kind: its position, equality and the tally.

open: free text; two answers hold the same position when their normalized
text is equal (only used to spot a changed answer; the summary groups them).
choice: the answer is one of the options, compared exactly.
number: the answer is a decimal number, compared by value (3, 3.0 and 3.00
are the same position).

The grammar (roundtable's turn.gbnf.j2) makes a choice or number answer well
formed at decoding time; this module is what the parser, the protocol, the
scoring and the comparison share, so they can never disagree on equality.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from localtable.record import PositionGroup, QuestionKind

# Must match the `answer` rule of roundtable's turn.gbnf.j2 for kind == "number".
NUMBER_INT_DIGITS = 15
NUMBER_DECIMALS = 6
NUMBER_PATTERN = re.compile(rf"^-?[0-9]{{1,{NUMBER_INT_DIGITS}}}(\.[0-9]{{1,{NUMBER_DECIMALS}}})?$")


def normalize_open(text: str) -> str:
    """Lowercase words only: 'Yes, open it.' and 'yes open it' are the same text."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def stance(answer: str) -> str | None:
    """'yes' or 'no' when the answer opens with that word ("No, unless ..."), else None."""
    words = normalize_open(answer).split()
    return words[0] if words and words[0] in ("yes", "no") else None


class ReasoningVerdict(BaseModel):
    """One turn's yes/no answer and the stance a model read its reasoning to conclude
    (None: it could not be asked, the reason in `error`). session/judge.py asks the
    model; research/quality.py counts the answers whose reasoning concludes otherwise."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    panel: str
    round: int
    panelist: str
    answer: str
    concluded: Literal["yes", "no", "neither"] | None
    error: str = ""


# A leading "Yes" or "No" states a conclusion; the words after it give its ground
# ("Yes, because ..."): "Yes." and "No, never" give none.
GROUND_MIN_WORDS = 2


def bare_answer(answer: str) -> bool:
    """Whether an open answer is a bare yes or no: a leading yes/no with fewer than
    GROUND_MIN_WORDS words after it. roundtable's turn.gbnf.j2 cannot write one."""
    words = normalize_open(answer).split()
    return bool(words) and words[0] in ("yes", "no") and len(words) - 1 < GROUND_MIN_WORDS


# roundtable's turn.gbnf.j2 gives an open answer's `tail` (what follows its first word or
# its yes/no and ground) `answer_max - ANSWER_TAIL_SLACK` units: a character, or "."
# and the character after it. Must match the template.
ANSWER_TAIL_SLACK = 40
# A leading yes/no, its lead, the ground's first word and the first character of the
# next (turn.gbnf.j2 `answer-yes`, `ground`); else the first 1 to 4 characters
# (`other-first`, whose length depends on whether it starts like "No" or "Yes").
_STANCE_HEAD = re.compile(r"(?:Yes|yes|No|no)(?:[,;:]| -)? [^ ]+ [^ ]")
_OTHER_HEAD = re.compile(r"[Nn][Oo].|[Nn].|[Yy][Ee][Ss].|[Yy][Ee].|[Yy].|.", re.DOTALL)


def answer_tail_max(answer_max: int) -> int:
    """The units an open answer's tail may have (turn.gbnf.j2 `tail_max`)."""
    return max(answer_max - ANSWER_TAIL_SLACK, 1)


def answer_cut(raw_answer: str, answer_max: int) -> bool:
    """Whether the grammar's bound stopped an open answer as generated (nothing
    stripped): its tail used every unit turn.gbnf.j2 allows, and no closing "."
    ended it. The grammar lets a model end an answer only with "." before the bound
    (it did end answers on a comma: "..., promoting fair competition,")."""
    head = _STANCE_HEAD.match(raw_answer) or _OTHER_HEAD.match(raw_answer)
    if head is None:
        return False
    text, i, units = raw_answer, head.end(), 0
    while i < len(text):
        if text[i] == "." and i + 1 == len(text):
            return False  # the closing "." the model chose
        i += 2 if text[i] == "." and text[i + 1] > " " and text[i + 1] != "?" else 1
        units += 1
    return units >= answer_tail_max(answer_max)


def parse_number(text: str) -> Decimal | None:
    """The value of a number answer as the grammar writes it, else None."""
    text = text.strip()
    if not NUMBER_PATTERN.match(text):
        return None
    return Decimal(text)


def canonical_number(value: Decimal) -> str:
    """One spelling per value: no exponent, no trailing zeros, no negative zero."""
    value = value.normalize() + 0
    text = format(value, "f")
    return text if text != "-0" else "0"


def number_text(value: float) -> str | None:
    """A float as a number answer writes it (canonical_number of its shortest repr), or
    None when no number answer can: not finite, or past NUMBER_PATTERN's digits."""
    if not math.isfinite(value):
        return None
    text = canonical_number(Decimal(repr(value)))
    return text if NUMBER_PATTERN.match(text) else None


def last_number(reply: str) -> str | None:
    """The answer rule `last_number`: Du et al. 2023's parse_answer (math/gen_math.py)
    as their evaluation applies it. Commas become points ("1,234" reads 1.234), the
    reply is split at single spaces, and the last part that Python's float() reads is
    the answer ("550." and "550\n" read, "550**" and "(550)" do not). Its value is
    written as a number answer; None when no part reads, or when the part that does is
    no finite number of at most 15 digits and 6 decimals (their parser returns inf, nan
    or 1e300 there, which never equals an answer key)."""
    for part in reversed(reply.replace(",", ".").split(" ")):
        try:
            value = float(part)
        except ValueError:
            continue
        return number_text(value)
    return None


# LaTeX's \boxed{...}: the braces after it are matched in one pass (box_contents); an
# escaped brace (\{ \}) is text, not a group.
_BOX_OPEN = re.compile(r"\\boxed\s*\{")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
# What sets a number apart in LaTeX and says nothing of its value: spaces, thin spaces
# (\, \! \; \: \ ) and math shifts ($, \( \), \[ \]).
_LATEX_SPACING = re.compile(r"\s+|\\[,!;: ]|\$|\\[()\[\]]")
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")
_MAX_UNWRAP = 8
# a fraction of integers of at most 20 digits (int() and / stay exact and fast)
_FRACTION = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?[0-9]{1,20})\}\{([+-]?[0-9]{1,20})\}")


def box_contents(reply: str) -> list[str]:
    """The text inside each complete \\boxed{...} of a reply, nested braces matched, in
    the order their closing braces come (an outer box after the boxes inside it); a box
    left open (a reply cut off) is none."""
    opens = {m.end() - 1 for m in _BOX_OPEN.finditer(reply)}
    stack: list[int] = []
    found = []
    for m in _BRACE_OR_ESCAPE.finditer(reply):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            start = stack.pop()
            if start in opens:
                found.append(reply[start + 1 : m.start()])
    return found


def _unwrapped(text: str) -> str:
    """The text without braces that enclose all of it ({{246}} -> 246), at most
    _MAX_UNWRAP layers (each is a pass over the text)."""
    for _ in range(_MAX_UNWRAP):
        if not (text.startswith("{") and text.endswith("}")):
            break
        depth = 0
        for i, ch in enumerate(text):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0 and i < len(text) - 1:
                return text  # {1}{2}: the first brace closes early
        text = text[1:-1]
    return text


def boxed_number(content: str) -> str | None:
    """The number a box holds, written as a number answer; None when it holds anything
    else. Read as the paper's parser reads a part (Python's float()), after LaTeX's
    spacing and math shifts are dropped, 1{,}234 and 1,234 (digits in threes) read as
    1234, and \\frac{a}{b} (\\dfrac, \\tfrac) of integers as a / b."""
    text = _unwrapped(_LATEX_SPACING.sub("", content.replace("{,}", ",")))
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if fraction := _FRACTION.fullmatch(text):
        sign, top, bottom = fraction.groups()
        if int(bottom) == 0:
            return None
        return number_text((-1 if sign == "-" else 1) * int(top) / int(bottom))
    if not re.fullmatch(r"[0-9+\-.eE]+", text):  # float() reads "inf", "1_000", "٤٢"
        return None
    try:
        return number_text(float(text))
    except ValueError:
        return None


def boxed_or_last_number(reply: str) -> str | None:
    """The answer rule `boxed_or_last_number`: the number in the reply's last complete
    \\boxed{...} (boxed_number: None when that box holds no number), or, in a reply with
    no box, what last_number reads. A model that writes LaTeX states its answer in a box,
    which last_number, splitting at spaces, misreads as the last number before it
    ("3 \\times 27 = \\boxed{81}" reads 27) or as none: a deviation from the paper,
    stated where it is used."""
    boxes = box_contents(reply)
    return boxed_number(boxes[-1]) if boxes else last_number(reply)


# Free text's answer rules (a protocol's `answer_rule`): reply -> answer, or None. The
# names are record.AnswerRuleName (a test keeps them the same).
ANSWER_RULES = {"last_number": last_number, "boxed_or_last_number": boxed_or_last_number}


def position_of(kind: QuestionKind, answer: str) -> str:
    """The key two answers share exactly when they hold the same position."""
    if kind == "choice":
        return answer.strip()
    if kind == "number":
        value = parse_number(answer)
        return canonical_number(value) if value is not None else f"<not a number: {answer}>"
    return normalize_open(answer)


def same_position(kind: QuestionKind, a: str, b: str) -> bool:
    return position_of(kind, a) == position_of(kind, b)


def answer_problem(kind: QuestionKind, options: list[str], answer: str) -> str | None:
    """Why an answer is not valid for its question kind, or None when it is."""
    if kind == "choice" and answer.strip() not in options:
        return f"answer {answer[:60]!r} is not one of the options"
    if kind == "number" and parse_number(answer) is None:
        return f"answer {answer[:60]!r} is not a number"
    return None


def is_correct(kind: QuestionKind, answer: str | None, key: str | None) -> bool:
    """True only for a given answer equal to the key; no answer is never right."""
    if answer is None or key is None or kind == "open":
        return False
    if kind == "number":
        value, expected = parse_number(answer), parse_number(key)
        return value is not None and expected is not None and value == expected
    return answer.strip() == key.strip()


def tally_groups(kind: QuestionKind, answers: list[tuple[str, str]]) -> list[PositionGroup]:
    """Group (panelist, answer) pairs by position: largest group first, then panel order."""
    members: dict[str, list[str]] = {}
    for name, answer in answers:
        members.setdefault(position_of(kind, answer), []).append(name)
    order = list(members)
    ranked = sorted(order, key=lambda key: (-len(members[key]), order.index(key)))
    return [PositionGroup(position=key, members=members[key]) for key in ranked]


def plurality(kind: QuestionKind, answers: list[str]) -> str | None:
    """The position most answers hold; None when there are none or the top is tied.

    A tie is never broken: the caller counts it as no answer (wrong).
    """
    counts = Counter(position_of(kind, a) for a in answers)
    if not counts:
        return None
    (top, n), *rest = counts.most_common()
    if rest and rest[0][1] == n:
        return None
    return top
