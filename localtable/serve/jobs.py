"""The server's debates: one runs at a time in a worker process the server owns
(job.py); the others wait in a queue. Each job keeps its events, so a page that opens
late sees the whole debate so far, then the rest as it comes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from localtable.serve.job import DebateSpec

# The worker's first lines: the server's sys.path, then the job (as the engine does).
_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
    "from localtable.serve.job import main; main(sys.argv[1:3])"
)
MAX_LINE = 1 << 20  # one event line, at most (a piece of text is a few bytes)
MAX_QUEUE = 20


@dataclass
class Job:
    spec: DebateSpec
    state: str = "queued"  # queued | running | done | cancelled
    events: list[dict[str, Any]] = field(default_factory=list)
    listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = field(
        default_factory=list
    )
    proc: subprocess.Popen[bytes] | None = None


class QueueFull(Exception):
    pass


class Jobs:
    """Debates started from the page, run one at a time, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.order: list[str] = []  # waiting, first to run first
        # Workers start from this one thread, which lives as long as the server: a
        # worker's parent-death signal fires when the *thread* that started it ends
        # (the next debate is started by the reader thread of the last, which ends).
        self.launcher = ThreadPoolExecutor(1, thread_name_prefix="localtable-serve-start")

    @property
    def running(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.state == "running"), None)

    def submit(self, spec: DebateSpec) -> Job:
        with self.lock:
            if len(self.order) >= MAX_QUEUE:
                raise QueueFull(f"{MAX_QUEUE} debates are waiting already; try again later")
            job = Job(spec)
            self.jobs[spec.run_id] = job
            self.order.append(spec.run_id)
            self._queued_events()
            self._next()
        return job

    def _queued_events(self) -> None:
        running = self.running
        for position, run_id in enumerate(self.order, start=1):
            ahead = running.spec.run_id if running else ""
            self._add(self.jobs[run_id], {"kind": "queued", "position": position, "ahead": ahead})

    def _next(self) -> None:
        if self.running is not None or not self.order:
            return
        job = self.jobs[self.order.pop(0)]
        job.state = "running"
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _read) the worker's stderr, for an end without a reason
        argv = [sys.executable, "-c", _BOOTSTRAP, job.spec.model_dump_json(), str(os.getpid())]
        job.proc = self.launcher.submit(
            subprocess.Popen, [*argv, json.dumps(sys.path)], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=log,
        ).result()  # fmt: skip
        self._add(job, {"kind": "started", "pid": job.proc.pid})
        self._queued_events()
        name = f"localtable-serve-read-{job.spec.run_id}"
        threading.Thread(target=self._read, args=(job, log), daemon=True, name=name).start()

    def _read(self, job: Job, log: Any) -> None:
        assert job.proc is not None and job.proc.stdout is not None
        ended = False
        for raw in iter(lambda: job.proc.stdout.readline(MAX_LINE), b""):  # type: ignore[union-attr]
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                ended = ended or event.get("kind") == "end"
                with self.lock:
                    self._add(job, event)
        code = job.proc.wait()
        with self.lock:
            if not ended:
                log.seek(0)
                tail = log.read()[-400:].decode("utf-8", "replace").strip().splitlines()
                why = tail[-1] if tail else f"the worker process exited with status {code}"
                self._add(job, {"kind": "end", "status": "error", "error": why})
            log.close()
            job.state = "done"
            self._next()

    def _add(self, job: Job, event: dict[str, Any]) -> None:
        job.events.append(event)
        for loop, queue in list(job.listeners):
            with contextlib.suppress(RuntimeError):  # its loop closed: the page went away
                loop.call_soon_threadsafe(queue.put_nowait, event)

    def listen(self, run_id: str) -> tuple[list[dict[str, Any]], asyncio.Queue[dict[str, Any]]]:
        """The job's events so far, and a queue of those to come."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self.lock:
            job = self.jobs[run_id]
            job.listeners.append((asyncio.get_running_loop(), queue))
            return list(job.events), queue

    def forget(self, run_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self.lock:
            job = self.jobs.get(run_id)
            if job is not None:
                job.listeners = [(lp, q) for lp, q in job.listeners if q is not queue]

    def stop(self, run_id: str) -> bool:
        """Stop a debate as Ctrl-C does (SIGTERM: the worker ignores SIGINT, which a
        terminal's Ctrl-C sends the server too (its record stays resumable), or take it out of
        the queue. False when it is not the server's or has ended."""
        with self.lock:
            job = self.jobs.get(run_id)
            if job is None or job.state in ("done", "cancelled"):
                return False
            if job.state == "queued":
                self.order.remove(run_id)
                job.state = "cancelled"
                self._add(job, {"kind": "end", "status": "cancelled", "error": "taken out of "
                                "the queue before it started"})  # fmt: skip
                self._queued_events()
                return True
            if job.proc is not None and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)
            return True

    def close(self, timeout: float = 60.0) -> None:
        """The server stops: the queue is dropped and the running debate stopped as by
        Ctrl-C, waiting for its record to be written."""
        with self.lock:
            self.order.clear()
            job = self.running
        if job is not None and job.proc is not None and job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
            try:
                job.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                job.proc.kill()
