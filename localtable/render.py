"""Renderers: a run record -> text, Markdown, JSON (and the HTML page).

Renderers need nothing but the stored record. The layouts are Jinja templates
in prompts/; this module only prepares a view of the record for them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from localtable.record import RunRecord, TurnRecord
from localtable.templates import TemplateSet

LAYOUTS = {"text": "layout.txt.j2", "md": "layout.md.j2", "html": "layout.html.j2"}


class TurnView(BaseModel):
    model_config = ConfigDict(frozen=True)
    round: int
    name: str
    model: str
    ok: bool
    status: str
    error: str
    answer: str
    reasoning: str
    changed_mind: bool  # the panelist said so
    answer_changed: bool  # its answer text differs from its previous one
    influenced_by: list[str]
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class RoundtableView(BaseModel):
    model_config = ConfigDict(frozen=True)
    record: RunRecord
    title: str
    headline: str
    consensus: str
    counterpoint: str
    summary: str
    summary_ok: bool
    summary_error: str
    finals: list[TurnView]
    earlier_rounds: list[tuple[int, list[TurnView]]]
    all_rounds: list[tuple[int, list[TurnView]]]


def turn_view(record: RunRecord, turn: TurnRecord) -> TurnView:
    panelist = next(p for p in record.panelists if p.name == turn.panelist)
    g = turn.generation
    return TurnView(
        round=turn.round,
        name=turn.panelist,
        model=panelist.model,
        ok=turn.status == "ok",
        status=turn.status,
        error=turn.error or "",
        answer=turn.parsed.answer if turn.parsed else "",
        reasoning=turn.parsed.reasoning if turn.parsed else "",
        changed_mind=bool(turn.changed_mind_stated),
        answer_changed=bool(turn.answer_changed),
        influenced_by=turn.parsed.influenced_by if turn.parsed else [],
        seconds=g.seconds if g else 0.0,
        prompt_tokens=g.prompt_tokens if g else 0,
        completion_tokens=g.completion_tokens if g else 0,
        finish_reason=(g.finish_reason or "") if g else "",
    )


def build_view(record: RunRecord) -> RoundtableView:
    rounds: list[tuple[int, list[TurnView]]] = []
    for r in range(1, record.rounds + 1):
        turns = [t for p in record.panelists if (t := record.turn(r, p.name)) is not None]
        if turns:
            rounds.append((r, [turn_view(record, t) for t in turns]))
    finals = [turn_view(record, t) for t in record.final_turns()]
    s = record.summary
    return RoundtableView(
        record=record,
        title=f"AI Roundtable Open Debate · {len(record.panelists)} models",
        headline=s.headline if s and s.status == "ok" else "",
        consensus=s.consensus.line if s else "No consensus",
        counterpoint=s.counterpoint if s else "",
        summary=s.summary if s else "",
        summary_ok=bool(s and s.status == "ok"),
        summary_error=(s.error or "") if s else "the run ended before the summary",
        finals=finals,
        earlier_rounds=rounds[:-1],
        all_rounds=rounds,
    )


def render(record: RunRecord, fmt: str, templates: TemplateSet, layout: str | None = None) -> str:
    """The record in a format; layout names a user template that replaces the built-in one."""
    if fmt == "json" and layout is None:
        return record.model_dump_json(indent=2) + "\n"
    return templates.render(layout or LAYOUTS[fmt], v=build_view(record))
