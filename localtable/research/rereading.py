"""Free-text replies read again: `localtable score --answer-rule RULE`, and each rule's
parse rate.

A free-text turn (a protocol's `output = "free"`) keeps its whole reply, and its
answer is what the protocol's answer rule read in it when it ran. Scoring under
another rule reads every such reply again through the debate's own
`freetext.free_turn`: a reply the recorded rule could not read may now be read, and
one it read may now be unparsed. Only the answers change; the replies, and so what
each peer saw, are the ones recorded. No model is needed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from localtable.debate.answers import ANSWER_RULES, same_position
from localtable.debate.freetext import free_turn
from localtable.errors import ConfigError
from localtable.record import RunRecord, TurnRecord


class ParseRate(BaseModel):
    """How many of the replies a rule reads a number in."""

    model_config = ConfigDict(frozen=True)
    rule: str
    read: int
    replies: int


class AnswerReading(BaseModel):
    """How the free-text replies of the scored runs were read."""

    model_config = ConfigDict(frozen=True)
    chosen: str | None = Field(description="--answer-rule; None: each run's recorded rule")
    recorded: list[str] = Field(description="the rules the runs were read by as they ran")
    rates: list[ParseRate] = Field(description="every rule's, over the same replies")

    @property
    def differs(self) -> bool:
        """Whether the scores read answers otherwise than the runs recorded them."""
        return self.chosen is not None and self.recorded != [self.chosen]


def is_free_text(record: RunRecord) -> bool:
    return record.protocol is not None and record.protocol.settings.output == "free"


def replies(record: RunRecord) -> list[TurnRecord]:
    """The turns and samples that hold a reply its answer rule read (a turn that failed
    before its model answered holds none)."""
    if not is_free_text(record):
        return []
    return [t for t in (*record.turns, *record.samples)
            if t.generation is not None and t.status in ("ok", "failed")]  # fmt: skip


def check_rule(rule: str) -> None:
    if rule not in ANSWER_RULES:
        raise ConfigError(
            f"--answer-rule {rule}: no such answer rule; choose one of "
            f"{', '.join(ANSWER_RULES)} (docs/protocol.md)"
        )


def _read_again(turn: TurnRecord, rule: str) -> TurnRecord:
    if turn.generation is None or turn.status not in ("ok", "failed"):
        return turn  # no reply, or an interrupted turn: nothing to read
    return free_turn(turn.round, turn.panelist, turn.generation, rule)


def _with_changes(turns: list[TurnRecord], record: RunRecord) -> list[TurnRecord]:
    """Each later round's valid turn marked with whether its answer changed from the
    panelist's latest valid one before it, as the debate marks it."""
    out: list[TurnRecord] = []
    for turn in turns:
        before = [t for t in out if t.panelist == turn.panelist and t.round < turn.round
                  and t.parsed is not None]  # fmt: skip
        if turn.round > 1 and turn.parsed is not None and before:
            last = max(before, key=lambda t: t.round).parsed
            assert last is not None
            changed = not same_position(record.question_kind, turn.parsed.answer, last.answer)
            turn = turn.model_copy(update={"answer_changed": changed})
        out.append(turn)
    return out


def reread(record: RunRecord, rule: str) -> RunRecord:
    """The record with every free-text reply's answer read by `rule`."""
    if not is_free_text(record):
        name = record.protocol.name if record.protocol else "roundtable"
        raise ConfigError(
            f"run {record.run_id} ran protocol {name}, whose turns are structured (read under "
            "a grammar, not by an answer rule): --answer-rule reads free-text replies only; "
            "score it without --answer-rule"
        )
    turns = _with_changes([_read_again(t, rule) for t in record.turns], record)
    samples = [_read_again(t, rule) for t in record.samples]
    return record.model_copy(update={"turns": turns, "samples": samples})


def recorded_rules(records: list[RunRecord]) -> list[str]:
    rules = [r.protocol.settings.answer_rule for r in records if r.protocol and is_free_text(r)]
    return list(dict.fromkeys(rules))


def reading(records: list[RunRecord], rule: str | None) -> AnswerReading | None:
    """The rule the scores read answers by (`rule`; None: as recorded), the rules the
    records were read by, and every rule's parse rate over the same replies; None when
    no run is free text."""
    recorded = recorded_rules(records)
    if not recorded:
        return None
    texts = [t.generation.raw_output for r in records for t in replies(r) if t.generation]
    rates = [ParseRate(rule=name, read=sum(read(x) is not None for x in texts),
                       replies=len(texts)) for name, read in ANSWER_RULES.items()]  # fmt: skip
    return AnswerReading(chosen=rule, recorded=recorded, rates=rates)
