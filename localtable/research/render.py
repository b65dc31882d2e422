"""Renderers for comparisons and quality: text, Markdown, CSV and HTML; the tables of all.

The layouts are Jinja templates in prompts/ (compare.*.j2, quality.*.j2); this
module only turns a Comparison or a QualityReport into rows of display strings
for them (scoreview.py does the same for a BatchScore, with this module's
Table). CSV is written with the csv module (a data format, not a layout): one
tidy table whose first column names the table a row belongs to.
"""

from __future__ import annotations

import csv
import io
from typing import Literal

from pydantic import BaseModel, ConfigDict

from localtable.research import quality as q
from localtable.research.compare import Comparison, PositionRow
from localtable.templates import TemplateSet, text_value

CompareFormat = Literal["text", "md", "csv", "html"]
QualityFormat = Literal["text", "md"]
ANSWER_CHARS = 40
HEAT_CELL = 72  # pixels of one heatmap square
HEAT_LABEL = 150  # pixels left of (and above) the squares for the names


class Table(BaseModel):
    """Rows of display strings, with column widths and alignment for text layouts."""

    model_config = ConfigDict(frozen=True)
    header: list[str]
    rows: list[list[str]]
    aligns: list[str]  # "l" or "r" per column

    @property
    def widths(self) -> list[int]:
        return [max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))]


