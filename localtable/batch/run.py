"""Batches: every question of a set, over one or more seeds, one run record per debate.

A batch lives in <runs-dir>/<name>/: one run folder per (question, seed),
named <question id>-s<seed> so that running the batch again finds it, and
batch.json, the index (a versioned BatchIndex) listing every debate, its
folder, status and transcript hash. The run records are the truth; the
index is rebuilt from them at every start and saved after every debate.

A debate runs in <name>/.work/<run id>/ and its folder is renamed into place
once it is finished, so a run folder under its own name always holds a
finished debate, however the batch was stopped. The Coordinator hands the
debates to workers (workers.py: this process, N processes, or Ray actors in
raycluster.py) and is the only one to write in the batch folder.

Running a batch again skips finished debates (complete or failed), resumes
interrupted or crashed ones from their last finished turn, and runs the rest.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict

from localtable.batch.workers import (
    DebateRunner,
    InProcessPool,
    Job,
    JobGroup,
    Report,
    SessionRunner,
    WorkerPool,
)
from localtable.errors import ConfigError, LocaltableError, RecordError
from localtable.protocols import DEFAULT, Protocol
from localtable.record import RECORD_FILE, RunRecord, read_record, write_record
from localtable.research.batchindex import (
    BatchEntry,
    BatchIndex,
    EntryStatus,
    is_batch,
    read_index,
    write_index,
)
from localtable.research.questions import QUESTION_ID, Question, QuestionSet
from localtable.runlock import RunLocked, hold, lock_holder
from localtable.safefiles import FileRefused, check_inside, check_real_folder, remove_tree
from localtable.session.run import DebateRequest, RunInterrupted

MAX_SEEDS = 1000
FINISHED = ("complete", "failed")
WORK_DIR = ".work"  # unfinished debates, and the workers' scratch folders
SCRATCH_DIR = "scratch"  # in WORK_DIR: the worker processes' own folders
MAX_ATTEMPTS = 3  # a debate whose worker died this many times is marked error

__all__ = ["SessionRunner", "DebateRunner", "run_batch", "read_index"]


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
    parallel_turns: int = 1  # turns of a round at once in each debate; 0: as runs well
    decode: Literal["sequential", "batched"] = "sequential"  # each debate's (RunRecord.decode)
    # debates whose rounds one worker decodes together (RunRecord.decode_group); 1: alone
    group: int = 1
    protocol: Protocol | None = None  # each debate's (RunRecord.protocol); None: roundtable
    vote: int = 0  # each debate's vote mode (RunRecord.vote)


class WorkerState(BaseModel):
    """One worker as the batch's progress line shows it."""

    worker: int  # 1-based
    where: str = ""
    state: Literal["starting", "idle", "busy", "refused", "gone"] = "starting"
    run_id: str | None = None
    turns: int = 0  # finished turns of the debate it runs
    finished: int = 0  # debates it finished in this invocation
    message: str = ""


class BatchProgress(BaseModel):
    """The whole batch at one moment: the live line."""

    total: int
    finished: int  # complete or failed, this invocation or before
    failed: int
    errors: int
    running: int
    per_hour: float | None = None  # debates finished per hour in this invocation
    eta_seconds: float | None = None
    workers: list[WorkerState] = []


class BatchEvent(BaseModel):
    """One line of batch progress: a debate skipped, started, finished or handed back,
    or a worker ready, refused or lost."""

    model_config = ConfigDict(frozen=True)
    position: int  # 1-based, in batch order (0: a worker event)
    total: int
    question_id: str = ""
    seed: int = 0
    action: Literal["skip", "run", "resume", "done", "error", "requeue", "ready", "refused", "lost"]
    status: str
    seconds: float | None = None  # how long this debate took (done)
    eta_seconds: float | None = None  # estimated time left for the debates still to run
    error: str | None = None
    worker: int | None = None  # 1-based
    where: str = ""  # the worker's machine
    progress: BatchProgress | None = None


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


