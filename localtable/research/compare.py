"""How the panelists' views differ, across runs and batches.

- agreement: for each pair of panelists, in how many runs their final
  answers held the same position, out of the runs where both have one.
  Open questions: the same group in the summary's groups (runs whose summary
  failed are not compared). Choice and number questions: the same answer
  exactly (the option; the numeric value).
- moves: how often each panelist changed its answer from one round to the
  next, towards whom (the peers whose previous-round answer it took), and
  whom it said influenced it.
- positions: every run's final answers side by side, with the answer key.

Panelists are matched by name across runs.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from localtable.debate.answers import is_correct, position_of
from localtable.errors import ConfigError
from localtable.record import RunRecord, TurnRecord, find_run, read_record
from localtable.research.batchindex import batch_records, is_batch


class NoRuns(ConfigError):
    """The targets named hold no run record yet (each command words it its own way)."""


class Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Pair(Model):
    a: str
    b: str
    agree: int
    compared: int

    @property
    def rate(self) -> float | None:
        return self.agree / self.compared if self.compared else None


class Moves(Model):
    panelist: str
    turns: int = Field(description="later-round turns with a valid answer before and after")
    changed: int = Field(description="of those, turns whose answer changed position")
    towards: dict[str, int] = Field(description="peer -> changes that took that peer's answer")
    said_influenced: dict[str, int] = Field(description="peer -> turns naming it as influence")


class Cell(Model):
    panelist: str
    answer: str = Field(description="the final answer, '' when it failed")
    status: str
    group: str = Field(description="open questions: the summary's position letter, or ''")
    correct: bool | None = Field(description="None when the question has no answer key")


class PositionRow(Model):
    run_id: str
    question_id: str
    seed: int
    kind: str
    answer_key: str | None
    question: str
    cells: list[Cell]


class Comparison(Model):
    runs: int
    panelists: list[str]
    models: dict[str, str] = Field(description="panelist -> model name")
    pairs: list[Pair]
    moves: list[Moves]
    positions: list[PositionRow]
    skipped: list[str] = Field(description="runs left out, and why")

    def pair(self, a: str, b: str) -> Pair | None:
        for p in self.pairs:
            if {p.a, p.b} == {a, b}:
                return p
        return None


def collect(targets: list[str], runs_dir: Path) -> tuple[list[RunRecord], list[str]]:
    """The run records of runs and batches (a batch folder: all its runs), and what was skipped."""
    records: list[RunRecord] = []
    skipped: list[str] = []
    for target in targets:
        for candidate in (Path(target), runs_dir / target):
            if is_batch(candidate):
                for entry, record in batch_records(candidate):
                    if record is None:
                        skipped.append(f"{candidate.name}/{entry.run_dir}: not run yet")
                    else:
                        records.append(record)
                break
        else:
            records.append(read_record(find_run(target, runs_dir)))
    if not records:
        raise NoRuns("no runs to compare: the batches named hold no finished debate yet")
    return records, skipped


def _final_ok(record: RunRecord) -> dict[str, TurnRecord]:
    """Each panelist's final-round turn, when it is a valid answer."""
    return {
        t.panelist: t
        for t in record.final_turns()
        if t.round == record.rounds and t.status == "ok" and t.parsed is not None
    }


def final_positions(record: RunRecord) -> dict[str, str] | None:
    """panelist -> final position; None for an open question without a usable summary."""
    if record.question_kind == "open":
        s = record.summary
        if s is None or s.status != "ok":
            return None
        return {name: f"group {i}" for i, g in enumerate(s.groups) for name in g.members}
    kind = record.question_kind
    return {n: position_of(kind, t.parsed.answer) for n, t in _final_ok(record).items() if t.parsed}


def _moves(records: list[RunRecord], names: list[str]) -> list[Moves]:
    out = []
    for name in names:
        turns = changed = 0
        towards: dict[str, int] = {}
        said: dict[str, int] = {}
        for rec in records:
            kind = rec.question_kind
            for r in range(2, rec.rounds + 1):
                now, before = rec.turn(r, name), rec.turn(r - 1, name)
                if now is None or now.parsed is None or now.status != "ok":
                    continue
                for peer in now.parsed.influenced_by:
                    said[peer] = said.get(peer, 0) + 1
                if before is None or before.parsed is None or before.status != "ok":
                    continue
                turns += 1
                new = position_of(kind, now.parsed.answer)
                if new == position_of(kind, before.parsed.answer):
                    continue
                changed += 1
                for peer in (p.name for p in rec.panelists if p.name != name):
                    t = rec.turn(r - 1, peer)
                    prev = t.parsed if t is not None and t.status == "ok" else None
                    if prev is not None and position_of(kind, prev.answer) == new:
                        towards[peer] = towards.get(peer, 0) + 1
        out.append(
            Moves(
                panelist=name, turns=turns, changed=changed, towards=towards, said_influenced=said
            )
        )
    return out


def _position_row(record: RunRecord) -> PositionRow:
    finals = {t.panelist: t for t in record.final_turns()}
    letters: dict[str, str] = {}
    if record.question_kind == "open" and record.summary and record.summary.status == "ok":
        letters = {
            n: "ABCDEFGH"[i] for i, g in enumerate(record.summary.groups[:8]) for n in g.members
        }
    cells = []
    for p in record.panelists:
        t = finals.get(p.name)
        ok = (
            t is not None and t.status == "ok" and t.parsed is not None and t.round == record.rounds
        )
        answer = t.parsed.answer if ok and t is not None and t.parsed is not None else ""
        has_key = record.answer_key is not None and record.question_kind != "open"
        cells.append(
            Cell(
                panelist=p.name,
                answer=answer,
                status="ok" if ok else (t.status if t is not None else "missing"),
                group=letters.get(p.name, ""),
                correct=is_correct(record.question_kind, answer or None, record.answer_key)
                if has_key
                else None,
            )
        )
    return PositionRow(
        run_id=record.run_id,
        question_id=record.question_id or record.run_id,
        seed=record.seed,
        kind=record.question_kind,
        answer_key=record.answer_key,
        question=record.question,
        cells=cells,
    )


def compare(records: list[RunRecord], skipped: list[str] | None = None) -> Comparison:
    """Agreement, moves and positions over runs (see the module docstring)."""
    skipped = list(skipped or [])
    names: list[str] = []
    models: dict[str, str] = {}
    for rec in records:
        for p in rec.panelists:
            if p.name not in models:
                names.append(p.name)
                models[p.name] = p.model
    agree = {pair: 0 for pair in combinations(names, 2)}
    compared = dict.fromkeys(agree, 0)
    for rec in records:
        positions = final_positions(rec)
        if positions is None:
            skipped.append(f"{rec.run_id}: open question without a usable summary (agreement)")
            continue
        for a, b in agree:
            if a in positions and b in positions:
                compared[(a, b)] += 1
                agree[(a, b)] += positions[a] == positions[b]
    return Comparison(
        runs=len(records),
        panelists=names,
        models=models,
        pairs=[Pair(a=a, b=b, agree=agree[(a, b)], compared=compared[(a, b)]) for a, b in agree],
        moves=_moves(records, names),
        positions=[_position_row(r) for r in records],
        skipped=skipped,
    )
