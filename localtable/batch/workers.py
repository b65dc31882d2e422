"""Debate workers: what runs a batch's debates, in this process or in others.

A worker holds one Session (each model loaded once per worker) and runs the
jobs a batch's coordinator (run.py) gives it: a (question, seed) debate,
new or resumed from its last finished turn. A worker never writes into the
batch folder's finished runs: it runs each debate in a scratch folder of its
own and reports the record after every finished turn; the coordinator writes
it into <batch>/.work/<run id>/ and, once the debate is finished, renames
that folder into place. Only the in-process pool (one worker, the default)
runs in the coordinator's own .work folder, the coordinator being its process.

Pools (the same WorkerPool protocol):
- InProcessPool: one worker, the coordinator's process (`batch`, `--workers 1`);
- LocalPool: N worker processes on this machine (`--workers N`), each with its
  share of the cores;
- raycluster.RayPool: N Ray actors on a cluster (`--ray ADDRESS`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, TypeAdapter, model_validator

from localtable.config import LoadedConfig
from localtable.debate.protocol import ProgressEvent, ProgressSink
from localtable.errors import LocaltableError, ModelFileError
from localtable.record import RunRecord, read_record, write_record
from localtable.safefiles import FileRefused, remove_tree
from localtable.session.grouprun import GroupWork
from localtable.session.run import DebateRequest, RunInterrupted
from localtable.session.session import BackendRegistry
from localtable.templates import TemplateSet

# A worker slot whose worker died this many times is not restarted again.
MAX_RESTARTS = 3


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

    def check(
        self, panel: str, *, verify: bool, reuse_prefix: bool, memory_budget: int | None
    ) -> dict[str, str | None]:
        """Resolve (and hash) every model of the panel, as a new run would: model name ->
        sha256. Raises ModelFileError naming what is missing, before any debate."""
        planned = self.session.plan(
            self.loaded.config.panel(panel), self.loaded, verify=verify,
            reuse_prefix=reuse_prefix, memory_budget=memory_budget,
        )  # fmt: skip
        return {m.name: m.sha256 for m in planned.models}

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

    def run_group(
        self, work: list[GroupWork], progress_of: Callable[[str], ProgressSink]
    ) -> dict[str, RunRecord | LocaltableError]:
        """The debates of a --group together (session/grouprun.py), in group order."""
        from localtable.session.grouprun import run_group
        from localtable.session.rerun import parallel_turns

        return run_group(
            work, self.loaded, self.templates, self.session, progress_of,
            allow_engine_change=self.allow_engine_change, lanes=parallel_turns(self.loaded),
        )  # fmt: skip

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> SessionRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Job(BaseModel):
    """One debate for a worker: new (partial is None) or resumed from `partial`."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    request: DebateRequest  # runs_dir is replaced by the worker's scratch folder
    partial: RunRecord | None = None


class JobGroup(BaseModel):
    """Debates for one worker to run together, their rounds decoded in one batch
    (a batch's --group), in group order."""

    model_config = ConfigDict(frozen=True)
    jobs: list[Job]

    @property
    def run_ids(self) -> list[str]:
        return [job.run_id for job in self.jobs]


Work = Job | JobGroup


WORK: TypeAdapter[Work] = TypeAdapter(Work)  # what a worker process receives

ReportKind = Literal["ready", "refused", "turn", "done", "error", "lost"]


class Report(BaseModel):
    """What a pool tells the coordinator about one of its workers."""

    model_config = ConfigDict(frozen=True)
    worker: int
    kind: ReportKind
    run_id: str | None = None
    record: RunRecord | None = None  # turn, done
    message: str = ""  # refused, error, lost
    where: str = ""  # ready: the machine (node) the worker runs on
    models: dict[str, str | None] = {}  # ready: model name -> sha256 found there
    restarting: bool = False  # lost: a new worker takes its place
    # error: the worker can run no debate at all (a model file went missing or changed),
    # so the coordinator retires it instead of failing every debate left, one by one
    worker_broken: bool = False


class WorkerPool(Protocol):
    """Workers that run jobs; the coordinator hands a job to a worker that is ready."""

    size: int
    # model name -> sha256 every worker must have (empty: the first ready worker's)
    expected_models: dict[str, str | None]

    def start(self, work_dir: Path) -> None:
        """Start the workers; each reports ready (or refused) through next()."""
        ...

    def submit(self, worker: int, job: Work) -> None:
        """A debate, or a group of debates to run together (--group)."""
        ...

    def retire(self, worker: int) -> None:
        """Stop a worker the coordinator will not use (e.g. it has other model files)."""
        ...

    def next(self) -> Report:
        """Block until a worker reports something."""
        ...

    def close(self) -> None: ...


