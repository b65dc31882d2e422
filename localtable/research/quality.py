"""Is a panel's output usable? Form metrics of finished debates, per panel (`make quality`).

The measurement of issue #12, from run records alone: does the summary's
headline say something the question did not, is each `Answer:` line a
position, how many turns fail, and does a panelist that says it changed its
mind hold another position. Issue #26 adds what the reader is told against
the record: summary claims the record contradicts, reasoning and answers cut
without a mark, answers against their position's label, bare answers; and, only when
asked (session/judge.py loads a model), answers against their own reasoning.
It measures form, never who is right, so it needs no answer key; `make
quality` runs it on the built-in `quality` task.

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

from localtable.debate.answers import ReasoningVerdict, bare_answer, stance
from localtable.debate.claims import contradictions, record_facts
from localtable.debate.parsing import (
    RESTATES_OVERLAP,
    answer_line_cut,
    multiline_reasoning,
    raw_reasoning,
    reasoning_finished,
    restates_question,
    word_overlap,
)
from localtable.debate.protocol import reasoning_max_chars
from localtable.errors import ConfigError
from localtable.record import Generation, RunRecord, SummaryLine, TurnRecord

FINISHED = ("complete", "failed")
RESTATE_OVERLAP = RESTATES_OVERLAP  # 0.8: a headline this close to the question restates it
MAX_RESTATED = 0  # headlines that restate the question
MAX_NON_POSITIONS = 0  # answers that are not positions
MAX_FAILED_TURNS_PCT = 2.0  # failed turns, percent of all turns
MIN_AGREEMENT = 0.9  # stated "changed mind" agreeing with a change of position
# issue #26: what the reader is told is what the record shows
MAX_FALSE_CLAIMS = 0  # summary claims the record contradicts
MAX_UNMARKED_CUTS = 0  # reasoning or summary lines a length cap stopped, shown without "…"
MAX_UNMARKED_ANSWERS = 0  # answers the grammar's bound stopped, shown without "…"
MAX_LABEL_CONTRADICTIONS = 0  # a "No" answer on a "Yes" position, or the other way
MAX_BARE = 0  # a bare "Yes" or "No"


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


class ReasoningStances(Quality):
    """Turns whose answer opens with yes or no, against the answer their own reasoning
    concludes as the summarizer's model read it (session/judge.py): no target."""

    judged: int
    opposite: list[Example] = Field(description="the reasoning concludes the other way")
    neither: int = Field(description="the reasoning concludes neither yes nor no")
    failed: int = Field(description="turns the model could not be asked about")


class Verdicts(Quality):
    """Each target met (True), missed (False), or nothing to judge it on (None)."""

    restated: bool | None
    non_positions: bool | None
    failed_turns: bool | None
    agreement: bool | None
    false_claims: bool | None = None
    unmarked_cuts: bool | None = None
    unmarked_answers: bool | None = None
    label_contradictions: bool | None = None
    bare: bool | None = None


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
    false_claims: list[Example] = Field(
        default_factory=list, description="claims of ok summaries the record contradicts"
    )
    cut_reasonings: int = 0  # and cut summary lines (unmarked_cuts)
    unmarked_cuts: list[Example] = Field(default_factory=list)
    cut_answers: int = 0
    unmarked_answers: list[Example] = Field(default_factory=list)
    placed_answers: int = Field(default=0, description="ok turns with a labelled position")
    label_contradictions: list[Example] = Field(default_factory=list)
    open_answers: int = 0
    bare_answers: list[Example] = Field(default_factory=list)
    reasoning_stances: ReasoningStances | None = Field(
        default=None, description="only when asked for (localtable quality --judge-reasoning)"
    )
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


def false_claims(records: list[RunRecord]) -> list[Example]:
    """Each claim of an ok summary that the record contradicts, as debate/claims.py
    reads them: a panelist said to have changed or kept its position against the
    counted positions (positions.changes), "nobody changed" when someone did, a
    majority panelist named as the counterpoint's source while there is a minority,
    a dissent when all agreed. The protocol refuses such summaries since issue #26;
    older records were not checked."""
    out = []
    for r in records:
        s = r.summary
        if s is None or s.status != "ok":
            continue
        for problem in contradictions(s.summary, s.counterpoint, record_facts(r), s.headline):
            out.append(Example(run_id=r.run_id, round=None, panelist=s.summarizer, text=problem))
    return out


