"""Is a panel's output usable? Form metrics of finished debates, per panel (`make quality`).

The measurement of issue #12, from run records alone: does the summary's
headline say something the question did not, is each `Answer:` line a
position, how many turns fail, and does a panelist that says it changed its
mind hold another position. It measures form, never who is right, so it needs
no answer key; `make quality` runs it on the built-in `quality` task.

Records are grouped by `record.panel`. Only finished runs (complete or failed)
are measured: a run whose summary failed ends `failed`, and leaving failed runs
out would hide exactly the failures measured here. Running and interrupted runs
are counted and left out. Each metric's exact definition is in the docstring of
the function that computes it; the targets below are the issue's.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from localtable.debate.parsing import RESTATES_OVERLAP, restates_question, word_overlap
from localtable.errors import ConfigError
from localtable.record import Generation, RunRecord, TurnRecord

FINISHED = ("complete", "failed")
RESTATE_OVERLAP = RESTATES_OVERLAP  # 0.8: a headline this close to the question restates it
MAX_RESTATED = 0  # headlines that restate the question
MAX_NON_POSITIONS = 0  # answers that are not positions
MAX_FAILED_TURNS_PCT = 2.0  # failed turns, percent of all turns
MIN_AGREEMENT = 0.9  # stated "changed mind" agreeing with a change of position


class Quality(BaseModel):
    model_config = ConfigDict(frozen=True)


class Spread(Quality):
    """The median and maximum of some values; None for both when there are none."""

    n: int
    median: float | None
    max: float | None


class Example(Quality):
    """One offending headline or answer, so a reader can see what was counted."""

    run_id: str
    round: int | None = Field(description="None for a summary's headline")
    panelist: str = Field(description="who wrote it (the summarizer for a headline)")
    text: str


class Agreement(Quality):
    """Stated "changed mind" against an actual change, over the turns where both are known."""

    n: int
    agree: int
    said_changed_same_position: int
    said_maintained_position_changed: int
    by_answer_text: int = Field(
        description="of n, turns without a labelled position (records before schema 4): "
        "judged by answer_changed, where every rewording counts as a change"
    )

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None


class PanelistModel(Quality):
    name: str
    model: str


class Verdicts(Quality):
    """Each target met (True), missed (False), or nothing to judge it on (None)."""

    restated: bool | None
    non_positions: bool | None
    failed_turns: bool | None
    agreement: bool | None


class PanelQuality(Quality):
    panel: str
    panelists: list[PanelistModel] = Field(description="every (name, model) seen, in order")
    debates: int = Field(description="finished runs measured: complete or failed")
    complete: int
    failed: int = Field(description="finished runs that ended failed (e.g. their summary)")
    left_out: int = Field(description="runs still running or interrupted: not measured")
    wall_seconds: Spread
    engine_seconds: Spread
    summaries_ok: int
    summaries_failed: int = Field(description="finished runs whose summary is not ok, or none")
    summary_rejected: int = Field(description="rejected summary attempts, all debates")
    restated: list[Example]
    turns: int
    ok_turns: int
    failed_turns: int
    answer_chars: Spread
    non_positions: list[Example]
    labelings: int
    failed_labelings: int
    agreement: Agreement
    verdicts: Verdicts

    @property
    def failed_turn_pct(self) -> float | None:
        return 100 * self.failed_turns / self.turns if self.turns else None


class QualityReport(Quality):
    panels: list[PanelQuality]
    skipped: list[str] = Field(default_factory=list, description="batch entries not run yet")


# -- the metrics ------------------------------------------------------------------


def spread(values: list[float]) -> Spread:
    if not values:
        return Spread(n=0, median=None, max=None)
    return Spread(n=len(values), median=statistics.median(values), max=max(values))


def overlap(headline: str, question: str) -> float:
    """The share of the headline's distinct words that also occur in the question; a
    headline with no words has nothing of its own to say: 1.0. The same measure the
    summary's parser refuses a headline by (debate/parsing.py)."""
    return word_overlap(headline, question)


def restates(headline: str, question: str) -> bool:
    """overlap(headline, question) >= RESTATE_OVERLAP (0.8), or the headline opens
    with a question of which that holds (debate/parsing.restates_question)."""
    return restates_question(headline, question)


def is_position(answer: str) -> bool:
    """False for an answer that is empty or whitespace, ends with "?" (a question), or
    holds two or more "?" (a list of questions); True otherwise."""
    text = answer.strip()
    return bool(text) and not text.endswith("?") and text.count("?") < 2


def wall_seconds(record: RunRecord) -> float | None:
    """finished_at - created_at (None when not finished). A run resumed later counts
    the time it stood stopped: engine_seconds does not."""
    if record.finished_at is None:
        return None
    return (record.finished_at - record.created_at).total_seconds()


def generations(record: RunRecord) -> Iterator[Generation]:
    """Every generation the engines ran for a record: turns, labelings and the summary,
    with their rejected attempts (work done and thrown away is time spent)."""
    for turn in record.turns:
        if turn.generation is not None:
            yield turn.generation
        if turn.continuation is not None:
            yield turn.continuation
    for labeling in record.labelings:
        if labeling.generation is not None:
            yield labeling.generation
        yield from labeling.rejected_generations
    if record.summary is not None:
        if record.summary.generation is not None:
            yield record.summary.generation
        yield from record.summary.rejected_generations


