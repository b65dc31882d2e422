"""Renderers: a run record -> text, Markdown, JSON and the HTML page.

Renderers need nothing but the stored record. The layouts are Jinja templates
in prompts/; this module only prepares a view of the record for them (the
fields below are the variables a layout sees, documented in docs/report.md).
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from localtable.record import Generation, RunRecord, TurnRecord, transcript_mismatch
from localtable.templates import TemplateSet

LAYOUTS = {"text": "layout.txt.j2", "md": "layout.md.j2", "html": "layout.html.j2"}
SHORT_ANSWER_CHARS = 140
SHORT_NAME_CHARS = 18

Mark = Literal["held", "stated", "answer", "failed", "missing"]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class TurnView(View):
    """One panelist's turn in one round."""

    round: int
    index: int = Field(description="the panelist's position in the panel, from 0")
    name: str
    model: str
    ok: bool
    status: str = Field(description="ok, failed or interrupted")
    error: str = Field(description="why the turn failed; empty when ok")
    answer: str
    short_answer: str = Field(description=f"the answer cut to {SHORT_ANSWER_CHARS} characters")
    reasoning: str
    changed_mind: bool = Field(description="the panelist said it changed its mind")
    answer_changed: bool = Field(description="its answer text differs from its previous one")
    mark: Mark = Field(description="held, stated (changed mind), answer (text changed), failed")
    position: str = Field(description="the summary's position letter (final turns only), or ''")
    slot: int = Field(description="colour slot of the position (0-7), -1 when none")
    influenced_by: list[str] = Field(description="panelist names it says influenced it")
    seed: int | None
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class PositionView(View):
    """One position of the final summary and who holds it."""

    letter: str = Field(description="A, B, ... in the summary's order")
    slot: int = Field(description="colour slot 0-7 (the letter's index)")
    text: str
    members: list[str]


class ChartCell(View):
    round: int
    mark: Mark
    position: str = Field(description="position letter (final turn in a summary group), or ''")
    slot: int = Field(description="colour slot of the position, -1 when none")
    tooltip: str = Field(description="round, name, status and the short answer")


class ChartRow(View):
    index: int
    name: str
    short_name: str = Field(description=f"the name cut to {SHORT_NAME_CHARS} characters")
    cells: list[ChartCell] = Field(description="one per round, in order")


class StanceChart(View):
    """Panelists by rounds: each position and who changed when."""

    rounds: list[int]
    rows: list[ChartRow]


class GenerationRow(View):
    """One engine call (a turn or the summary) for the details table."""

    stage: str = Field(description="'Round N' or 'Summary'")
    name: str
    status: str
    seed: int | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str
    shortened: list[str] = Field(description="context rules applied to fit the prompt")


class BackendFact(View):
    """One line of what a backend reported about itself (the record's `backends`)."""

    label: str = Field(description="the backend, the fact, and for a server its URL")
    text: str = Field(description="the value as plain text; a file's sha256 cut to 12 digits")


class RoundtableView(View):
    """Everything a layout template sees, as `v`."""

    record: RunRecord = Field(description="the full run record (models, engine, seeds, ...)")
    title: str
    headline: str = Field(description="the summary's headline answer; '' without a summary")
    consensus: str = Field(description="the consensus line, e.g. 'All 3 models agreed'")
    consensus_kind: str = Field(description="all, majority or none")
    counterpoint: str
    summary: str
    summary_ok: bool
    summary_error: str
    positions: list[PositionView]
    finals: list[TurnView] = Field(description="each panelist's last turn, in panel order")
    earlier_rounds: list[tuple[int, list[TurnView]]] = Field(
        description="(round, turns) for every round before the last"
    )
    all_rounds: list[tuple[int, list[TurnView]]]
    chart: StanceChart
    generations: list[GenerationRow]
    backend_facts: list[BackendFact] = Field(description="the record's `backends`, flattened")
    total_seconds: float
    total_prompt_tokens: int
    total_completion_tokens: int


