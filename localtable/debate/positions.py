"""Labelled positions of open questions, counted in code.

An open question has no options to compare, so after round 1 the summarizer's
model gives each distinct answer a short label (a letter and a few words, under
a grammar: roundtable's label.gbnf.j2). From round 2 each panelist names the letter
it holds now, or `new`; new positions are labelled after their round the same
way. Consensus, "changed mind" and the stance chart then come from the letters,
round by round, never from a model's grouping. Choice and number questions
compare their answers exactly instead (answers.py).

The one thing code can read in an open answer for sure is a leading "Yes" or
"No" (a 1.5B labeller put "No, unless ..." with two "Yes" answers and the page
said "All 3 models agreed"): the label grammar is planned so that a yes and a
no never share a position (label_plans), labels that do anyway (a user's
grammar template) are refused (check_stances), and the fallback groups answers
by that word.
"""

from __future__ import annotations

from itertools import product

from pydantic import BaseModel, ConfigDict

from localtable.debate.answers import normalize_open, stance, tally_groups
from localtable.debate.parsing import ParsedLabels, ParseFailure
from localtable.record import PositionGroup, PositionLabel, RunRecord, TurnRecord

LETTERS = "ABCDEFGH"
LABEL_MAX_CHARS = 60


def to_label(record: RunRecord, round_no: int) -> list[TurnRecord]:
    """The ok turns of an open question's round whose position needs a label: all of
    round 1, then those that claimed a new position."""
    if record.question_kind != "open":
        return []
    turns = [t for t in record.turns if t.round == round_no and t.status == "ok" and t.parsed]
    if round_no == 1:
        return turns
    return [t for t in turns if t.parsed is not None and t.parsed.position_claim == "new"]


class LabelPlan(BaseModel):
    """One shape the labels of a round may take: the new positions declared (letter,
    and the stance its label must open with, or None) and, per panelist to place in
    panel order, the letters it may take."""

    model_config = ConfigDict(frozen=True)
    declared: list[tuple[str, str | None]]
    choices: list[list[str]]


def label_plans(
    member_stances: list[str | None], existing_stances: list[str | None], max_new: int
) -> list[LabelPlan]:
    """Every shape the labels may take so that a yes and a no never share a position:
    the new positions are declared "Yes" ones first, then "No" ones, then the rest,
    each stance at least one when it has an answer no existing position can take.
    An answer that opens with neither word may take any position; a "Yes" or "No"
    one a new position of its own stance, or an existing one of its stance or of
    none (check_stances reads its holders). Never a new position of no stance: its
    choices could not keep a "Yes" and a "No" answer from both taking it (a labeller
    on /v1 put a "No" answer under such a position, then labelled "Yes, ...", in all
    its attempts; its label, label-free, now opens with neither word). At most
    max_new new positions in all."""

    def fits(mine: str | None, theirs: str | None) -> bool:
        return mine is None or theirs is None or mine == theirs

    def fits_new(mine: str | None, theirs: str | None) -> bool:
        return mine is None or mine == theirs

    def bounds(s: str | None) -> range:
        count = member_stances.count(s)
        if not count:
            return range(0, 1)
        open_to = any(fits(s, x) for x in existing_stances)
        return range(0 if open_to else 1, count + 1)

    plans = []
    for j_yes, j_no, j_other in product(bounds("yes"), bounds("no"), bounds(None)):
        total = j_yes + j_no + j_other
        if total > max_new or (not existing_stances and total == 0):
            continue
        stances = ["yes"] * j_yes + ["no"] * j_no + [None] * j_other
        first = len(existing_stances)
        declared = [(LETTERS[first + i], st) for i, st in enumerate(stances)]
        existing = list(zip(LETTERS, existing_stances, strict=False))
        choices = [
            [letter for letter, st in existing if fits(m, st)]
            + [letter for letter, st in declared if fits_new(m, st)]
            for m in member_stances
        ]
        if all(choices):
            plans.append(LabelPlan(declared=declared, choices=choices))
    return plans


def position_stances(record: RunRecord) -> list[str | None]:
    """The stance of each labelled position, in letter order: its label's leading
    yes/no, else the one its holders' answers share, else None."""
    out: list[str | None] = []
    for x in record.positions:
        held = {
            stance(t.parsed.answer)
            for t in record.turns
            if t.position == x.letter and t.parsed is not None
        }
        out.append(stance(x.label) or (held.pop() if len(held) == 1 else None))
    return out


def stances_before(record: RunRecord, round_no: int) -> dict[str, str | None]:
    """The stance each position labelled before round_no asks of an answer that names
    it: its label's leading yes/no, else the one yes/no its holders' answers of
    earlier rounds open with (a neutral label may hold "Yes" answers and others), else
    None: an answer that opens with neither. Only earlier rounds count: the turns of
    round_no finish in any order, and the grammar must not depend on which came first."""
    out: dict[str, str | None] = {}
    for x in record.positions:
        if x.round >= round_no:
            continue
        held = {
            stance(t.parsed.answer)
            for t in record.turns
            if t.position == x.letter and t.round < round_no and t.parsed is not None
        } - {None}
        out[x.letter] = stance(x.label) or (held.pop() if len(held) == 1 else None)
    return out


