"""What a way of answering says for one debate: its answers, their majority, its cost.

A majority is the plurality: the position more answers hold than any other;
unparsed or failed answers do not vote. A tie for the top is settled by a tie
rule, and every majority is scored under all three:

- first: the tied position whose first vote came first, in seat order (Du et
  al.'s `most_frequent` gives a tie to the earliest agent with the top count);
- random: one of the tied positions drawn from sha256 of the tie seed, the
  question, the run's seed and the way of answering, so the draw is fixed and
  the same on every machine;
- wrong: no majority, counted wrong (localtable's rule before issue #25).

With no valid answer at all there is no majority under any rule.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from localtable.debate.answers import position_of
from localtable.record import Generation, QuestionKind, RunRecord, TurnRecord

TieRule = Literal["first", "random", "wrong"]
TIE_RULES: tuple[TieRule, ...] = ("first", "random", "wrong")
TIE_SEED = 0  # the seed of the random tie rule, printed with every score


def answer_of(turn: TurnRecord | None) -> str | None:
    """The turn's valid answer, or None (failed, unparsed, missing)."""
    if turn is None or turn.status != "ok" or turn.parsed is None:
        return None
    return turn.parsed.answer


def leaders(kind: QuestionKind, answers: list[str | None]) -> list[str]:
    """One answer per position tied for the most votes, in the order of each position's
    first vote; empty when nobody gave a valid answer."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for a in answers:
        if a is None:
            continue
        key = position_of(kind, a)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, a)
    top = max(counts.values(), default=0)
    return [first[key] for key, n in counts.items() if n == top]


def draw(key: str, choices: int) -> int:
    """A fixed index below `choices` for a key: the first 8 bytes of sha256(key)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % choices


def decide(tied: list[str], rule: TieRule, draw_key: str) -> str | None:
    """The majority answer among the leaders under a tie rule, or None (no majority)."""
    if len(tied) <= 1:
        return tied[0] if tied else None
    if rule == "first":
        return tied[0]
    if rule == "random":
        return tied[draw(draw_key, len(tied))]
    return None


def draw_key(record: RunRecord, way: str, tie_seed: int) -> str:
    """What the random tie rule draws from: the same debate and way give the same draw."""
    return f"{tie_seed}/{record.question_id or record.run_id}/{record.seed}/{way}"


def round_turns(record: RunRecord, seats: list[str], round_no: int) -> list[TurnRecord | None]:
    return [record.turn(round_no, name) for name in seats]


def sample_pool(
    record: RunRecord, seats: list[str], per_seat: int
) -> list[TurnRecord | None] | None:
    """SC@k's independent answers, per_seat from every seat: a seat's round-1 turn, then
    its samples in order. Taken round by round (every seat's first answer, then every
    seat's second, ...), so the first-seat tie rule means seat 1's round-1 answer.
    None when a seat has fewer than per_seat."""
    by_seat = [
        [record.turn(1, name), *[s for s in record.samples if s.panelist == name]] for name in seats
    ]
    if any(len(answers) < per_seat for answers in by_seat):
        return None
    return [by_seat[i][j] for j in range(per_seat) for i in range(len(seats))]


def turn_tokens(turn: TurnRecord | None) -> int:
    """Tokens the turn generated: its generation and any continuation."""
    if turn is None:
        return 0
    return sum(g.completion_tokens for g in (turn.generation, turn.continuation) if g is not None)


def debate_tokens(record: RunRecord, last_round: int) -> int:
    """Tokens the turns of rounds 1..last_round generated."""
    return sum(turn_tokens(t) for t in record.turns if t.round <= last_round)


def other_tokens(record: RunRecord) -> int:
    """Tokens generated beside the answers: the summary and the open positions' labels,
    with their rejected attempts."""
    gens: list[Generation | None] = []
    if record.summary is not None:
        gens += [record.summary.generation, *record.summary.rejected_generations]
    for labeling in record.labelings:
        gens += [labeling.generation, *labeling.rejected_generations]
    return sum(g.completion_tokens for g in gens if g is not None)