def shorten(text: str, limit: int) -> str:
    """Text on one line, cut at a word boundary to at most `limit` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "…"


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s|$)")


def at_limit(text: str, limit: int | None) -> bool:
    """Whether a line reached the grammar's character limit as the record keeps it
    (parsing strips a space the model may have ended it with)."""
    return limit is not None and len(text) >= limit - 1


def whole_sentences(text: str, cut: bool) -> str:
    """Text that a length cap cut off (`cut`) mid-sentence, ended at its last full
    sentence, or marked with an ellipsis when that would drop most of it. The
    record keeps the text as generated; this is only how it is shown."""
    text = text.strip()
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not cut or not text or (ends and ends[-1] == len(text)):
        return text
    if ends and ends[-1] >= len(text) // 3:
        return text[: ends[-1]]
    return text.rstrip(" ,;:-–") + "…"


def turn_mark(turn: TurnRecord) -> Mark:
    if turn.status != "ok":
        return "failed"
    if turn.position_changed is not None:  # labelled positions: counted, not stated
        return "stated" if turn.position_changed else "held"
    if turn.changed_mind_stated:
        return "stated"
    if turn.answer_changed:
        return "answer"
    return "held"


def position_letters(record: RunRecord) -> dict[str, str]:
    """Panelist name -> the letter of its final position: its labelled position, or
    (choice and number questions, older records) its group in the summary."""
    if record.positions:
        return {t.panelist: t.position for t in record.final_turns() if t.position}
    s = record.summary
    if s is None or s.status != "ok":
        return {}
    return {name: letter(i) for i, g in enumerate(s.groups) for name in g.members}


def letter(i: int) -> str:
    return "ABCDEFGH"[i] if i < 8 else str(i + 1)


def position_slot(position: str) -> int:
    return "ABCDEFGH".index(position) if position and position in "ABCDEFGH" else -1


def turn_view(record: RunRecord, turn: TurnRecord, position: str = "") -> TurnView:
    panelist = next(p for p in record.panelists if p.name == turn.panelist)
    g = turn.generation
    answer = turn.parsed.answer if turn.parsed else ""
    reasoning = turn.parsed.reasoning if turn.parsed else ""
    if turn.answer_cut is not None:  # known: a cut one ends with "…"
        answer = turn.answer_shown
    elif record.question_kind == "open":  # a choice or a number is complete as it is
        # older records: the grammar ended an answer at this length
        answer = whole_sentences(answer, at_limit(answer, turn.answer_max_chars))
    if turn.reasoning_cut is not None:  # known: a cut one ends with "…"
        reasoning = turn.reasoning_shown
    else:  # older records: max_tokens ended the reasoning
        reasoning = whole_sentences(reasoning, bool(g and g.finish_reason == "length"))
    return TurnView(
        round=turn.round,
        index=panelist.index,
        name=turn.panelist,
        model=panelist.model,
        ok=turn.status == "ok",
        status=turn.status,
        error=turn.error or "",
        answer=answer,
        short_answer=shorten(answer, SHORT_ANSWER_CHARS),
        reasoning=reasoning,
        changed_mind=turn_mark(turn) == "stated",
        answer_changed=bool(turn.answer_changed) and turn.position_changed is None,
        mark=turn_mark(turn),
        position=position if turn.status == "ok" else "",
        slot=position_slot(position) if turn.status == "ok" else -1,
        influenced_by=turn.parsed.influenced_by if turn.parsed else [],
        seed=g.seed if g else None,
        seconds=g.seconds if g else 0.0,
        prompt_tokens=g.prompt_tokens if g else 0,
        completion_tokens=g.completion_tokens if g else 0,
        finish_reason=(g.finish_reason or "") if g else "",
    )


def cell_tooltip(t: TurnView) -> str:
    head = f"Round {t.round} · {t.name}"
    if not t.ok:
        return f"{head}: {t.status}: {shorten(t.error, SHORT_ANSWER_CHARS)}"
    note = {
        "stated": " (changed mind)",
        "answer": " (answer changed)",
        "held": "",
        "failed": "",
        "missing": "",
    }
    where = f" [position {t.position}]" if t.position else ""
    return f"{head}{note[t.mark]}{where}: {t.short_answer}"


def build_chart(record: RunRecord, finals: list[TurnView]) -> StanceChart:
    final_round = {t.name: t.round for t in finals}
    letters = position_letters(record)
    rows = []
    for p in record.panelists:
        cells = []
        for r in range(1, record.rounds + 1):
            turn = record.turn(r, p.name)
            if turn is None:
                cells.append(
                    ChartCell(
                        round=r,
                        mark="missing",
                        position="",
                        slot=-1,
                        tooltip=f"Round {r} · {p.name}: no turn (the run ended before it)",
                    )
                )
                continue
            final = final_round.get(p.name) == r
            position = letters.get(p.name, "") if final else ""
            if record.positions:  # labelled: every round has its letter
                position = turn.position or ""
            t = turn_view(record, turn, position)
            cells.append(
                ChartCell(
                    round=r,
                    mark=t.mark,
                    position=t.position,
                    slot=t.slot,
                    tooltip=cell_tooltip(t),
                )
            )
        rows.append(
            ChartRow(
                index=p.index,
                name=p.name,
                short_name=shorten(p.name, SHORT_NAME_CHARS),
                cells=cells,
            )
        )
    return StanceChart(rounds=list(range(1, record.rounds + 1)), rows=rows)


def generation_row(stage: str, name: str, status: str, g: Generation | None) -> GenerationRow:
    return GenerationRow(
        stage=stage,
        name=name,
        status=status,
        seed=g.seed if g else None,
        prompt_tokens=g.prompt_tokens if g else 0,
        completion_tokens=g.completion_tokens if g else 0,
        seconds=g.seconds if g else 0.0,
        finish_reason=(g.finish_reason or "") if g else "",
        shortened=g.shortened if g else [],
    )


def build_generations(record: RunRecord) -> list[GenerationRow]:
    order = {p.name: p.index for p in record.panelists}
    turns = sorted(record.turns, key=lambda t: (t.round, order.get(t.panelist, 0)))
    rows = []
    for r in range(1, record.rounds + 1):
        for t in (t for t in turns if t.round == r):
            rows.append(generation_row(f"Round {t.round}", t.panelist, t.status, t.generation))
            if t.continuation is not None:
                stage = f"Round {t.round}, continued"
                rows.append(generation_row(stage, t.panelist, t.status, t.continuation))
        if (x := record.labeling(r)) is not None:
            for g in x.rejected_generations:
                rows.append(generation_row(f"Labels {r}", x.labeller, "rejected", g))
            if x.generation is not None:
                rows.append(generation_row(f"Labels {r}", x.labeller, x.status, x.generation))
    for t in record.samples:  # vote mode: round-1 answers drawn again, seen by no peer
        rows.append(generation_row("Sample of round 1", t.panelist, t.status, t.generation))
        if t.continuation is not None:
            stage = "Sample of round 1, continued"
            rows.append(generation_row(stage, t.panelist, t.status, t.continuation))
    s = record.summary
    if s is not None:
        rows.append(generation_row("Summary", s.summarizer, s.status, s.generation))
    return rows


SHORT_HASH_CHARS = 12


def fact_text(value: JsonValue) -> str:
    """A value a backend described, as one plain string: text as it is, anything else
    (a number, a list, a table from a hand-edited record) as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


