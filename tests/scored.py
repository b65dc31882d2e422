"""Build run records of scored questions directly, turn by turn, for scoring and compare tests."""

from __future__ import annotations

from localtable.record import (
    Consensus,
    ParsedTurn,
    PositionGroup,
    QuestionKind,
    RunRecord,
    SummaryRecord,
    TurnRecord,
)
from tests.fakes import make_record

NAMES = ["A1", "B2", "C3"]


def scored_record(
    rounds: list[list[str | None]],
    *,
    key: str | None = "42",
    kind: QuestionKind = "number",
    run_id: str = "q-s1",
    options: list[str] | None = None,
    groups: list[list[str]] | None = None,
    status: str = "complete",
) -> RunRecord:
    """rounds[r][i]: panelist i's answer in round r+1; None is a failed (unparsed) turn."""
    record = make_record(NAMES[: len(rounds[0])], rounds=len(rounds))
    record.run_id = run_id
    record.question_id = run_id.rsplit("-s", 1)[0]
    record.question_kind = kind
    record.options = options or []
    record.answer_key = key
    record.status = status  # type: ignore[assignment]
    for r, answers in enumerate(rounds, start=1):
        for name, answer in zip(NAMES, answers, strict=False):
            if answer is None:
                record.turns.append(
                    TurnRecord(round=r, panelist=name, status="failed", error="unusable answer")
                )
            else:
                stance = None if r == 1 else "maintain"
                parsed = ParsedTurn(answer=answer, stance=stance, reasoning="because")
                record.turns.append(TurnRecord(round=r, panelist=name, status="ok", parsed=parsed))
    if groups is not None:
        record.summary = SummaryRecord(
            status="ok",
            summarizer=NAMES[0],
            groups=[PositionGroup(position=f"p{i}", members=g) for i, g in enumerate(groups)],
            consensus=Consensus(kind="none", agreeing=0, total=3, line="No consensus"),
        )
    return record