def engine_seconds(record: RunRecord) -> float:
    """The sum of `generation.seconds` over generations(record)."""
    return sum(g.seconds for g in generations(record))


def restated_headlines(records: list[RunRecord]) -> list[Example]:
    """Headlines of ok summaries that restate their run's question (restates())."""
    return [
        Example(run_id=r.run_id, round=None, panelist=r.summary.summarizer, text=r.summary.headline)
        for r in records
        if r.summary is not None
        and r.summary.status == "ok"
        and restates(r.summary.headline, r.question)
    ]


def ok_turns(records: list[RunRecord]) -> Iterator[tuple[RunRecord, TurnRecord, str]]:
    """(record, turn, answer) for every turn with status ok and a parsed answer."""
    for r in records:
        for t in r.turns:
            if t.status == "ok" and t.parsed is not None:
                yield r, t, t.parsed.answer


def non_positions(records: list[RunRecord]) -> list[Example]:
    """Ok turns whose answer is not a position (is_position())."""
    return [
        Example(run_id=r.run_id, round=t.round, panelist=t.panelist, text=answer)
        for r, t, answer in ok_turns(records)
        if not is_position(answer)
    ]


def changed(turn: TurnRecord) -> bool | None:
    """Whether a turn changed position: `position_changed` when the record labels
    positions (schema 4), else `answer_changed` (any rewording); None when unknown."""
    return turn.position_changed if turn.position_changed is not None else turn.answer_changed


def agreement(records: list[RunRecord]) -> Agreement:
    """Over ok turns of round 2 on with `changed_mind_stated` set and changed() known:
    the share where the stated change equals changed(), and the two ways they differ."""
    n = agree = said_changed = said_kept = by_text = 0
    for _, t, _ in ok_turns(records):
        actual = changed(t)
        if t.round < 2 or t.changed_mind_stated is None or actual is None:
            continue
        n += 1
        by_text += t.position_changed is None
        if t.changed_mind_stated == actual:
            agree += 1
        elif t.changed_mind_stated:
            said_changed += 1
        else:
            said_kept += 1
    return Agreement(
        n=n,
        agree=agree,
        said_changed_same_position=said_changed,
        said_maintained_position_changed=said_kept,
        by_answer_text=by_text,
    )


def _panelists(records: list[RunRecord]) -> list[PanelistModel]:
    seen: list[PanelistModel] = []
    for r in records:
        for p in r.panelists:
            entry = PanelistModel(name=p.name, model=p.model)
            if entry not in seen:
                seen.append(entry)
    return seen


def _verdicts(
    restated: list[Example],
    summaries_ok: int,
    non_pos: list[Example],
    ok: int,
    failed_pct: float | None,
    agreed: Agreement,
) -> Verdicts:
    rate = agreed.rate
    return Verdicts(
        restated=len(restated) <= MAX_RESTATED if summaries_ok else None,
        non_positions=len(non_pos) <= MAX_NON_POSITIONS if ok else None,
        failed_turns=failed_pct <= MAX_FAILED_TURNS_PCT if failed_pct is not None else None,
        agreement=rate >= MIN_AGREEMENT if rate is not None else None,
    )


def panel_quality(panel: str, records: list[RunRecord]) -> PanelQuality:
    """The metrics of one panel's records (those not finished are only counted)."""
    done = [r for r in records if r.status in FINISHED]
    turns = [t for r in done for t in r.turns]
    ok = list(ok_turns(done))
    summaries = [r.summary for r in done]
    summaries_ok = sum(s is not None and s.status == "ok" for s in summaries)
    labelings = [x for r in done for x in r.labelings]
    restated = restated_headlines(done)
    non_pos = non_positions(done)
    agreed = agreement(done)
    failed = sum(t.status == "failed" for t in turns)
    failed_pct = 100 * failed / len(turns) if turns else None
    walls = [w for w in (wall_seconds(r) for r in done) if w is not None]
    return PanelQuality(
        panel=panel,
        panelists=_panelists(records),
        debates=len(done),
        complete=sum(r.status == "complete" for r in done),
        failed=sum(r.status == "failed" for r in done),
        left_out=len(records) - len(done),
        wall_seconds=spread(walls),
        engine_seconds=spread([engine_seconds(r) for r in done]),
        summaries_ok=summaries_ok,
        summaries_failed=len(done) - summaries_ok,
        summary_rejected=sum(len(s.rejected) for s in summaries if s is not None),
        restated=restated,
        turns=len(turns),
        ok_turns=len(ok),
        failed_turns=failed,
        answer_chars=spread([float(len(answer)) for _, _, answer in ok]),
        non_positions=non_pos,
        labelings=len(labelings),
        failed_labelings=sum(x.status == "failed" for x in labelings),
        agreement=agreed,
        verdicts=_verdicts(restated, summaries_ok, non_pos, len(ok), failed_pct, agreed),
    )


def quality(records: list[RunRecord], skipped: list[str] | None = None) -> QualityReport:
    """One PanelQuality per `record.panel`, in the order the panels first appear."""
    if not any(r.status in FINISHED for r in records):
        raise ConfigError(
            f"nothing to measure: none of the {len(records)} runs is finished (complete or failed)"
        )
    panels: dict[str, list[RunRecord]] = {}
    for r in records:
        panels.setdefault(r.panel, []).append(r)
    return QualityReport(
        panels=[panel_quality(name, group) for name, group in panels.items()],
        skipped=skipped or [],
    )
