"""Did debate help? Accuracy of the debate next to its own baselines, from run records.

Only questions with an answer key (choice or number) are scored, and only
finished runs (complete or failed). Everything comes from the debate's own
turns, so the baselines cost no extra generations:

- single panelist: each panelist's round-1 answer (1 generation a question);
- majority of independent answers: the round-1 plurality over the panel
  (N generations; round 1 is answered alone, so the answers are independent);
- debate after round r: the round-r plurality (N*r generations).

A plurality is the position more panelists hold than any other; unparsed or
failed answers do not vote. A tie for the top, or no answer at all, has no
majority and counts as wrong (never broken). Unparsed and failed answers are
wrong, never right, and are counted in every table. The standard error of
an accuracy p over n debates is sqrt(p(1-p)/n), as in Du et al.'s code.
"""

from __future__ import annotations

import math
from itertools import combinations

from pydantic import BaseModel, ConfigDict, Field

from localtable.debate.answers import is_correct, plurality, position_of
from localtable.errors import ConfigError
from localtable.record import RunRecord

TIE_RULE = "ties and debates with no valid answer count as wrong"


class Score(BaseModel):
    model_config = ConfigDict(frozen=True)


class Accuracy(Score):
    correct: int
    total: int

    @property
    def rate(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def stderr(self) -> float:
        p = self.rate
        return math.sqrt(p * (1 - p) / self.total) if self.total else 0.0


class ScoreRow(Score):
    """One line of the main table: a way of answering and how often it was right."""

    label: str
    calls: int = Field(description="generations per question this answer costs")
    accuracy: Accuracy
    unparsed: int = Field(description="answers that were unparsed or failed (counted wrong)")
    answers: int = Field(description="answers this row depends on")


class RoundScore(Score):
    round: int
    majority: Accuracy = Field(description="the round's plurality vs the key")
    individual: Accuracy = Field(description="every panelist answer of the round vs the key")
    unparsed: int
    right_to_wrong: int = Field(description="panelist answers right last round, wrong now")
    wrong_to_right: int
    all_agree: Accuracy = Field(description="debates where every panelist gave the same answer")
    pairs_agree: Accuracy = Field(description="panelist pairs giving the same valid answer")


class BatchScore(Score):
    debates: int
    panelists: list[str]
    rounds: int
    rows: list[ScoreRow]
    per_round: list[RoundScore]
    not_scored: int = Field(description="open questions or runs without an answer key")
    unfinished: int = Field(description="runs still running or interrupted")
    tie_rule: str = TIE_RULE


def _answer(record: RunRecord, round_no: int, panelist: str) -> str | None:
    """The panelist's valid answer in that round, or None (failed, unparsed, missing)."""
    turn = record.turn(round_no, panelist)
    if turn is None or turn.status != "ok" or turn.parsed is None:
        return None
    return turn.parsed.answer


def _right(record: RunRecord, answer: str | None) -> bool:
    return is_correct(record.question_kind, answer, record.answer_key)


def majority_right(record: RunRecord, round_no: int) -> bool:
    answers = [_answer(record, round_no, p.name) for p in record.panelists]
    top = plurality(record.question_kind, [a for a in answers if a is not None])
    return top is not None and _right(record, top)


def scorable(record: RunRecord) -> bool:
    return record.question_kind != "open" and record.answer_key is not None


def _check_alike(records: list[RunRecord]) -> tuple[list[str], int]:
    names = [p.name for p in records[0].panelists]
    rounds = records[0].rounds
    for r in records[1:]:
        if [p.name for p in r.panelists] != names or r.rounds != rounds:
            raise ConfigError(
                f"run {r.run_id} has another panel or round count than run {records[0].run_id}; "
                "score runs of one panel and round count together"
            )
    return names, rounds


def _round(records: list[RunRecord], names: list[str], round_no: int) -> RoundScore:
    n = len(records)
    majority = individual = unparsed = r2w = w2r = unanimous = pairs = 0
    for rec in records:
        answers = {p: _answer(rec, round_no, p) for p in names}
        majority += majority_right(rec, round_no)
        individual += sum(_right(rec, a) for a in answers.values())
        unparsed += sum(a is None for a in answers.values())
        if round_no > 1:
            for p in names:
                before, now = _right(rec, _answer(rec, round_no - 1, p)), _right(rec, answers[p])
                r2w += before and not now
                w2r += now and not before
        keys = [None if a is None else position_of(rec.question_kind, a) for a in answers.values()]
        unanimous += None not in keys and len(set(keys)) == 1
        pairs += sum(a is not None and a == b for a, b in combinations(keys, 2))
    n_pairs = len(names) * (len(names) - 1) // 2
    return RoundScore(
        round=round_no,
        majority=Accuracy(correct=majority, total=n),
        individual=Accuracy(correct=individual, total=n * len(names)),
        unparsed=unparsed,
        right_to_wrong=r2w,
        wrong_to_right=w2r,
        all_agree=Accuracy(correct=unanimous, total=n),
        pairs_agree=Accuracy(correct=pairs, total=n * n_pairs),
    )


def score(records: list[RunRecord]) -> BatchScore:
    """The accuracy table of a set of runs of one panel (see the module docstring)."""
    finished = [r for r in records if r.status in ("complete", "failed")]
    scored = [r for r in finished if scorable(r)]
    if not scored:
        raise ConfigError(
            "nothing to score: no finished run of a choice or number question with an answer key"
        )
    names, rounds = _check_alike(scored)
    per_round = [_round(scored, names, r) for r in range(1, rounds + 1)]
    rows = []
    for name in names:
        answers = [_answer(r, 1, name) for r in scored]
        rows.append(
            ScoreRow(
                label=f"Single panelist: {name} (round 1)",
                calls=1,
                accuracy=Accuracy(
                    correct=sum(_right(r, a) for r, a in zip(scored, answers, strict=True)),
                    total=len(scored),
                ),
                unparsed=sum(a is None for a in answers),
                answers=len(scored),
            )
        )
    for rs in per_round:
        label = (
            "Majority of independent answers (round 1)"
            if rs.round == 1
            else f"Debate: majority after round {rs.round}"
        )
        rows.append(
            ScoreRow(
                label=label,
                calls=len(names) * rs.round,
                accuracy=rs.majority,
                unparsed=rs.unparsed,
                answers=len(scored) * len(names),
            )
        )
    return BatchScore(
        debates=len(scored),
        panelists=names,
        rounds=rounds,
        rows=rows,
        per_round=per_round,
        not_scored=len(finished) - len(scored),
        unfinished=len(records) - len(finished),
    )
