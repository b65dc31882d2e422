"""Batch workers as Ray actors: `localtable batch --ray ADDRESS --workers N`.

Each actor is a worker of workers.py (WorkerCore: one Session, models loaded
once) on some node of the cluster. It asks Ray for the CPUs its models' threads
use, and a GPU when a panel model has GPU layers. Before its first debate it
resolves and hashes every model of the panel on its own node, and refuses,
naming the node, when a file is missing or differs: a batch never downloads.
The debates' records stream back to the driver after every finished turn
(a streaming generator), and the driver's coordinator (run.py) writes them,
so the batch folder is the same as a local batch's. An actor that dies (killed,
node lost) is replaced, and its debate goes back to the queue with the record
of its last finished turn.

Ray is an optional extra (localtable[ray]) and is imported only here, only when
--ray is given.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from localtable.batch.workers import (
    MAX_RESTARTS,
    Job,
    JobGroup,
    Report,
    Work,
    WorkerCore,
    WorkerSpec,
    error_report,
    this_host,
)
from localtable.errors import ConfigError, LocaltableError
from localtable.record import RunRecord
from localtable.session.session import BackendRegistry, Session
from localtable.templates import TemplateSet

NAMESPACE = "localtable"
PLACE_TIMEOUT = 600.0  # seconds an actor may wait for a node with the resources it asks for
# Seconds to open a TCP connection to the cluster's address before ray.init: Ray itself
# retries an address nobody listens on for minutes, with only its own warnings.
CONNECT_TIMEOUT = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A ConfigError, within `timeout`, when nothing accepts a TCP connection at the
    cluster's host:port (or ray://host:port). Other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        return
    fix = "start one with `ray start --head`, or give --ray auto for a private one on this machine"
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"--ray {address}: the port {int(port)} is out of range (1-65535)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except TimeoutError:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} (no connection within {timeout:g} s); {fix}"
        ) from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({why}); {fix}") from None


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray needs Ray, an optional extra: pip install 'localtable[ray]'"
        ) from None
    return ray


class DebateWorker:
    """The actor (wrapped by ray.remote in RayPool.start)."""

    def __init__(self, spec_json: str) -> None:
        import ray
        from ray.util import get_node_ip_address

        self.spec = WorkerSpec.model_validate_json(spec_json)
        context = ray.get_runtime_context()
        ip = get_node_ip_address()  # type: ignore[no-untyped-call]
        self.where = f"{this_host()} ({ip}, node {context.get_node_id()[:8]})"
        self.scratch = Path(tempfile.mkdtemp(prefix="localtable-worker-"))
        self.core: WorkerCore | None = None
        # Every debate runs on this one thread, which lives as long as the actor: the
        # llama.cpp engine process it starts is killed by the kernel when the thread
        # that started it ends (its parent-death signal), so a thread per debate
        # would lose the loaded models after each one.
        self.debates = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localtable-debate")

    def check(self) -> str:
        """Resolve and hash every model of the panel on this node."""
        try:
            self.core = WorkerCore(self.spec, self.scratch)
            models = self.core.check()
        except LocaltableError as exc:
            message = (
                f"{exc}. A batch downloads nothing: put the file on {self.where} (copy it to "
                "the path models.toml gives, or run `localtable pull` there), then run the "
                "same batch command again"
            )
            return Report(
                worker=0, kind="refused", where=self.where, message=message
            ).model_dump_json()
        return Report(worker=0, kind="ready", where=self.where, models=models).model_dump_json()

    def run(self, job_json: str) -> Iterator[str]:
        """A streaming generator: a report per finished turn, then done or error."""
        job = Job.model_validate_json(job_json)
        core = self.core
        assert core is not None
        reports: queue.Queue[Report | BaseException] = queue.Queue()

        def turn(record: RunRecord) -> None:
            reports.put(Report(worker=0, kind="turn", run_id=job.run_id, record=record))

        def work() -> None:
            try:
                record = core.run(job, turn)
                reports.put(Report(worker=0, kind="done", run_id=job.run_id, record=record))
            except LocaltableError as exc:
                reports.put(error_report(0, job.run_id, exc))
            except BaseException as exc:  # a bug: fail the call, the driver replaces the actor
                reports.put(exc)

        self.debates.submit(work)
        while True:
            item = reports.get()
            if isinstance(item, BaseException):
                raise item
            yield item.model_dump_json()
            if item.kind in ("done", "error"):
                return

    def close(self) -> None:
        if self.core is not None:
            self.debates.submit(self.core.close).result()
        self.debates.shutdown(wait=False)
        shutil.rmtree(self.scratch, ignore_errors=True)


class RayPool:
    """N DebateWorker actors on a Ray cluster; use it as a context manager."""

    def __init__(
        self, spec: WorkerSpec, size: int, address: str, place_timeout: float = PLACE_TIMEOUT
    ) -> None:
        self.spec = spec.model_copy(update={"registry": BackendRegistry.here()})
        self.size = size
        self.address = address
        self.place_timeout = place_timeout
        self.expected_models: dict[str, str | None] = {}
        self.ray: Any = None
        self.actor_class: Any = None
        self.actors: dict[int, Any] = {}
        self.checks: dict[int, tuple[Any, float]] = {}  # worker -> (check ref, deadline)
        self.streams: dict[int, Any] = {}  # worker -> the generator of its job
        self.jobs: dict[int, str] = {}
        self.restarts: dict[int, int] = {}
        self.reports: deque[Report] = deque()
        self.cpus = 1
        self.gpus = 0

    # -- the cluster ------------------------------------------------------------

    def __enter__(self) -> RayPool:
        if self.address == "auto" and "ray" not in sys.modules:
            # a private instance for this batch, reachable on this machine only
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if self.address != "auto":
            check_reachable(self.address)  # before Ray, which retries for minutes
        ray = self.ray = import_ray()
        try:
            if self.address == "auto":
                ray.init(address="local", namespace=NAMESPACE, include_dashboard=False,
                         log_to_driver=False)  # fmt: skip
            else:
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(
                f"cannot reach the Ray cluster at {self.address} ({exc}); start one with "
                "`ray start --head`, or give --ray auto for a private one on this machine"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        if self.ray is not None:
            self.ray.shutdown()

    def _resources(self) -> tuple[int, int]:
        """CPUs and GPUs each actor asks for: the models' threads (or an even share of
        the cluster's CPUs, at most one node's), and a GPU if a model has GPU layers."""
        loaded = self.spec.loaded
        models = [
            loaded.config.models[p.model] for p in loaded.config.panel(self.spec.panel).panelists
        ]
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        largest = max((int(n["Resources"].get("CPU", 0)) for n in nodes), default=1)
        cpus = max((m.threads for m in models), default=0)
        if not cpus:
            total = int(self.ray.cluster_resources().get("CPU", 1))
            cpus = max(1, min(largest, total // self.size))
        gpus = 1 if any(m.gpu_layers != 0 for m in models) else 0
        return cpus, gpus

    def _expected(self) -> dict[str, str | None]:
        """The models as this machine has them, when it has them: every node must match."""
        with Session(TemplateSet(self.spec.template_dir), self.spec.loaded) as session:
            try:
                planned = session.plan(
                    self.spec.loaded.config.panel(self.spec.panel), self.spec.loaded,
                    verify=False, reuse_prefix=self.spec.reuse_prefix,
                    memory_budget=self.spec.memory_budget,
                )  # fmt: skip
            except LocaltableError:
                return {}  # the driver has no model files: the first worker's are the reference
        return {m.name: m.sha256 for m in planned.models}

    # -- the pool ---------------------------------------------------------------

    def start(self, work_dir: Path) -> None:
        self.cpus, self.gpus = self._resources()
        self.spec = self.spec.model_copy(update={"threads": self.cpus})
        self.expected_models = self._expected()
        self.actor_class = self.ray.remote(DebateWorker)
        for worker in range(self.size):
            self._spawn(worker)

    def _spawn(self, worker: int) -> None:
        actor = self.actor_class.options(
            name=f"localtable-worker-{worker + 1}-{os.getpid()}-{self.restarts.get(worker, 0)}",
            num_cpus=self.cpus,
            num_gpus=self.gpus,
            max_restarts=0,
        ).remote(self.spec.model_dump_json())
        self.actors[worker] = actor
        self.checks[worker] = (actor.check.remote(), time.monotonic() + self.place_timeout)

    def submit(self, worker: int, job: Work) -> None:
        if isinstance(job, JobGroup):  # pools.run_on_workers refuses --group with --ray
            raise ConfigError("--group runs on this machine's workers, not on Ray actors")
        self.jobs[worker] = job.run_id
        run = self.actors[worker].run.options(num_returns="streaming")
        self.streams[worker] = run.remote(job.model_dump_json())

    def retire(self, worker: int) -> None:
        actor = self.actors.pop(worker, None)
        self.checks.pop(worker, None)
        busy = self.streams.pop(worker, None) is not None
        if actor is None:
            return
        if not busy:  # let it close its engine and scratch folder
            with contextlib.suppress(Exception):  # it may be dead already
                self.ray.get(actor.close.remote(), timeout=60)
        self.ray.kill(actor, no_restart=True)

    def _lost(self, worker: int, exc: BaseException) -> Report:
        actor = self.actors.pop(worker, None)
        self.checks.pop(worker, None)
        self.streams.pop(worker, None)
        if actor is not None:
            self.ray.kill(actor, no_restart=True)
        run_id = self.jobs.pop(worker, None)
        self.restarts[worker] = self.restarts.get(worker, 0) + 1
        restarting = self.restarts[worker] <= MAX_RESTARTS
        if restarting:
            self._spawn(worker)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Report(worker=worker, kind="lost", run_id=run_id, restarting=restarting,
                      message=f"Ray actor lost ({type(exc).__name__}: {reason})")  # fmt: skip

    def _unplaced(self) -> None:
        now = time.monotonic()
        for worker, (_, deadline) in list(self.checks.items()):
            if now >= deadline:
                self.retire(worker)
                gpu = f" and {self.gpus} GPU" if self.gpus else ""
                self.reports.append(Report(
                    worker=worker, kind="refused",
                    message=f"no node had {self.cpus} CPUs{gpu} free for it within "
                    f"{self.place_timeout:.0f}s; add nodes or give fewer --workers",
                ))  # fmt: skip

    def next(self) -> Report:
        ray = self.ray
        while not self.reports:
            handles: dict[Any, tuple[str, int]] = {}
            for worker, (ref, _) in self.checks.items():
                handles[ref] = ("check", worker)
            for worker, stream in self.streams.items():
                handles[stream] = ("run", worker)
            if not handles:
                raise LocaltableError("no Ray worker is left; see the messages above")
            deadlines = [deadline for _, deadline in self.checks.values()]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
            if not ready:
                self._unplaced()
                continue
            kind, worker = handles[ready[0]]
            try:
                if kind == "check":
                    del self.checks[worker]
                    report = Report.model_validate_json(ray.get(ready[0]))
                else:
                    try:
                        report = Report.model_validate_json(ray.get(next(self.streams[worker])))
                    except StopIteration:
                        del self.streams[worker]
                        continue
            except ray.exceptions.RayError as exc:
                self.reports.append(self._lost(worker, exc))
                continue
            if report.kind in ("done", "error"):
                self.streams.pop(worker, None)
                self.jobs.pop(worker, None)
            if report.kind == "refused":
                self.retire(worker)
            self.reports.append(report.model_copy(update={"worker": worker}))
        return self.reports.popleft()

    def close(self) -> None:
        for worker in list(self.actors):
            self.retire(worker)