def reasoning_cut(record: RunRecord, turn: TurnRecord) -> bool:
    """Whether a length cap stopped an ok turn's reasoning: `reasoning_cut` where the
    record keeps it, else read off the record: the grammar's character bound
    (protocol.reasoning_max_chars of the panelist's max_tokens) reached, or max_tokens
    ending the generation inside the reasoning (continued after it)."""
    if turn.reasoning_cut is not None:
        return turn.reasoning_cut
    if turn.parsed is None or turn.generation is None or turn.parsed.order[:1] != ["reasoning"]:
        return False  # answer-first records (schema before 4): no such cap on the reasoning
    multiline = multiline_reasoning(record.question_kind)
    order = turn.parsed.order
    if turn.continuation is not None and not reasoning_finished(
        turn.generation.raw_output, order, multiline=multiline
    ):
        return True
    panelist = next((p for p in record.panelists if p.name == turn.panelist), None)
    if panelist is None:
        return False
    bound = reasoning_max_chars(panelist.sampling.max_tokens, record.question_kind)
    return len(raw_reasoning(turn.text, order, multiline=multiline)) >= bound


def _shown_unmarked(record: RunRecord, turn: TurnRecord, field: str, kept: str, shown: str) -> bool:
    """A cut `field` ("Reasoning", "Answer") shown without "…": in the layouts (`shown`:
    what they print where the record knows the cut, else `kept`, the text as parsed),
    or in a later round's prompt as the record keeps it (the peers' view: "Field: <it>"
    then the next line)."""
    if not shown.rstrip().endswith("…"):
        return True
    if kept.rstrip().endswith("…"):
        return False
    seen = f"{field}: {kept}\n"
    return any(
        t.generation is not None and seen in t.generation.prompt
        for t in record.turns
        if t.round == turn.round + 1 and t.panelist != turn.panelist
    )


def unmarked_cuts(records: list[RunRecord]) -> tuple[int, list[Example]]:
    """(ok turns whose reasoning a length cap stopped (reasoning_cut()) and ok summaries'
    lines that one stopped (SummaryRecord.line_cut: a choice or number headline is
    complete as it is), those of them shown without a closing "…" (_shown_unmarked;
    a summary's line as the layouts show it), with the text's last words)."""
    cut = 0
    out = []
    for r in records:
        s = r.summary
        if s is None or s.status != "ok":
            continue
        lines: list[SummaryLine] = ["summary", "counterpoint"]
        if r.question_kind == "open":
            lines.append("headline")
        for line in lines:
            if not s.line_cut(line):
                continue
            cut += 1
            if not s.shown(line).rstrip().endswith("…"):
                text = f"{line}: {getattr(s, line)[-60:]}"
                out.append(Example(run_id=r.run_id, round=None, panelist=s.summarizer, text=text))
    for r, t, _ in ok_turns(records):
        if not reasoning_cut(r, t):
            continue
        cut += 1
        reasoning = t.parsed.reasoning if t.parsed else ""
        shown = t.reasoning_shown if t.reasoning_cut is not None else reasoning
        if _shown_unmarked(r, t, "Reasoning", reasoning, shown):
            tail = reasoning[-60:]
            out.append(Example(run_id=r.run_id, round=t.round, panelist=t.panelist, text=tail))
    return cut, out


def answer_cut(record: RunRecord, turn: TurnRecord) -> bool:
    """Whether the grammar's character bound stopped an ok turn's open answer:
    `answer_cut` where the record keeps it, else read off the record: in records made
    with issue #26's answer grammar (they keep `reasoning_cut`), its tail's bound
    reached (parsing.answer_line_cut); before it, the line at its character bound."""
    if turn.answer_cut is not None:
        return turn.answer_cut
    if record.question_kind != "open" or turn.parsed is None or turn.answer_max_chars is None:
        return False
    if turn.reasoning_cut is not None:
        return answer_line_cut(turn.text, record.question_kind, turn.answer_max_chars)
    return len(turn.parsed.answer) >= turn.answer_max_chars - 1


def unmarked_answers(records: list[RunRecord]) -> tuple[int, list[Example]]:
    """(ok turns whose answer the grammar's bound stopped (answer_cut()), those of them
    shown without a closing "…" (_shown_unmarked), with the answer's last words)."""
    cut = 0
    out = []
    for r, t, answer in ok_turns(records):
        if not answer_cut(r, t):
            continue
        cut += 1
        shown = t.answer_shown if t.answer_cut is not None else answer
        if _shown_unmarked(r, t, "Answer", answer, shown):
            out.append(Example(run_id=r.run_id, round=t.round, panelist=t.panelist,
                               text=answer[-60:]))  # fmt: skip
    return cut, out