class WorkerSpec(BaseModel):
    """Everything a worker needs to build its Session, sent to its process or node."""

    loaded: LoadedConfig
    panel: str
    template_dir: Path | None = None
    allow_engine_change: bool = False
    threads: int | None = None  # each model's threads when models.toml leaves it at 0
    verify: bool = False
    reuse_prefix: bool = False
    memory_budget: int | None = None
    registry: BackendRegistry = BackendRegistry()  # the coordinator's, plugins included

    @model_validator(mode="before")
    @classmethod
    def _registry_first(cls, data: object) -> object:
        """A spec read from JSON (a Ray actor) registers the coordinator's backends
        before its config is validated: a source kind may be a plugin's."""
        if isinstance(data, dict) and "registry" in data:
            BackendRegistry.model_validate(data["registry"]).restore()
        return data


def with_threads(loaded: LoadedConfig, threads: int | None) -> LoadedConfig:
    """The config with `threads` for every model that leaves it to the machine (0)."""
    if threads is None:
        return loaded
    models = {
        name: spec if spec.threads else spec.model_copy(update={"threads": threads})
        for name, spec in loaded.config.models.items()
    }
    return loaded.model_copy(update={"config": loaded.config.model_copy(update={"models": models})})


def this_host() -> str:
    return socket.gethostname()


class WorkerCore:
    """The worker side, the same in a local process and in a Ray actor: check the
    models, then run jobs in a scratch folder, reporting each finished turn."""

    def __init__(self, spec: WorkerSpec, scratch: Path) -> None:
        spec.registry.restore()
        self.spec = spec
        self.scratch = scratch
        self.loaded = with_threads(spec.loaded, spec.threads)
        self.on_turn: Callable[[RunRecord], None] = lambda record: None
        self._run_dir: Path | None = None
        self.runner = SessionRunner(
            self.loaded, TemplateSet(spec.template_dir), self._progress, spec.allow_engine_change
        )

    def _progress(self, event: ProgressEvent) -> None:
        """After each finished turn the record is saved: pass it on."""
        if event.status in ("ok", "failed") and self._run_dir is not None:
            self.on_turn(read_record(self._run_dir))

    def check(self) -> dict[str, str | None]:
        """Resolve (and hash) every model of the panel here, as a new run would:
        model name -> sha256. Raises LocaltableError naming what is missing."""
        return self.runner.check(
            self.spec.panel, verify=self.spec.verify, reuse_prefix=self.spec.reuse_prefix,
            memory_budget=self.spec.memory_budget,
        )  # fmt: skip

    def run(self, job: Job, on_turn: Callable[[RunRecord], None]) -> RunRecord:
        self._run_dir, self.on_turn = self.scratch / job.run_id, on_turn
        try:
            return run_job(self.runner, self.scratch, job)
        finally:
            self._run_dir = None

    def run_group(
        self, group: JobGroup, on_turn: Callable[[str, RunRecord], None]
    ) -> dict[str, RunRecord | LocaltableError]:
        def progress_of(run_id: str) -> ProgressSink:
            def progress(event: ProgressEvent) -> None:
                if event.status in ("ok", "failed"):
                    on_turn(run_id, read_record(self.scratch / run_id))

            return progress

        return run_group_job(self.runner, self.scratch, group, progress_of)

    def close(self) -> None:
        self.runner.close()


def error_report(worker: int, run_id: str, exc: LocaltableError) -> Report:
    """A debate that could not run; a model file's problem is the worker's, not the
    debate's: every debate after it would fail the same way."""
    broken = isinstance(exc, ModelFileError)
    return Report(
        worker=worker, kind="error", run_id=run_id, message=str(exc), worker_broken=broken
    )


def run_job(runner: DebateRunner, scratch: Path, job: Job) -> RunRecord:
    """Run a job's debate in scratch/<run id>: from its partial record, or anew."""
    run_dir = scratch / job.run_id
    if job.partial is not None:
        write_record(run_dir, job.partial)
        return runner.resume(run_dir)
    try:
        remove_tree(run_dir, scratch, "the run folder")  # never through a link
    except FileRefused as exc:
        raise LocaltableError(f"batch folder: {exc}") from None
    return runner.run(job.request.model_copy(update={"runs_dir": scratch}))