def short(text: str, limit: int = ANSWER_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- compare ----------------------------------------------------------------


class HeatCell(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: int
    y: int
    fill: str
    ink: str
    label: str
    title: str


def heat_color(rate: float | None) -> tuple[str, str]:
    """Fill and text colour: white (0%) to dark blue (100%); grey when not compared."""
    if rate is None:
        return "#e5e7eb", "#6b7280"
    low, high = (247, 251, 255), (8, 69, 148)
    rgb = [round(lo + (hi - lo) * rate) for lo, hi in zip(low, high, strict=True)]
    return "#{:02x}{:02x}{:02x}".format(*rgb), "#ffffff" if rate > 0.55 else "#111827"


def agreement_table(c: Comparison) -> Table:
    rows = []
    for a in c.panelists:
        row = [a]
        for b in c.panelists:
            pair = c.pair(a, b)
            if a == b:
                row.append("-")
            elif pair is None or pair.rate is None:
                row.append("n/a")
            else:
                row.append(f"{100 * pair.rate:.0f}% ({pair.agree}/{pair.compared})")
        rows.append(row)
    return Table(header=["", *c.panelists], rows=rows, aligns=["l", *["r"] * len(c.panelists)])


def heat_cells(c: Comparison) -> list[HeatCell]:
    cells = []
    for i, a in enumerate(c.panelists):
        for j, b in enumerate(c.panelists):
            pair = c.pair(a, b)
            rate = None if a == b else (pair.rate if pair else None)
            fill, ink = ("#9ca3af", "#111827") if a == b else heat_color(rate)
            label = "" if a == b else ("n/a" if rate is None else f"{100 * rate:.0f}%")
            detail = f"{pair.agree} of {pair.compared} runs" if pair and a != b else "itself"
            cells.append(
                HeatCell(
                    x=HEAT_LABEL + j * HEAT_CELL,
                    y=HEAT_LABEL + i * HEAT_CELL,
                    fill=fill,
                    ink=ink,
                    label=label,
                    title=f"{a} and {b}: {detail}",
                )  # fmt: skip
            )
    return cells


def moves_table(c: Comparison) -> Table:
    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} x{v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "-"

    rows = [
        [
            m.panelist,
            f"{m.changed} of {m.turns}",
            f"{100 * m.changed / m.turns:.0f}%" if m.turns else "-",
            counts(m.towards),
            counts(m.said_influenced),
        ]
        for m in c.moves
    ]
    return Table(
        header=["PANELIST", "CHANGED", "RATE", "TOWARDS (TOOK THEIR ANSWER)", "SAID INFLUENCED BY"],
        rows=rows,
        aligns=["l", "r", "r", "l", "l"],
    )


def _cell_text(row: PositionRow, i: int) -> str:
    cell = row.cells[i]
    if cell.status != "ok":
        return f"({cell.status})"
    text = short(cell.answer)
    if cell.group:
        text = f"{cell.group}: {text}"
    if cell.correct is not None:
        text += " ✓" if cell.correct else " ✗"
    return text


def positions_table(c: Comparison) -> Table:
    rows = []
    for row in c.positions:
        by_name = {cell.panelist: k for k, cell in enumerate(row.cells)}
        cells = [_cell_text(row, by_name[n]) if n in by_name else "" for n in c.panelists]
        rows.append([row.question_id, str(row.seed), row.answer_key or "-", *cells])
    return Table(
        header=["QUESTION", "SEED", "KEY", *c.panelists],
        rows=rows,
        aligns=["l", "r", "r", *["l"] * len(c.panelists)],
    )


def compare_csv(c: Comparison) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["table", "question_id", "seed", "run_id", "panelist", "other", "answer",
                "correct", "count", "total", "rate"])  # fmt: skip
    for p in c.pairs:
        rate = "" if p.rate is None else f"{p.rate:.4f}"
        w.writerow(["agreement", "", "", "", p.a, p.b, "", "", p.agree, p.compared, rate])
    for m in c.moves:
        rate = f"{m.changed / m.turns:.4f}" if m.turns else ""
        w.writerow(["changed", "", "", "", m.panelist, "", "", "", m.changed, m.turns, rate])
        for peer, n in m.towards.items():
            w.writerow(["towards", "", "", "", m.panelist, peer, "", "", n, m.changed, ""])
        for peer, n in m.said_influenced.items():
            w.writerow(["said_influenced", "", "", "", m.panelist, peer, "", "", n, "", ""])
    for row in c.positions:
        for cell in row.cells:
            correct = "" if cell.correct is None else ("yes" if cell.correct else "no")
            w.writerow(["position", row.question_id, row.seed, row.run_id, cell.panelist,
                        cell.group, cell.answer, correct, "", "", ""])  # fmt: skip
    return out.getvalue()


def render_comparison(c: Comparison, fmt: CompareFormat, templates: TemplateSet) -> str:
    if fmt == "csv":
        return str(text_value(compare_csv(c)))  # no terminal control characters from records
    layout = {"text": "compare.txt.j2", "md": "compare.md.j2", "html": "compare.html.j2"}[fmt]
    size = HEAT_LABEL + HEAT_CELL * len(c.panelists) + 10
    return templates.render_layout(
        layout,
        fmt,
        comparison=c,
        agreement=agreement_table(c),
        moves=moves_table(c),
        positions=positions_table(c),
        heat=heat_cells(c),
        heat_size=size,
        heat_cell=HEAT_CELL,
        heat_label=HEAT_LABEL,
    )


# -- quality ----------------------------------------------------------------

EXAMPLES = 5  # offending headlines and answers quoted per panel
EXAMPLE_CHARS = 80


class PanelView(BaseModel):
    """One panel of the quality report as its layout shows it."""

    model_config = ConfigDict(frozen=True)
    quality: q.PanelQuality
    table: Table
    notes: list[str]


def _num(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else f"{x:.1f}"


def _spread(s: q.Spread) -> str:
    if s.median is None or s.max is None:
        return "-"
    return f"median {_num(s.median)}, max {_num(s.max)}"


def _met(verdict: bool | None) -> str:
    return "n/a" if verdict is None else ("pass" if verdict else "FAIL")


def _judged(j: q.ReasoningStances | None) -> str:
    if j is None:
        return "not measured (--judge-reasoning)"
    failed = f", {j.failed} not asked" if j.failed else ""
    return f"{len(j.opposite)} of {j.judged} yes/no answers ({j.neither} neither{failed})"


def quality_table(p: q.PanelQuality) -> Table:
    a, v = p.agreement, p.verdicts
    failed_pct = p.failed_turn_pct
    rate = a.rate
    rows = [
        ["Headlines restating the question", f"{len(p.restated)} of {p.summaries_ok} summaries",
         str(q.MAX_RESTATED), _met(v.restated)],
        ["Summaries failed", f"{p.summaries_failed} of {p.debates} "
         f"({p.summary_rejected} attempts rejected)", "-", "-"],
        ["Answer line length (chars)", _spread(p.answer_chars), "-", "-"],
        ["Answers that are not positions", f"{len(p.non_positions)} of {p.ok_turns} answers",
         str(q.MAX_NON_POSITIONS), _met(v.non_positions)],
        ["Failed turns", "-" if failed_pct is None else
         f"{failed_pct:.1f}% ({p.failed_turns} of {p.turns})",
         f"≤ {_num(q.MAX_FAILED_TURNS_PCT)}%", _met(v.failed_turns)],
        ["Failed labelings", f"{p.failed_labelings} of {p.labelings}", "-", "-"],
        ["Stated change of mind = change of position", "-" if rate is None else
         f"{100 * rate:.1f}% ({a.agree} of {a.n})", f"≥ {100 * q.MIN_AGREEMENT:.0f}%",
         _met(v.agreement)],
        ["Disagree: said changed, same position", str(a.said_changed_same_position), "-", "-"],
        ["Disagree: said maintained, position changed",
         str(a.said_maintained_position_changed), "-", "-"],
        ["Summary claims contradicted by the record",
         f"{len(p.false_claims)} in {p.summaries_ok} summaries", str(q.MAX_FALSE_CLAIMS),
         _met(v.false_claims)],
        ["Reasoning or summary lines cut without a mark",
         f"{len(p.unmarked_cuts)} of {p.cut_reasonings} cut", str(q.MAX_UNMARKED_CUTS),
         _met(v.unmarked_cuts)],
        ["Answers cut without a mark",
         f"{len(p.unmarked_answers)} of {p.cut_answers} cut", str(q.MAX_UNMARKED_ANSWERS),
         _met(v.unmarked_answers)],
        ["Answers against their position's label",
         f"{len(p.label_contradictions)} of {p.placed_answers} placed answers",
         str(q.MAX_LABEL_CONTRADICTIONS), _met(v.label_contradictions)],
        ["Bare yes/no answers", f"{len(p.bare_answers)} of {p.open_answers} answers",
         str(q.MAX_BARE), _met(v.bare)],
        ["Answers against their own reasoning (model-read)", _judged(p.reasoning_stances),
         "-", "-"],
        ["Seconds per debate, wall", _spread(p.wall_seconds), "-", "-"],
        ["Seconds per debate, engine", _spread(p.engine_seconds), "-", "-"],
    ]  # fmt: skip
    return Table(
        header=["METRIC", "VALUE", "TARGET", "MET"], rows=rows, aligns=["l", "l", "l", "l"]
    )


def _examples(what: str, examples: list[q.Example]) -> list[str]:
    out = []
    for e in examples[:EXAMPLES]:
        where = e.run_id if e.round is None else f"{e.run_id} round {e.round} {e.panelist}"
        out.append(f"{what}: {where}: {short(e.text, EXAMPLE_CHARS)!r}")
    if len(examples) > EXAMPLES:
        out.append(f"{what}: {len(examples) - EXAMPLES} more")
    return out


def quality_panel_notes(p: q.PanelQuality) -> list[str]:
    notes = []
    if p.left_out:
        notes.append(f"{p.left_out} runs still running or interrupted: not measured.")
    if p.agreement.by_answer_text:
        notes.append(
            f"{p.agreement.by_answer_text} of {p.agreement.n} change-of-mind turns are from "
            "records without labelled positions (schema before 4): their change is any change "
            "of the answer text, so every rewording counts as a change of position."
        )
    notes += _examples("Restated", p.restated)
    notes += _examples("Not a position", p.non_positions)
    notes += _examples("Contradicted by the record", p.false_claims)
    notes += _examples("Cut without a mark", p.unmarked_cuts)
    notes += _examples("Answer cut without a mark", p.unmarked_answers)
    notes += _examples("Against its position's label", p.label_contradictions)
    notes += _examples("Bare", p.bare_answers)
    if p.reasoning_stances is not None:
        notes += _examples("Against its own reasoning", p.reasoning_stances.opposite)
    return notes


def quality_notes(r: q.QualityReport) -> list[str]:
    notes = [
        f"Restating: a headline of which {100 * q.RESTATE_OVERLAP:.0f}% or more of the distinct "
        "words (casefolded letters and digits) occur in the question, or one that opens with "
        "such a question ('Should ...? A. ...'); a headline without words counts. Over ok "
        "summaries.",
        "Not a position: an answer that is empty, ends with '?', or holds two or more '?'. "
        "Answer length and positions: over ok turns.",
        "Failed turns: turns with status failed out of all turns; labelings (naming the open "
        "positions) are counted apart.",
        "Change of mind: round 2 on, a turn's stated stance (change or maintain) against a "
        "change of its labelled position from its previous turn.",
        "Summary claims: a panelist the summary says changed or kept its position against "
        "the counted positions, 'nobody changed' when someone did, a majority panelist named "
        "as the counterpoint's source while there is a minority, a dissent when all agreed, "
        "a panelist set apart from others who hold its position or replying ('X counters "
        "by ...') where nobody holds another, a plain yes or no a panelist's answer does not "
        "give ('X says yes'), a headline that does not open with the largest position's yes "
        "or no, a name that is nobody's ('Qwen 0.5B Skeptic') (debate/claims.py). Over ok "
        "summaries.",
        "Cut: a reasoning that the grammar's character bound or max_tokens stopped, an open "
        "answer or a summary's line (its summary, counterpoint, an open question's headline) "
        "that the grammar's bound stopped; without a mark: shown (layouts, or the peers' view "
        "in the next round's recorded prompts) without a closing '…'.",
        "Against the label: an answer opening with yes (no) on a position whose label opens "
        "with no (yes). Bare: an open answer whose leading yes or no has fewer than two words "
        "after it.",
        "Against its own reasoning: a yes/no answer whose reasoning, read by the panel's "
        "summarizer model under a grammar (Yes, No or Neither), concludes the other way; "
        "measured only with --judge-reasoning, no target.",
        "Wall: finished_at - created_at (a resumed run counts the time it stood stopped). "
        "Engine: the seconds of every generation, rejected attempts included.",
        "Measured: finished runs (complete or failed: a failed summary fails its run).",
    ]
    notes += [f"Left out: {s}" for s in r.skipped]
    return notes


def render_quality(
    r: q.QualityReport, fmt: QualityFormat, templates: TemplateSet, title: str
) -> str:
    panels = [
        PanelView(quality=p, table=quality_table(p), notes=quality_panel_notes(p)) for p in r.panels
    ]
    return templates.render_layout(
        f"quality.{'md' if fmt == 'md' else 'txt'}.j2",
        fmt,
        title=title,
        report=r,
        panels=panels,
        notes=quality_notes(r),
    )
