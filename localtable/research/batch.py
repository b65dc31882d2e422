"""Batches: every question of a set, over one or more seeds, one run record per debate.

A batch lives in <runs-dir>/<name>/: one run folder per (question, seed),
named <question id>-s<seed> so that running the batch again finds it, and
batch.json, the index (a versioned BatchIndex) listing every debate, its
folder, status and transcript hash. The run records are the truth; the
index is rebuilt from them at every start and saved after every debate.

Running a batch again skips finished debates (complete or failed), resumes
interrupted or crashed ones with resume_run, and runs the rest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from localtable.config import LoadedConfig
from localtable.debate.protocol import ProgressSink
from localtable.errors import ConfigError, LocaltableError
from localtable.record import RECORD_FILE, RunRecord, read_record
from localtable.research.batchindex import (
    BatchEntry,
    BatchIndex,
    EntryStatus,
    is_batch,
    read_index,
    write_index,
)
from localtable.research.questions import QUESTION_ID, Question, QuestionSet
from localtable.runlock import hold
from localtable.session.run import DebateRequest, RunInterrupted
from localtable.templates import TemplateSet

MAX_SEEDS = 1000
FINISHED = ("complete", "failed")


class BatchRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    questions: QuestionSet
    seeds: list[int]
    panel: str
    rounds: int
    runs_dir: Path
    name: str | None = None  # default: the questions' set name
    verify: bool = False
    reuse_prefix: bool = False
    memory_budget: int | None = None  # bytes; default: most of MemAvailable (memory.py)


class BatchEvent(BaseModel):
    """One line of batch progress: a debate skipped, started or finished."""

    model_config = ConfigDict(frozen=True)
    position: int  # 1-based, in batch order
    total: int
    question_id: str
    seed: int
    action: Literal["skip", "run", "resume", "done", "error"]
    status: str
    seconds: float | None = None  # how long this debate took (done)
    eta_seconds: float | None = None  # estimated time left for the debates still to run
    error: str | None = None


BatchSink = Callable[[BatchEvent], None]


def run_id_for(question_id: str, seed: int) -> str:
    return f"{question_id}-s{seed}"


def parse_seeds(text: str) -> list[int]:
    """'1-5', '1,3,7' or a mix ('1-3,7') -> distinct seeds in the order given."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range like 1-5")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if last < first:
            raise ConfigError(f"--seeds {text!r}: the range {part!r} runs backwards")
        if last > 2**31 - 1:
            raise ConfigError(f"--seeds {text!r}: seeds go up to {2**31 - 1}")
        if last - first + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds {text!r}: at most {MAX_SEEDS} seeds")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"--seeds {text!r}: at most {MAX_SEEDS} seeds")
    return seeds


def _check_same_debate(record: RunRecord, q: Question, req: BatchRequest, run_dir: Path) -> None:
    """A run folder found again must hold this question, panel and round count."""
    same = (
        record.question == q.question
        and record.question_kind == q.kind
        and record.options == q.options
        and record.answer_key == q.answer
        and record.panel == req.panel
        and record.rounds == req.rounds
    )
    if not same:
        raise ConfigError(
            f"{run_dir} holds a debate of another question, panel or round count than "
            f"question {q.id!r} with --panel {req.panel} --rounds {req.rounds}; give the batch "
            "another --name, or remove that folder"
        )


def _entry_from_record(entry: BatchEntry, record: RunRecord | None) -> BatchEntry:
    if record is None:
        return entry.model_copy(update={"status": "pending"})
    status: EntryStatus = "running" if record.status == "running" else record.status
    return entry.model_copy(
        update={
            "status": status,
            "transcript_sha256": record.transcript_sha256,
            "error": record.error,
        }
    )


def plan(req: BatchRequest, batch_dir: Path, now: datetime) -> BatchIndex:
    """The index for this request, with each debate's status read from its record."""
    name = req.name or req.questions.name
    created = now
    if is_batch(batch_dir):
        old = read_index(batch_dir)
        if (old.panel, old.rounds) != (req.panel, req.rounds):
            raise ConfigError(
                f"batch {name!r} in {batch_dir} was run with --panel {old.panel} "
                f"--rounds {old.rounds}; use those, or give this one another --name"
            )
        created = old.created_at
    entries = []
    for q in req.questions.questions:
        for seed in req.seeds:
            run_id = run_id_for(q.id, seed)
            run_dir = batch_dir / run_id
            record = read_record(run_dir) if (run_dir / RECORD_FILE).is_file() else None
            if record is not None:
                _check_same_debate(record, q, req, run_dir)
            entry = BatchEntry(question_id=q.id, seed=seed, run_dir=run_id)
            entries.append(_entry_from_record(entry, record))
    return BatchIndex(
        name=name,
        source=req.questions.source,
        source_sha256=req.questions.sha256,
        panel=req.panel,
        rounds=req.rounds,
        seeds=list(req.seeds),
        created_at=created,
        updated_at=now,
        questions=list(req.questions.questions),
        entries=entries,
    )


def estimate_left(durations: list[float], debates_left: int) -> float | None:
    """Mean time of the debates run so far in this session, times the debates left."""
    if not durations:
        return None
    return sum(durations) / len(durations) * debates_left


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    batch_dir: Path
    index: BatchIndex

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.index.entries)