def _protocol_of(protocol: Protocol | None) -> tuple[str, str]:
    return (protocol.name, protocol.source) if protocol else (DEFAULT, "built-in")


def _check_same_debate(record: RunRecord, q: Question, req: BatchRequest, run_dir: Path) -> None:
    """A run folder found again must hold this question, panel, round count, protocol and
    vote mode."""
    ran = record.protocol
    same = (
        record.question == q.question
        and record.question_kind == q.kind
        and record.options == q.options
        and record.answer_key == q.answer
        and record.panel == req.panel
        and record.rounds == req.rounds
        and ((ran.name, ran.source) if ran else (DEFAULT, "built-in")) == _protocol_of(req.protocol)
        and record.vote == req.vote
    )
    if not same:
        name = _protocol_of(req.protocol)[0]
        raise ConfigError(
            f"{run_dir} holds a debate of another question, panel, round count, protocol or "
            f"vote than question {q.id!r} with --panel {req.panel} --rounds {req.rounds} "
            f"--protocol {name} --vote {req.vote}; give the batch another --name, or remove "
            "that folder"
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


class UnsafeBatchFolder(RecordError):
    """A batch folder holds a link (or a file) where the batch writes or deletes."""


def _safe(check: Callable[[], None]) -> None:
    try:
        check()
    except FileRefused as exc:
        raise UnsafeBatchFolder(f"batch folder: {exc}") from None


def _check_batch_folder(batch_dir: Path) -> None:
    """Refuse a batch folder whose work or scratch folder is a link or a file: the batch
    deletes and renames folders in them, and would do it where the link points. The
    scratch folder holds only what killed workers left (no worker runs while the batch's
    lock is held by this process, before it starts them): it is emptied here."""
    work = batch_dir / WORK_DIR
    _safe(lambda: check_real_folder(work, "the work folder"))
    _safe(lambda: check_inside(work / SCRATCH_DIR, batch_dir, "the scratch folder"))
    _safe(lambda: remove_tree(work / SCRATCH_DIR, batch_dir, "the scratch folder"))


def _rename(old: Path, new: Path, batch_dir: Path) -> None:
    _safe(lambda: check_inside(old, batch_dir, "the run folder"))
    _safe(lambda: check_inside(new, batch_dir, "the run folder"))
    new.parent.mkdir(parents=True, exist_ok=True)
    os.rename(old, new)


def _settle(batch_dir: Path, run_id: str) -> RunRecord | None:
    """Put a debate's folder where its state says: finished in <batch>/<run id>,
    unfinished in <batch>/.work/<run id>. Moves what a killed coordinator (or an
    older localtable, which ran debates in place) left; returns the record.
    Both folders must be real folders of the batch: a link is refused, never followed."""
    final, work = batch_dir / run_id, batch_dir / WORK_DIR / run_id
    _safe(lambda: check_inside(final, batch_dir, "the run folder"))
    _safe(lambda: check_inside(work, batch_dir, "the run folder"))
    if (final / RECORD_FILE).is_file():
        record = read_record(final)
        if record.status in FINISHED:
            # a stale copy: the finished folder is the truth
            _safe(lambda: remove_tree(work, batch_dir, "the run folder"))
            return record
        _safe(lambda: remove_tree(work, batch_dir, "the run folder"))
        _rename(final, work, batch_dir)
        return record
    if (work / RECORD_FILE).is_file():
        record = read_record(work)
        if record.status in FINISHED:  # finished, killed before it was moved into place
            # a folder without a record
            _safe(lambda: remove_tree(final, batch_dir, "the run folder"))
            _rename(work, final, batch_dir)
        return record
    return None


def live_batch_of(run_dir: Path) -> tuple[Path, str] | None:
    """The batch folder a run folder lies in (<batch>/<run>, <batch>/.work/<run> or a
    worker's scratch folder) and who holds that batch now, or None if no living batch
    does: its coordinator resumes its own debates, and a second process must not."""
    for folder in list(run_dir.resolve().parents)[:4]:
        if is_batch(folder) and (holder := lock_holder(folder)) is not None:
            return folder, holder
    return None


def check_not_in_live_batch(run_dir: Path) -> None:
    """Refuse to resume a run that a living batch will resume itself."""
    live = live_batch_of(run_dir)
    if live is not None:
        batch_dir, holder = live
        raise RunLocked(
            f"run {run_dir.name} belongs to the batch in {batch_dir}, which is in use by "
            f"{holder}; that batch resumes its own debates: wait for it to end, or stop it "
            "and run the same `localtable batch` command again"
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
        ran_on = {e.run_dir: e.ran_on for e in old.entries}
    else:
        ran_on = {}
    entries = []
    for q in req.questions.questions:
        for seed in req.seeds:
            run_id = run_id_for(q.id, seed)
            record = _settle(batch_dir, run_id)
            if record is not None:
                _check_same_debate(record, q, req, batch_dir / run_id)
            entry = BatchEntry(question_id=q.id, seed=seed, run_dir=run_id)
            entry = _entry_from_record(entry, record)
            if entry.status in FINISHED:
                entry = entry.model_copy(update={"ran_on": ran_on.get(run_id)})
            entries.append(entry)
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


def estimate_left(durations: list[float], debates_left: int, workers: int = 1) -> float | None:
    """Mean time of the debates run so far in this session, times the debates left,
    shared by the workers running them."""
    if not durations:
        return None
    return sum(durations) / len(durations) * debates_left / max(1, workers)


class BatchResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    batch_dir: Path
    index: BatchIndex
    workers: list[WorkerState] = []
    requeued: int = 0  # debates handed back to the queue after their worker died

    def count(self, status: str) -> int:
        return sum(e.status == status for e in self.index.entries)

    def check_some_ran(self) -> None:
        """A batch none of whose debates ran to its end (each an error) has nothing to
        score: BatchFailed, naming the first error."""
        errors = [e for e in self.index.entries if e.status == "error"]
        if errors and len(errors) == len(self.index.entries):
            raise BatchFailed(
                f"every debate of the batch failed ({len(errors)} of {len(errors)}); the "
                f"first, {errors[0].run_dir}: {errors[0].error}"
            )


class BatchFailed(LocaltableError):
    """No debate of a batch ran to its end: there is nothing to score."""

    exit_code = 1


class BatchStalled(LocaltableError):
    """No worker is left to run the debates still to run."""

    exit_code = 1


def _debate_request(
    req: BatchRequest, q: Question, entry: BatchEntry, batch_dir: Path, group: list[str]
) -> DebateRequest:
    return DebateRequest(
        decode_group=group if len(group) > 1 else [],
        question=q.question,
        panel=req.panel,
        rounds=req.rounds,
        seed=entry.seed,
        runs_dir=batch_dir / WORK_DIR,
        verify=req.verify,
        reuse_prefix=req.reuse_prefix,
        memory_budget=req.memory_budget,
        parallel_turns=req.parallel_turns,
        decode=req.decode,
        protocol=req.protocol,
        vote=req.vote,
        run_id=entry.run_dir,
        question_id=q.id,
        question_kind=q.kind,
        options=q.options,
        answer_key=q.answer,
    )


class Coordinator:
    """Hands out the batch's debates to a pool's workers, and is the only writer of
    the batch folder: batch.json, each unfinished debate's record in .work/<run id>/
    as its worker reports its turns, and each finished run folder, renamed into
    place in one step."""

    def __init__(
        self, req: BatchRequest, pool: WorkerPool, on_event: BatchSink, batch_dir: Path
    ) -> None:
        self.req, self.pool, self.on_event, self.batch_dir = req, pool, on_event, batch_dir
        self.work_dir = batch_dir / WORK_DIR
        _check_batch_folder(batch_dir)
        self.index = plan(req, batch_dir, datetime.now(UTC).replace(microsecond=0))
        write_index(batch_dir, self.index)
        self.position = {e.run_dir: i for i, e in enumerate(self.index.entries)}
        self.by_id = {q.id: q for q in self.index.questions}
        self.queue: deque[str] = deque(
            e.run_dir for e in self.index.entries if e.status not in FINISHED
        )
        self.workers = [WorkerState(worker=i + 1) for i in range(pool.size)]
        self.running: dict[str, int] = {}  # run id -> worker
        self.held: dict[int, list[str]] = {}  # worker -> the run ids it runs (a --group's)
        self.started: dict[str, float] = {}
        self.attempts: dict[str, list[str]] = {}  # run id -> why its workers died
        self.durations: list[float] = []
        self.finished_here = 0
        self.requeued = 0
        self.began = time.monotonic()
        self.reference: dict[str, str | None] = dict(pool.expected_models)

    # -- the loop ---------------------------------------------------------------

    def run(self) -> BatchResult:
        for i, entry in enumerate(self.index.entries):
            if entry.status in FINISHED:
                self._event(i, "skip", entry.status)
        try:
            if self.queue:
                self.pool.start(self.work_dir)
            while self.queue or self.running:
                self._dispatch()
                if not (self.queue or self.running):
                    break  # what was left was refused (a group this batch does not hold)
                if not self.running and not self._may_work():
                    raise self._stalled()
                self._handle(self.pool.next())
        except (RunInterrupted, KeyboardInterrupt):
            stopped = self._interrupt()
            raise RunInterrupted(
                f"batch interrupted during {', '.join(stopped) or 'start-up'}; run the same "
                "`localtable batch` command again: it skips the finished debates and resumes "
                "these from their last finished turn"
            ) from None
        finally:
            self.pool.close()
            with contextlib.suppress(OSError, FileRefused):  # a link there is left alone
                remove_tree(self.work_dir / SCRATCH_DIR, self.batch_dir, "the scratch folder")
            with contextlib.suppress(OSError):  # nothing left to resume: no .work/ either
                self.work_dir.rmdir()
        return BatchResult(
            batch_dir=self.batch_dir, index=self.index, workers=self.workers,
            requeued=self.requeued,
        )  # fmt: skip

    def _may_work(self) -> bool:
        return any(w.state in ("starting", "idle", "busy") for w in self.workers)

    def _stalled(self) -> BatchStalled:
        again = "fix that, then run the same `localtable batch` command again"
        if len(self.workers) == 1:  # no worker processes: the batch's own models
            return BatchStalled(
                f"cannot run the {len(self.queue)} debates still to run: "
                f"{self.workers[0].message}; {again}"
            )
        why = "; ".join(
            f"worker {w.worker}{f' on {w.where}' if w.where else ''}: {w.message}"
            for w in self.workers
            if w.message
        )
        return BatchStalled(
            f"no worker is left to run the {len(self.queue)} debates still to run ({why}); {again}"
        )

    def _partial(self, run_id: str) -> RunRecord | None:
        work = self.work_dir / run_id
        return read_record(work) if (work / RECORD_FILE).is_file() else None

    def _next_group(self) -> tuple[list[str], list[str]]:
        """The next debates for a worker, taken from the queue: the unfinished ones of
        a recorded group (resumed together, in its order), else up to --group debates
        not begun yet, else one; and the group their requests name. A recorded group
        this batch does not hold entirely is that debate's error (one line), and the
        next is taken."""
        while self.queue:
            first = self.queue.popleft()
            partial = self._partial(first)
            recorded = partial.decode_group if partial is not None else []
            if recorded:
                stranger = [r for r in recorded if r not in self.position]
                if stranger:
                    self._refuse_group(first, stranger)
                    continue
                group = [r for r in recorded if r == first or r in self.queue]
                for r in group:
                    if r != first:
                        self.queue.remove(r)
                return group, recorded
            group = [first]
            while partial is None and self.queue and len(group) < self.req.group:
                if self._partial(self.queue[0]) is not None:
                    break  # one begun alone goes on alone
                group.append(self.queue.popleft())
            return group, group
        return [], []

    def _refuse_group(self, run_id: str, stranger: list[str]) -> None:
        i = self.position[run_id]
        message = (
            f"it was decoded together with {', '.join(stranger)}, which this batch does not "
            "hold (--group): run the batch with the questions, seeds and --limit it was "
            "started with"
        )
        self._save(i, self.index.entries[i].model_copy(
            update={"status": "error", "error": message}))  # fmt: skip
        self._event(i, "error", "error", error=message)

    def _dispatch(self) -> None:
        for state in self.workers:
            if not self.queue:
                return
            if state.state != "idle":
                continue
            group, recorded = self._next_group()
            if not group:
                return
            jobs = [self._job(run_id, recorded, state) for run_id in group]
            self.held[state.worker] = list(group)
            state.state, state.run_id = "busy", group[0]
            work: Job | JobGroup = jobs[0] if len(jobs) == 1 else JobGroup(jobs=jobs)
            self.pool.submit(state.worker - 1, work)

    def _job(self, run_id: str, group: list[str], state: WorkerState) -> Job:
        """A debate handed to a worker (alone or in its group): running from now on."""
        i = self.position[run_id]
        entry = self.index.entries[i]
        partial = self._partial(run_id)
        q = self.by_id[entry.question_id]
        job = Job(
            run_id=run_id,
            request=_debate_request(self.req, q, entry, self.batch_dir, group),
            partial=partial,
        )
        turns = len([t for t in partial.turns if t.status != "interrupted"]) if partial else 0
        state.turns = turns
        self.running[run_id] = state.worker
        self.started[run_id] = time.monotonic()
        self._save(i, entry.model_copy(update={"status": "running", "error": None}))
        action = "resume" if partial is not None else "run"
        self._event(i, action, "running", worker=state)
        return job

    def _release(self, state: WorkerState, run_id: str) -> None:
        """A debate of the worker's ended: the worker is idle once all of its have."""
        held = [r for r in self.held.pop(state.worker, []) if r != run_id]
        if held:
            self.held[state.worker] = held
            state.state, state.run_id = "busy", held[0]
        else:
            state.state, state.run_id, state.turns = "idle", None, 0

    def _handle(self, report: Report) -> None:
        state = self.workers[report.worker]
        if report.kind == "ready":
            self._ready(state, report)
        elif report.kind == "refused":
            state.state, state.where, state.message = "refused", report.where, report.message
            self._worker_event("refused", state, report.message)
        elif report.kind == "lost":
            self._lost(state, report)
        elif report.run_id is None or self.running.get(report.run_id) != state.worker:
            return  # not a debate this worker holds (never expected)
        elif report.kind == "turn":
            assert report.record is not None
            write_record(self.work_dir / report.run_id, report.record)
            state.turns = len([t for t in report.record.turns if t.status != "interrupted"])
            self._worker_event("turn", state, "")
        elif report.kind == "done":
            assert report.record is not None
            self._finish(state, report.run_id, report.record)
        elif report.worker_broken:
            self._broken(state, report.run_id, report.message)
        else:
            self._error(state, report.run_id, report.message)

    # -- what workers report ----------------------------------------------------

    def _ready(self, state: WorkerState, report: Report) -> None:
        state.where = report.where
        for name, sha in report.models.items():
            want = self.reference.setdefault(name, sha)
            if want is not None and sha is not None and want != sha:
                state.state = "refused"
                state.message = (
                    f"model {name!r} there has sha256 {sha[:12]}..., the batch's has "
                    f"{want[:12]}...: copy the batch's file to {report.where}"
                )
                self.pool.retire(report.worker)
                self._worker_event("refused", state, state.message)
                return
        state.state = "idle"
        self._worker_event("ready", state, "")

    def _lost(self, state: WorkerState, report: Report) -> None:
        state.state = "starting" if report.restarting else "gone"
        state.message = report.message
        state.run_id, state.turns = None, 0
        held = self.held.pop(state.worker, [])
        if not held:
            self._worker_event("lost", state, report.message)
            return
        for run_id in reversed(held):  # back to the queue's front in their order
            self._hand_back(state, run_id, report.message)

    def _hand_back(self, state: WorkerState, run_id: str, message: str) -> None:
        """A debate whose worker died goes back to the queue, or is an error after
        MAX_ATTEMPTS deaths."""
        del self.running[run_id]
        why = self.attempts.setdefault(run_id, [])
        why.append(message)
        i = self.position[run_id]
        if len(why) >= MAX_ATTEMPTS:
            message = f"{len(why)} workers died running it ({'; '.join(why)})"
            self._save(i, self.index.entries[i].model_copy(
                update={"status": "error", "error": message}))  # fmt: skip
            self._event(i, "error", "error", worker=state, error=message)
            return
        self.queue.appendleft(run_id)
        self.requeued += 1
        self._save(i, self.index.entries[i].model_copy(update={"status": "interrupted"}))
        self._event(i, "requeue", "interrupted", worker=state, error=message)

    def _finish(self, state: WorkerState, run_id: str, record: RunRecord) -> None:
        work, final = self.work_dir / run_id, self.batch_dir / run_id
        write_record(work, record)
        if os.path.lexists(final):
            raise RecordError(f"{final} already exists; the batch never replaces a finished run")
        _rename(work, final, self.batch_dir)
        del self.running[run_id]
        seconds = time.monotonic() - self.started.pop(run_id)
        self.durations.append(seconds)
        self.finished_here += 1
        self._release(state, run_id)
        state.finished += 1
        i = self.position[run_id]
        entry = _entry_from_record(self.index.entries[i], record)
        self._save(i, entry.model_copy(update={"ran_on": state.where or None}))
        self._event(i, "done", record.status, worker=state, seconds=seconds)

    def _broken(self, state: WorkerState, run_id: str, message: str) -> None:
        """The worker can run no debate (a model file went missing since it started):
        the debate goes back to the queue as it was, the worker is retired, and with no
        worker left the batch stops with this one line, not one error per debate."""
        for held in reversed(self.held.pop(state.worker, [run_id])):  # its group's too
            del self.running[held]
            self.started.pop(held, None)
            self.queue.appendleft(held)
            i = self.position[held]
            unfinished = (self.work_dir / held / RECORD_FILE).is_file()
            status: EntryStatus = "interrupted" if unfinished else "pending"
            self._save(i, self.index.entries[i].model_copy(update={"status": status}))
        state.state, state.run_id, state.turns, state.message = "refused", None, 0, message
        self.pool.retire(state.worker - 1)
        self._worker_event("refused", state, message)

    def _error(self, state: WorkerState, run_id: str, message: str) -> None:
        del self.running[run_id]
        self.started.pop(run_id, None)
        self._release(state, run_id)
        i = self.position[run_id]
        self._save(i, self.index.entries[i].model_copy(
            update={"status": "error", "error": message}))  # fmt: skip
        self._event(i, "error", "error", worker=state, error=message)

    def _interrupt(self) -> list[str]:
        """Mark the debates in flight interrupted; their records keep every finished turn."""
        stopped = sorted(self.running)
        for run_id in stopped:
            work = self.work_dir / run_id
            if (work / RECORD_FILE).is_file():
                record = read_record(work)
                if record.status == "running":
                    record.status = "interrupted"
                    record.error = "the batch was stopped; `localtable batch` resumes it"
                    write_record(work, record)
            i = self.position[run_id]
            self._save(i, self.index.entries[i].model_copy(update={"status": "interrupted"}))
        return stopped

    # -- the index and progress -------------------------------------------------

    def _save(self, i: int, entry: BatchEntry) -> None:
        self.index.entries[i] = entry
        self.index.updated_at = datetime.now(UTC).replace(microsecond=0)
        write_index(self.batch_dir, self.index)

    def progress(self) -> BatchProgress:
        entries = self.index.entries
        finished = sum(e.status in FINISHED for e in entries)
        left = len(entries) - finished - sum(e.status == "error" for e in entries)
        elapsed = time.monotonic() - self.began
        busy = max(1, sum(w.state in ("idle", "busy") for w in self.workers))
        return BatchProgress(
            total=len(entries),
            finished=finished,
            failed=sum(e.status == "failed" for e in entries),
            errors=sum(e.status == "error" for e in entries),
            running=len(self.running),
            per_hour=3600 * self.finished_here / elapsed if self.finished_here else None,
            eta_seconds=estimate_left(self.durations, left, busy),
            workers=[w.model_copy() for w in self.workers],
        )

    def _event(
        self, i: int, action: str, status: str, worker: WorkerState | None = None, **more: object
    ) -> None:
        entry = self.index.entries[i]
        progress = self.progress()
        fields: dict[str, object] = {
            "position": i + 1, "total": len(self.index.entries), "question_id": entry.question_id,
            "seed": entry.seed, "action": action, "status": status, "progress": progress,
            "eta_seconds": progress.eta_seconds,
        }  # fmt: skip
        if worker is not None:
            fields.update(worker=worker.worker, where=worker.where)
        fields.update(more)
        self.on_event(BatchEvent.model_validate(fields))

    def _worker_event(self, action: str, state: WorkerState, message: str) -> None:
        if action == "turn":
            action, status = "ready", "turn"  # a live-line refresh, not a line of its own
        else:
            status = action
        progress = self.progress()
        fields: dict[str, object] = {
            "position": 0, "total": progress.total, "action": action, "status": status,
            "worker": state.worker, "where": state.where, "error": message or None,
            "progress": progress, "eta_seconds": progress.eta_seconds,
        }  # fmt: skip
        self.on_event(BatchEvent.model_validate(fields))


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


def run_batch(
    req: BatchRequest, runner: DebateRunner | WorkerPool, on_event: BatchSink
) -> BatchResult:
    """Run, resume or skip every debate of the batch: in this process through a
    DebateRunner, or through a pool of workers. The index is saved after each.

    One process per batch: the batch folder's lock is held to the end, and a second
    `localtable batch` on the same folder is refused (localtable/runlock.py)."""
    if not req.seeds:
        raise ConfigError("a batch needs at least one seed")
    if req.group > 1 and req.decode != "batched":
        raise ConfigError(
            f"--group {req.group} decodes the rounds of {req.group} debates together: it "
            "needs --decode batched"
        )
    pool = cast(WorkerPool, runner) if hasattr(runner, "submit") else None
    if pool is None and isinstance(runner, SessionRunner):
        # the panel's model files once, before the first debate, as a worker process
        # checks them: a missing one is one line, not one error per debate
        session_runner = runner
        pool = InProcessPool(runner, check=lambda: session_runner.check(
            req.panel, verify=False, reuse_prefix=req.reuse_prefix,  # each debate verifies
            memory_budget=req.memory_budget,
        ))  # fmt: skip
    pool = pool or InProcessPool(cast(DebateRunner, runner))
    name = batch_name(req)
    batch_dir = req.runs_dir / name
    with hold(batch_dir, f"batch {name} ({batch_dir})"):
        return Coordinator(req, pool, on_event, batch_dir).run()