def run_group_job(
    runner: SessionRunner,
    scratch: Path,
    group: JobGroup,
    progress_of: Callable[[str], ProgressSink] = lambda run_id: lambda event: None,
) -> dict[str, RunRecord | LocaltableError]:
    """Run a group's debates together in scratch/<run id>, each from its partial
    record or anew; run id -> its record or its error."""
    work: list[GroupWork] = []
    for job in group.jobs:
        run_dir = scratch / job.run_id
        if job.partial is not None:
            write_record(run_dir, job.partial)
            work.append(run_dir)
            continue
        try:
            remove_tree(run_dir, scratch, "the run folder")  # never through a link
        except FileRefused as exc:
            raise LocaltableError(f"batch folder: {exc}") from None
        work.append(job.request.model_copy(update={"runs_dir": scratch}))
    return runner.run_group(work, progress_of)


def group_reports(worker: int, outcomes: dict[str, RunRecord | LocaltableError]) -> list[Report]:
    """A group's outcomes as the reports of its debates, in group order."""
    return [
        error_report(worker, run_id, outcome)
        if isinstance(outcome, LocaltableError)
        else Report(worker=worker, kind="done", run_id=run_id, record=outcome)
        for run_id, outcome in outcomes.items()
    ]


class InProcessPool:
    """One worker: the coordinator's process, running in the batch's .work folder.
    check: what a worker process checks before it says ready (WorkerCore.check), so
    that a missing model is one refusal before the first debate."""

    size = 1

    def __init__(self, runner: DebateRunner, check: Callable[[], object] = lambda: None) -> None:
        self.runner = runner
        self.check = check
        self.expected_models: dict[str, str | None] = {}
        self.work_dir: Path | None = None
        self.reports: deque[Report] = deque()
        self.job: Work | None = None

    def start(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        try:
            self.check()
        except LocaltableError as exc:
            self.reports.append(Report(worker=0, kind="refused", message=str(exc)))
            return
        self.reports.append(Report(worker=0, kind="ready", where=this_host()))

    def submit(self, worker: int, job: Work) -> None:
        self.job = job

    def retire(self, worker: int) -> None:
        pass

    def next(self) -> Report:
        if self.reports:
            return self.reports.popleft()
        job, self.job = self.job, None
        assert job is not None and self.work_dir is not None
        if isinstance(job, JobGroup):
            if not isinstance(self.runner, SessionRunner):
                raise LocaltableError("--group needs the batch's own Session runner")
            outcomes = run_group_job(self.runner, self.work_dir, job)
            self.reports.extend(group_reports(0, {r: outcomes[r] for r in job.run_ids}))
            return self.reports.popleft()
        try:
            record = run_job(self.runner, self.work_dir, job)
        except (RunInterrupted, KeyboardInterrupt):
            raise
        except LocaltableError as exc:
            return error_report(0, job.run_id, exc)
        return Report(worker=0, kind="done", run_id=job.run_id, record=record)

    def close(self) -> None:
        pass


# --- N worker processes on this machine ----------------------------------------


def _serve(conn: Connection, spec: WorkerSpec, scratch: Path, worker: int) -> None:
    """A worker process: check the models, then run jobs until told to stop.
    Ctrl-C is the coordinator's to handle; a worker whose coordinator died stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    where = f"{this_host()} (pid {os.getpid()})"
    # a --group's debates report their turns from threads of their own: one message at
    # a time, or their bytes interleave on the pipe
    sending = threading.Lock()

    def send(report: Report) -> None:
        if os.getppid() != parent:  # the coordinator is gone: nobody reads this
            raise SystemExit(0)
        with sending:
            conn.send(report.model_dump_json())

    core = WorkerCore(spec, scratch)
    try:
        try:
            models = core.check()
        except LocaltableError as exc:
            send(Report(worker=worker, kind="refused", where=where, message=str(exc)))
            return
        send(Report(worker=worker, kind="ready", where=where, models=models))
        while True:
            try:
                job = WORK.validate_json(conn.recv())
            except EOFError:
                return
            if isinstance(job, JobGroup):

                def group_turn(run_id: str, record: RunRecord) -> None:
                    send(Report(worker=worker, kind="turn", run_id=run_id, record=record))

                outcomes = core.run_group(job, group_turn)
                for report in group_reports(worker, {r: outcomes[r] for r in job.run_ids}):
                    send(report)
                continue

            def turn(record: RunRecord, run_id: str = job.run_id) -> None:
                send(Report(worker=worker, kind="turn", run_id=run_id, record=record))

            try:
                record = core.run(job, turn)
            except LocaltableError as exc:
                send(error_report(worker, job.run_id, exc))
                continue
            send(Report(worker=worker, kind="done", run_id=job.run_id, record=record))
    finally:
        core.close()
        # scratch is <batch>/.work/scratch/<worker>: nothing reached through a link goes
        with contextlib.suppress(OSError, FileRefused):
            remove_tree(scratch, scratch.parents[2], "the scratch folder")


class LocalPool:
    """N worker processes on this machine; a worker that dies is started again."""

    def __init__(self, spec: WorkerSpec, size: int) -> None:
        self.spec = spec.model_copy(update={"registry": BackendRegistry.here()})
        self.size = size
        self.expected_models: dict[str, str | None] = {}
        self.work_dir: Path | None = None
        self.procs: dict[int, BaseProcess] = {}
        self.conns: dict[int, Connection] = {}
        self.jobs: dict[int, list[str]] = {}  # worker -> run ids it is running
        self.restarts: dict[int, int] = {}
        self.reports: deque[Report] = deque()

    def start(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        for worker in range(self.size):
            self._spawn(worker)

    def _spawn(self, worker: int) -> None:
        assert self.work_dir is not None
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        scratch = self.work_dir / "scratch" / f"w{worker + 1}-{os.getpid()}-{len(self.procs)}"
        # Not a daemon: a daemonic process may not start children, and the worker's
        # llama.cpp engine is a child process of its own. retire() ends the worker and
        # the kernel ends its engine with it (the engine's parent-death signal).
        proc = ctx.Process(
            target=_serve,
            args=(child, self.spec, scratch, worker),
            daemon=False,
            name=f"localtable-worker-{worker + 1}",
        )
        proc.start()
        child.close()
        self.procs[worker], self.conns[worker] = proc, parent

    def submit(self, worker: int, job: Work) -> None:
        self.jobs[worker] = job.run_ids if isinstance(job, JobGroup) else [job.run_id]
        self.conns[worker].send(job.model_dump_json())

    def _lost(self, worker: int) -> Report:
        proc = self.procs.pop(worker)
        self.conns.pop(worker).close()
        proc.join(timeout=10)
        code = proc.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
        held = self.jobs.pop(worker, [])
        run_id = held[0] if held else None  # a group's first: the coordinator knows the rest
        self.restarts[worker] = self.restarts.get(worker, 0) + 1
        restarting = self.restarts[worker] <= MAX_RESTARTS
        if restarting:
            self._spawn(worker)
        return Report(worker=worker, kind="lost", run_id=run_id, restarting=restarting,
                      message=f"worker process {proc.pid} died ({how})")  # fmt: skip

    def next(self) -> Report:
        while not self.reports:
            if not self.conns:
                raise LocaltableError("every worker process died; see the messages above")
            by_handle: dict[Any, int] = {}  # a pipe or a process sentinel -> its worker
            for worker, conn in self.conns.items():
                by_handle[conn] = worker
                by_handle[self.procs[worker].sentinel] = worker
            for handle in wait(list(by_handle)):
                worker = by_handle[handle]
                if worker not in self.conns or any(r.worker == worker for r in self.reports):
                    continue
                conn = self.conns[worker]
                try:
                    if handle is conn or conn.poll():
                        report = Report.model_validate_json(conn.recv())
                    else:
                        report = self._lost(worker)
                except (EOFError, OSError):
                    report = self._lost(worker)
                if report.kind in ("done", "error"):
                    left = [r for r in self.jobs.pop(worker, []) if r != report.run_id]
                    if left:
                        self.jobs[worker] = left
                if report.kind == "refused":
                    self.retire(worker)
                self.reports.append(report)
        return self.reports.popleft()

    def retire(self, worker: int) -> None:
        proc = self.procs.pop(worker, None)
        conn = self.conns.pop(worker, None)
        busy = self.jobs.pop(worker, None) is not None
        if conn is not None:
            conn.close()
        if proc is not None:
            if busy:  # mid-debate (Ctrl-C): its finished turns are saved, the rest is lost
                proc.kill()
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)

    def close(self) -> None:
        for worker in list(self.procs):
            self.retire(worker)
        if self.work_dir is not None:
            with contextlib.suppress(OSError, FileRefused):  # a link there is left alone
                remove_tree(self.work_dir / "scratch", self.work_dir.parent, "the scratch folder")