def label_contradictions(records: list[RunRecord]) -> tuple[int, list[Example]]:
    """(ok turns with a labelled position, those whose answer opens with "yes" and the
    position's label with "no", or the other way: answers.stance of each)."""
    placed = 0
    out = []
    for r, t, answer in ok_turns(records):
        if t.position is None:
            continue
        placed += 1
        mine, theirs = stance(answer), stance(r.label(t.position) or "")
        if mine is not None and theirs is not None and mine != theirs:
            text = f"{answer} (position {t.position}: {r.label(t.position)})"
            out.append(Example(run_id=r.run_id, round=t.round, panelist=t.panelist, text=text))
    return placed, out


def bare_answers(records: list[RunRecord]) -> tuple[int, list[Example]]:
    """(ok turns of open questions, those whose answer is a bare yes or no:
    answers.bare_answer, a leading yes/no with fewer than two words after it)."""
    n = 0
    out = []
    for r, t, answer in ok_turns(records):
        if r.question_kind != "open":
            continue
        n += 1
        if bare_answer(answer):
            out.append(Example(run_id=r.run_id, round=t.round, panelist=t.panelist, text=answer))
    return n, out


def reasoning_stances(verdicts: list[ReasoningVerdict]) -> dict[str, ReasoningStances]:
    """Per panel: the yes/no answers the model judged, those whose reasoning concludes
    the other way (opposite), or neither, and those it could not be asked about."""
    out: dict[str, ReasoningStances] = {}
    for v in verdicts:
        seen = out.get(v.panel) or ReasoningStances(judged=0, opposite=[], neither=0, failed=0)
        opposite = list(seen.opposite)
        if v.concluded in ("yes", "no") and v.concluded != stance(v.answer):
            text = f"{v.answer} (its reasoning concludes {v.concluded})"
            opposite.append(Example(run_id=v.run_id, round=v.round, panelist=v.panelist,
                                    text=text))  # fmt: skip
        out[v.panel] = ReasoningStances(
            judged=seen.judged + (v.concluded is not None),
            opposite=opposite,
            neither=seen.neither + (v.concluded == "neither"),
            failed=seen.failed + (v.concluded is None),
        )
    return out


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


def panel_quality(
    panel: str, records: list[RunRecord], judged: ReasoningStances | None = None
) -> PanelQuality:
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
    claims = false_claims(done)
    cut, unmarked = unmarked_cuts(done)
    cut_answers, unmarked_answer_list = unmarked_answers(done)
    placed, contradicting = label_contradictions(done)
    open_answers, bare = bare_answers(done)
    verdicts = _verdicts(restated, summaries_ok, non_pos, len(ok), failed_pct, agreed)
    verdicts = verdicts.model_copy(
        update={
            "false_claims": len(claims) <= MAX_FALSE_CLAIMS if summaries_ok else None,
            "unmarked_cuts": len(unmarked) <= MAX_UNMARKED_CUTS if ok else None,
            "unmarked_answers": len(unmarked_answer_list) <= MAX_UNMARKED_ANSWERS if ok else None,
            "label_contradictions": len(contradicting) <= MAX_LABEL_CONTRADICTIONS
            if placed
            else None,
            "bare": len(bare) <= MAX_BARE if open_answers else None,
        }
    )
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
        false_claims=claims,
        cut_reasonings=cut,
        unmarked_cuts=unmarked,
        cut_answers=cut_answers,
        unmarked_answers=unmarked_answer_list,
        placed_answers=placed,
        label_contradictions=contradicting,
        open_answers=open_answers,
        bare_answers=bare,
        reasoning_stances=judged,
        verdicts=verdicts,
    )


def quality(
    records: list[RunRecord],
    skipped: list[str] | None = None,
    judged: list[ReasoningVerdict] | None = None,
) -> QualityReport:
    """One PanelQuality per `record.panel`, in the order the panels first appear;
    `judged`: the turns' reasoning as a model read it (session/judge.py), if asked."""
    if not any(r.status in FINISHED for r in records):
        raise ConfigError(
            f"nothing to measure: none of the {len(records)} runs is finished (complete or failed)"
        )
    stances = reasoning_stances(judged) if judged is not None else {}
    panels: dict[str, list[RunRecord]] = {}
    for r in records:
        panels.setdefault(r.panel, []).append(r)
    return QualityReport(
        panels=[panel_quality(name, group, stances.get(name)) for name, group in panels.items()],
        skipped=skipped or [],
    )