def backend_facts(record: RunRecord) -> list[BackendFact]:
    """The record's `backends` as label/text lines. Each backend describes itself in its
    own shape (llama.cpp: a table of library sha256; llama-server: a table per server
    URL), and a shared record may hold any JSON there: the layout gets plain strings."""
    facts = []
    for name, described in sorted(record.backends.items()):
        for key, value in sorted(described.items()):
            label = f"{name} {key}"
            if not isinstance(value, dict):
                facts.append(BackendFact(label=label, text=fact_text(value)))
            elif all(isinstance(v, str) for v in value.values()):
                # file -> sha256 (llama.cpp's libraries): the first digits tell builds apart
                pairs = (f"{k} {str(v)[:SHORT_HASH_CHARS]}" for k, v in sorted(value.items()))
                facts.append(BackendFact(label=label, text=", ".join(pairs)))
            else:  # e.g. llama-server's: URL -> what that server reported
                for k, v in sorted(value.items()):
                    text = (
                        " ".join(f"{kk}={fact_text(vv)}" for kk, vv in sorted(v.items()))
                        if isinstance(v, dict)
                        else fact_text(v)
                    )
                    facts.append(BackendFact(label=f"{label} {k}", text=text))
    return facts


def _no_summary(record: RunRecord) -> str:
    """Why a record has no summary at all."""
    if record.protocol is not None and not record.protocol.settings.summary:
        return f"the protocol {record.protocol.name} has none"
    return "the run ended before the summary"