def _event(
    on_event: BatchSink,
    i: int,
    total: int,
    entry: BatchEntry,
    action: str,
    status: str,
    **more: object,
) -> None:
    fields = {"position": i + 1, "total": total, "question_id": entry.question_id}
    fields.update(seed=entry.seed, action=action, status=status, **more)
    on_event(BatchEvent.model_validate(fields))


def _debate_request(
    req: BatchRequest, q: Question, entry: BatchEntry, batch_dir: Path
) -> DebateRequest:
    return DebateRequest(
        question=q.question,
        panel=req.panel,
        rounds=req.rounds,
        seed=entry.seed,
        runs_dir=batch_dir,
        verify=req.verify,
        reuse_prefix=req.reuse_prefix,
        memory_budget=req.memory_budget,
        run_id=entry.run_dir,
        question_id=q.id,
        question_kind=q.kind,
        options=q.options,
        answer_key=q.answer,
    )


class DebateRunner(Protocol):
    """What a batch needs to run one debate, or to resume one from its folder."""

    def run(self, req: DebateRequest) -> RunRecord: ...

    def resume(self, run_dir: Path) -> RunRecord: ...


class SessionRunner:
    """Debates through one Session for the whole batch, so that each model is loaded
    once per batch and not once per debate. Close it (or use `with`) at the end."""

    def __init__(
        self,
        loaded: LoadedConfig,
        templates: TemplateSet,
        progress: ProgressSink,
        allow_engine_change: bool = False,
    ) -> None:
        from localtable.session.session import Session

        self.loaded = loaded
        self.templates = templates
        self.progress = progress
        self.allow_engine_change = allow_engine_change
        self.session = Session(templates, loaded)

    def run(self, req: DebateRequest) -> RunRecord:
        from localtable.session.run import run_debate

        return run_debate(req, self.loaded, self.templates, self.progress, self.session)[1]

    def resume(self, run_dir: Path) -> RunRecord:
        from localtable.session.rerun import resume_run

        return resume_run(
            run_dir,
            self.loaded,
            self.templates,
            self.progress,
            allow_engine_change=self.allow_engine_change,
            session=self.session,
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SessionRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batch_name(req: BatchRequest) -> str:
    """The batch folder's name: one path component, by the rule of question ids, so that
    `--name ../x` or `--name /abs` cannot put a batch outside --runs-dir."""
    name = req.name or req.questions.name
    if not re.fullmatch(QUESTION_ID, name):
        given = "--name" if req.name else f"the name taken from {req.questions.source}"
        raise ConfigError(
            f"batch name {name!r} ({given}) must be one folder name: letters, digits, '.', "
            "'_' or '-', starting with a letter or digit, at most 64 characters; give --name"
        )
    return name


def run_batch(req: BatchRequest, runner: DebateRunner, on_event: BatchSink) -> BatchResult:
    """Run, resume or skip every debate of the batch; the index is saved after each.

    One process per batch: the batch folder's lock is held to the end, and a second
    `localtable batch` on the same folder is refused (localtable/runlock.py)."""
    if not req.seeds:
        raise ConfigError("a batch needs at least one seed")
    name = batch_name(req)
    batch_dir = req.runs_dir / name
    with hold(batch_dir, f"batch {name} ({batch_dir})"):
        return _run_batch_held(req, runner, on_event, batch_dir)


def _run_batch_held(
    req: BatchRequest, runner: DebateRunner, on_event: BatchSink, batch_dir: Path
) -> BatchResult:
    index = plan(req, batch_dir, datetime.now(UTC).replace(microsecond=0))
    write_index(batch_dir, index)
    by_id = {q.id: q for q in index.questions}
    total = len(index.entries)
    left = sum(e.status not in FINISHED for e in index.entries)
    durations: list[float] = []

    def save(i: int, entry: BatchEntry) -> None:
        index.entries[i] = entry
        index.updated_at = datetime.now(UTC).replace(microsecond=0)
        write_index(batch_dir, index)

    for i, entry in enumerate(index.entries):
        if entry.status in FINISHED:
            _event(on_event, i, total, entry, "skip", entry.status)
            continue
        run_dir = batch_dir / entry.run_dir
        resuming = (run_dir / RECORD_FILE).is_file()
        eta = estimate_left(durations, left)
        _event(
            on_event, i, total, entry, "resume" if resuming else "run", "running", eta_seconds=eta
        )
        save(i, entry.model_copy(update={"status": "running", "error": None}))
        started = time.monotonic()
        try:
            if resuming:
                record = runner.resume(run_dir)
            else:
                record = runner.run(
                    _debate_request(req, by_id[entry.question_id], entry, batch_dir)
                )
        except (RunInterrupted, KeyboardInterrupt):
            save(i, entry.model_copy(update={"status": "interrupted"}))
            raise RunInterrupted(
                f"batch interrupted during {entry.run_dir}; run the same `localtable batch` "
                "command again: it skips the finished debates and resumes this one"
            ) from None
        except LocaltableError as exc:
            save(i, entry.model_copy(update={"status": "error", "error": str(exc)}))
            left -= 1
            _event(on_event, i, total, entry, "error", "error", error=str(exc))
            continue
        durations.append(time.monotonic() - started)
        left -= 1
        save(i, _entry_from_record(entry, record))
        eta = estimate_left(durations, left)
        _event(
            on_event, i, total, entry, "done", record.status, seconds=durations[-1], eta_seconds=eta
        )
    return BatchResult(batch_dir=batch_dir, index=index)
