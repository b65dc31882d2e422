"""Build run records of scored questions directly, turn by turn, for scoring and compare tests."""

from __future__ import annotations

from localtable.record import (
    Consensus,
    Generation,
    ParsedTurn,
    PositionGroup,
    QuestionKind,
    RunRecord,
    SummaryRecord,
    TurnRecord,
)
from tests.fakes import make_record, sampling

NAMES = ["A1", "B2", "C3"]


def generation(tokens: int) -> Generation:
    return Generation(
        seed=1, sampling=sampling(), prompt="p", prompt_tokens=1, prompt_sha256="0" * 64,
        completion_tokens=tokens,
    )  # fmt: skip


def turn(round_no: int, name: str, answer: str | None, tokens: int | None = None) -> TurnRecord:
    """An ok turn with that answer; None is a failed (unparsed) turn."""
    gen = None if tokens is None else generation(tokens)
    if answer is None:
        return TurnRecord(
            round=round_no, panelist=name, status="failed", error="unusable answer", generation=gen
        )
    stance = None if round_no == 1 else "maintain"
    parsed = ParsedTurn(answer=answer, stance=stance, reasoning="because")
    return TurnRecord(round=round_no, panelist=name, status="ok", parsed=parsed, generation=gen)


def scored_record(
    rounds: list[list[str | None]],
    *,
    key: str | None = "42",
    kind: QuestionKind = "number",
    run_id: str = "q-s1",
    options: list[str] | None = None,
    groups: list[list[str]] | None = None,
    status: str = "complete",
    samples: list[list[str | None]] | None = None,
    tokens: int | None = None,
) -> RunRecord:
    """rounds[r][i]: panelist i's answer in round r+1; None is a failed (unparsed) turn.
    samples[j][i]: panelist i's sample j+1 (vote mode: one more independent round-1
    answer). tokens: every turn and sample generated that many tokens."""
    record = make_record(NAMES[: len(rounds[0])], rounds=len(rounds))
    record.run_id = run_id
    record.question_id = run_id.rsplit("-s", 1)[0]
    record.question_kind = kind
    record.options = options or []
    record.answer_key = key
    record.status = status  # type: ignore[assignment]
    for r, answers in enumerate(rounds, start=1):
        for name, answer in zip(NAMES, answers, strict=False):
            record.turns.append(turn(r, name, answer, tokens))
    for answers in samples or []:
        for name, answer in zip(NAMES, answers, strict=False):
            record.samples.append(turn(1, name, answer, tokens))
    if groups is not None:
        record.summary = SummaryRecord(
            status="ok",
            summarizer=NAMES[0],
            groups=[PositionGroup(position=f"p{i}", members=g) for i, g in enumerate(groups)],
            consensus=Consensus(kind="none", agreeing=0, total=3, line="No consensus"),
        )
    return record