def build_view(record: RunRecord) -> RoundtableView:
    def summary_line(text: str) -> str:  # a choice or a number is complete as it is
        cut = at_limit(text, line_max)  # where the grammar ends a line
        return whole_sentences(text, cut) if record.question_kind == "open" else text

    line_max = record.summary.line_max_chars if record.summary else None
    letters = position_letters(record)
    rounds: list[tuple[int, list[TurnView]]] = []
    for r in range(1, record.rounds + 1):
        turns = [t for p in record.panelists if (t := record.turn(r, p.name)) is not None]
        if turns:
            rounds.append((r, [turn_view(record, t) for t in turns]))
    finals = [turn_view(record, t, letters.get(t.panelist, "")) for t in record.final_turns()]
    s = record.summary
    summary_ok = bool(s and s.status == "ok")
    positions = (
        [
            PositionView(
                letter=letter(i), slot=i % 8, text=summary_line(g.position), members=g.members
            )  # fmt: skip
            for i, g in enumerate(s.groups)
        ]
        if s and summary_ok
        else []
    )
    if record.positions and s is not None:  # labelled: the groups are counted in code
        positions = [
            PositionView(
                letter=(at := letters.get(g.members[0], "")),
                slot=position_slot(at),
                text=g.position,
                members=g.members,
            )
            for g in s.groups
        ]
    counterpoint = summary_text = ""
    if s is not None:
        # free text in any kind of question: a line a length cap stopped is marked "…"
        counterpoint, summary_text = s.shown("counterpoint"), s.shown("summary")
    generations = build_generations(record)
    return RoundtableView(
        record=record,
        title=f"AI Roundtable Open Debate · {len(record.panelists)} models",
        # a choice or a number is complete as it is
        headline=(s.shown("headline") if record.question_kind == "open" else s.headline)
        if s and summary_ok
        else "",
        consensus=s.consensus.line if s else "No consensus",
        consensus_kind=s.consensus.kind if s else "none",
        counterpoint=counterpoint,
        summary=summary_text,
        summary_ok=summary_ok,
        summary_error=(s.error or "") if s else _no_summary(record),
        positions=positions,
        finals=finals,
        earlier_rounds=rounds[:-1],
        all_rounds=rounds,
        chart=build_chart(record, finals),
        generations=generations,
        backend_facts=backend_facts(record),
        total_seconds=round(sum(g.seconds for g in generations), 3),
        total_prompt_tokens=sum(g.prompt_tokens for g in generations),
        total_completion_tokens=sum(g.completion_tokens for g in generations),
    )


_RAW_CONTROL = re.compile(r"[\x7f-\x9f]")


def json_text(text: str) -> str:
    """JSON with DEL and the C1 control characters escaped as well (JSON escapes only
    those below 0x20): a shared record printed to a terminal cannot drive it. They can
    only occur inside strings, where \\u escapes mean the same characters."""
    return _RAW_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def changed_after_run(record: RunRecord, fmt: str) -> tuple[RunRecord, str | None]:
    """A shared record edited after its run: the warning to give, and the record with a
    note on its transcript hash for the report (json shows the record as it is)."""
    actual = transcript_mismatch(record)
    if actual is None:
        return record, None
    recorded = record.transcript_sha256 or ""
    warning = (
        f"Warning: run {record.run_id} was changed after it ran: its transcript hashes to "
        f"{actual[:12]}..., not the recorded {recorded[:12]}...; the report shows it as it "
        "is now"
    )
    if fmt != "json":
        note = f"{recorded} (does not match the record's content, which hashes to {actual})"
        record = record.model_copy(update={"transcript_sha256": note})
    return record, warning


def check_layout(templates: TemplateSet, fmt: str, layout: str | None = None) -> None:
    """Fail early (before a run) when the layout template for fmt does not compile."""
    if fmt == "json" and layout is None:
        return
    templates.compile(layout or LAYOUTS[fmt])


def render(record: RunRecord, fmt: str, templates: TemplateSet, layout: str | None = None) -> str:
    """The record in a format; layout names a user template that replaces the built-in one.

    HTML layouts are autoescaped, Markdown layouts neutralise raw HTML and links
    in every value they print, and every layout drops terminal control characters
    (see TemplateSet.render_layout): by the format, not by the file's name. JSON
    escapes them.
    """
    if fmt == "json" and layout is None:
        return json_text(record.model_dump_json(indent=2)) + "\n"
    return templates.render_layout(layout or LAYOUTS[fmt], fmt, v=build_view(record))