def check_stances(record: RunRecord, labels: ParsedLabels, answers: dict[str, str]) -> None:
    """Refuse labels that put a yes and a no answer (or label) in one position: each
    panelist placed now against the position's label and its other holders, this
    round's and earlier rounds'. A conflict the panelists made themselves (naming a
    "Yes" letter with a "No" answer) is theirs, not the labeller's: not checked."""

    def label_of(letter: str) -> str:
        return labels.new.get(letter) or record.label(letter) or ""

    for name, letter in labels.assigned.items():
        mine = stance(answers.get(name, ""))
        if mine is None:
            continue
        others = [("its label", label_of(letter))]
        others += [(n, answers.get(n, "")) for n, x in labels.assigned.items() if x == letter]
        others += [
            (t.panelist, t.parsed.answer)
            for t in record.turns
            if t.position == letter and t.parsed is not None and t.panelist not in labels.assigned
        ]
        for who, text in others:
            theirs = stance(text)
            if theirs is not None and theirs != mine:
                raise ParseFailure(
                    f"position {letter} puts {name}'s {mine!r} with {who}'s {theirs!r}"
                )


def fallback_labels(answers: dict[str, str], existing: int) -> ParsedLabels:
    """When no usable labels were generated: answers opening with "Yes" take one
    position, those opening with "No" another (labelled "Yes" and "No" unless all
    their texts are the same); every other distinct answer text (normalized) is a
    position of its own, labelled with the answer, cut to LABEL_MAX_CHARS."""
    groups: dict[str, list[str]] = {}  # stance or normalized text -> panelists
    for name, answer in answers.items():
        groups.setdefault(stance(answer) or normalize_open(answer), []).append(name)
    new: dict[str, str] = {}
    letter_of: dict[str, str] = {}
    for key, names in groups.items():
        letter = LETTERS[min(existing + len(new), len(LETTERS) - 1)]
        texts = {normalize_open(answers[n]) for n in names}
        text = " ".join(answers[names[0]].split()) if len(texts) == 1 else key.capitalize()
        cut = len(text) > LABEL_MAX_CHARS
        new[letter] = text[: LABEL_MAX_CHARS - 1].rstrip() + "…" if cut else text
        letter_of.update(dict.fromkeys(names, letter))
    return ParsedLabels(new=new, assigned={name: letter_of[name] for name in answers})


def previous_position(record: RunRecord, turn: TurnRecord) -> str | None:
    """The position of the panelist's latest ok turn before this one."""
    earlier = [
        t
        for t in record.turns
        if t.panelist == turn.panelist and t.round < turn.round and t.status == "ok"
    ]
    return max(earlier, key=lambda t: t.round).position if earlier else None


def placed(record: RunRecord, turn: TurnRecord, letter: str | None) -> TurnRecord:
    """The turn holding `letter`, with whether that is a change from its previous one."""
    before = previous_position(record, turn) if turn.round > 1 else None
    changed = None if before is None or letter is None else letter != before
    return turn.model_copy(update={"position": letter, "position_changed": changed})


def apply_labels(record: RunRecord, round_no: int, labels: ParsedLabels) -> None:
    """Add a round's new labelled positions and place its labelled turns."""
    record.positions = [
        *record.positions,
        *(PositionLabel(letter=k, label=v, round=round_no) for k, v in labels.new.items()),
    ]
    record.turns = [
        placed(record, t, labels.assigned[t.panelist])
        if t.round == round_no and t.panelist in labels.assigned
        else t
        for t in record.turns
    ]


def forget_labels_from(record: RunRecord, round_no: int) -> None:
    """Drop the labels of round_no and later rounds, and the places they gave: a
    round's labels describe its turns, so a round still to be generated (resumed, or
    cut back by hand) is labelled again once its turns are done."""
    record.positions = [x for x in record.positions if x.round < round_no]
    record.labelings = [x for x in record.labelings if x.round < round_no]
    record.turns = [
        t.model_copy(update={"position": None, "position_changed": None})
        if t.round >= round_no and t.parsed is not None and t.parsed.position_claim == "new"
        else t
        for t in record.turns
    ]


def final_groups(record: RunRecord) -> list[PositionGroup]:
    """The positions the panel ended on, largest first (ties: letter or panel order).
    Open questions group by labelled letter; choice and number questions by answer."""
    finals = [t for t in record.final_turns() if t.status == "ok" and t.parsed is not None]
    if record.question_kind != "open":
        return tally_groups(
            record.question_kind, [(t.panelist, t.parsed.answer) for t in finals if t.parsed]
        )
    members: dict[str, list[str]] = {}
    for t in finals:
        if t.position is not None:
            members.setdefault(t.position, []).append(t.panelist)
    ranked = sorted(members, key=lambda letter: (-len(members[letter]), letter))
    return [
        PositionGroup(position=record.label(letter) or letter, members=members[letter])
        for letter in ranked
    ]


def changes(record: RunRecord) -> list[tuple[str, str, str]]:
    """(panelist, position before, position after) for each change of position, in
    order: of labelled position (open questions), else of answer (choice and number
    questions compare answers exactly, so each change of answer is one of position)."""
    out = []
    for t in record.turns:
        if t.status != "ok":
            continue
        if t.position_changed:
            before = previous_position(record, t)
            out.append((t.panelist, record.label(before) or "", record.label(t.position) or ""))
        elif record.question_kind != "open" and t.answer_changed and t.parsed is not None:
            earlier = [
                e
                for e in record.turns
                if e.panelist == t.panelist and e.round < t.round and e.status == "ok"
            ]
            last = max(earlier, key=lambda e: e.round) if earlier else None
            was = last.parsed.answer if last is not None and last.parsed is not None else ""
            out.append((t.panelist, was, t.parsed.answer))
    return out
