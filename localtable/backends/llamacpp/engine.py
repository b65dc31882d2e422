"""The run's handle on the engine worker process.

Every request goes over a pipe to localtable.backends.llamacpp.worker, with an id;
a receiver thread hands each answer to the caller waiting for it, so several
threads may have generations in flight at once (the turns of a round, Debate.run).
When the worker dies (a llama.cpp crash), every request in flight raises
EngineCrashed with the signal, and the next request starts a fresh worker and
reloads the models it had.

The worker is started from a thread of the Engine's own, which lives as long as
the Engine: the kernel kills the worker when the thread that started it ends
(its parent-death signal, worker.py), so a restart asked for by a short-lived
thread (one turn's) must not start it there.

When the models do not fit in memory together (localtable/backends/llamacpp/memory.py), the
engine holds one at a time: activating a model "parks" the others, keeping
only their vocabulary so that prompts can still be counted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import util as mp_util
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from localtable.backends.llamacpp.messages import (
    BatchGenerateRequest,
    BatchGenerateResult,
    EngineFailure,
    GenerateRequest,
    GenerateResult,
    LoadRequest,
    ModelInfo,
    Request,
    TokenizeRequest,
    TokenizeResult,
    TokenizerRequest,
    UnloadRequest,
)
from localtable.backends.promptpiece import PromptPiece

T = TypeVar("T")

# The worker's first lines: the parent's sys.path (as multiprocessing's spawn would
# give it), then serve. Not multiprocessing itself: its spawn imports the parent's
# __main__ (the CLI, a benchmark, a test module) in the child first, 0.3-0.6 s of
# every run's start spent before the first model can load.
_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
    "from localtable.backends.llamacpp.worker import main; main(sys.argv[1:3])"
)

_SIGNAL_HINTS = {
    signal.SIGSEGV: "segmentation fault in llama.cpp",
    signal.SIGABRT: "llama.cpp aborted",
    signal.SIGKILL: "killed, most likely out of memory",
    signal.SIGILL: "illegal instruction: llama-cpp-python was built for another CPU; "
    "reinstall it on this machine",
    signal.SIGBUS: "bus error: the model file changed or vanished while mapped",
}


class EngineCrashed(EngineFailure):
    """The worker process died; the request did not complete."""


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "engine process stopped answering"
    if exitcode < 0:
        sig = signal.Signals(-exitcode)
        hint = _SIGNAL_HINTS.get(sig, "killed by a signal")
        return f"engine process died with {sig.name} ({hint})"
    return f"engine process exited with status {exitcode}"


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait up to `timeout` for the worker to end. Popen.wait(timeout) polls in sleeps of
    up to 50 ms (60 ms of every run's end, measured); a pidfd wakes when it ends."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or it is gone already
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        return
    try:
        if select.select([pidfd], [], [], timeout)[0]:
            proc.wait()  # it has ended: this only collects its status
    finally:
        os.close(pidfd)


def _kill_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        _wait_exit(proc, timeout=5)


@dataclass
class _Waiting:
    """A request sent, until its answer (or the worker's death) arrives."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: tuple[str, Any] = ("crashed", "engine process stopped answering")
    on_text: Callable[[str], None] | None = None  # a streamed generation's pieces


class _Link:
    """One worker process, its pipe, and the requests waiting for its answers."""

    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection, owner: object) -> None:
        self.proc = proc
        self.conn = conn
        self.closing = False  # Engine.close(): the end is ours, not a crash
        self._sending = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiting] = {}
        self._ids = itertools.count(1)
        self._dead: str | None = None  # why the worker stopped answering
        # Kill the worker (it ignores SIGTERM) when the Engine is collected unclosed (the
        # receiver keeps this link alive) or, at the latest, at the interpreter's exit
        # (multiprocessing's exit hook runs the finalizers with an exitpriority).
        self.reaper = mp_util.Finalize(owner, _kill_worker, args=(proc,), exitpriority=10)
        self.receiver = threading.Thread(
            target=self._receive, daemon=True, name="localtable-engine-answers"
        )
        self.receiver.start()

    def call(self, req: Request, on_text: Callable[[str], None] | None = None) -> tuple[str, Any]:
        waiting = _Waiting(on_text=on_text)
        with self._lock:
            if self._dead is not None:
                return "crashed", self._dead
            request_id = next(self._ids)
            self._waiting[request_id] = waiting
        try:
            with self._sending:
                self.conn.send((request_id, req))
        except (OSError, ValueError):
            pass  # the worker is gone: the receiver says why, to every request waiting
        waiting.done.wait()
        return waiting.answer

    def _receive(self) -> None:
        while True:
            try:
                request_id, status, payload = self.conn.recv()
            except (EOFError, OSError):
                break
            if status == "text":  # a piece of a generation still under way
                with self._lock:
                    streaming = self._waiting.get(request_id)
                if streaming is not None and streaming.on_text is not None:
                    with contextlib.suppress(Exception):  # a listener's bug stops no run
                        streaming.on_text(payload)
                continue
            with self._lock:
                waiting = self._waiting.pop(request_id, None)
            if waiting is not None:  # else its caller stopped waiting (Ctrl-C)
                waiting.answer = (status, payload)
                waiting.done.set()
        if self.closing:
            reason = "the engine was closed"
        else:
            _wait_exit(self.proc, timeout=10)
            reason = describe_exit(self.proc.returncode)
        with self._lock:
            self._dead = reason
            left, self._waiting = list(self._waiting.values()), {}
        for waiting in left:
            waiting.answer = ("crashed", reason)
            waiting.done.set()
        self.conn.close()

    def close(self) -> None:
        """Kill the worker (if alive) and wait for the receiver to fail what waits."""
        self.closing = True
        self.reaper()  # kills the worker if it is alive, once
        if threading.current_thread() is not self.receiver:
            self.receiver.join(timeout=30)


class Engine:
    """One worker process holding every loaded model of a run."""

    def __init__(self) -> None:
        self._link: _Link | None = None
        self._lock = threading.RLock()  # starting, loading, parking: one at a time
        self._launcher: ThreadPoolExecutor | None = None
        self._loaded: dict[str, LoadRequest] = {}
        self._active: list[str] = []  # loaded in the worker; the others are parked
        self.infos: dict[str, ModelInfo] = {}
        self.one_at_a_time = False  # set when the models do not fit in memory together
        self.load_count: dict[str, int] = {}

    @property
    def active(self) -> list[str]:
        return list(self._active)

    @property
    def worker_pid(self) -> int | None:
        link = self._link
        return link.proc.pid if link is not None else None

    def _spawn(self) -> _Link:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            fd = theirs.fileno()
            argv = [sys.executable, "-c", _BOOTSTRAP, str(fd), str(os.getpid())]
            proc = subprocess.Popen(
                [*argv, json.dumps(sys.path)], pass_fds=(fd,), stdin=subprocess.DEVNULL
            )
            conn = Connection(ours.detach())
        return _Link(proc, conn, owner=self)

    def _start(self) -> None:
        if self._launcher is None:
            self._launcher = ThreadPoolExecutor(1, thread_name_prefix="localtable-engine-start")
        self._link = self._launcher.submit(self._spawn).result()
        for req in self._loaded.values():  # after a crash: bring the models back
            if req.model_key in self._active:
                self.infos[req.model_key] = self._send(req, ModelInfo)
            else:
                self._send(TokenizerRequest(model_key=req.model_key, path=req.path), type(None))

    def start(self) -> None:
        """Start the worker now, so that it starts up while the caller plans the run;
        otherwise the first request starts it."""
        with self._lock:
            if self._link is None:
                self._start()

    def _send(
        self, req: Request, expect: type[T], on_text: Callable[[str], None] | None = None
    ) -> T:
        link = self._link
        assert link is not None
        status, payload = link.call(req, on_text)
        if status == "crashed":
            with self._lock:
                if self._link is link:  # the next request starts a fresh worker
                    self._link = None
                    link.close()
            raise EngineCrashed(payload)
        if status == "error":
            raise EngineFailure(payload)
        if expect is type(None):
            return None
        assert isinstance(payload, expect)
        return payload

    def _call(
        self, req: Request, expect: type[T], on_text: Callable[[str], None] | None = None
    ) -> T:
        with self._lock:
            if self._link is None:
                self._start()
        return self._send(req, expect, on_text)

    def load(self, req: LoadRequest) -> ModelInfo:
        with self._lock:
            return self._load(req)

    def _load(self, req: LoadRequest) -> ModelInfo:
        key = req.model_key
        if key in self._active and self._loaded.get(key) == req:
            return self.infos[key]
        if self.one_at_a_time:
            for other in self.active:
                if other != key:
                    self.park(other)
        info = self._call(req, ModelInfo)
        self._loaded[key] = req
        self.infos[key] = info
        if key not in self._active:
            self._active.append(key)
        self.load_count[key] = self.load_count.get(key, 0) + 1
        return info

    def park(self, model_key: str) -> None:
        """Free a model's weights and KV caches, keeping its vocabulary for counting tokens."""
        with self._lock:
            if model_key in self._active:
                self._active.remove(model_key)
                if self._link is not None:
                    req = UnloadRequest(model_key=model_key, keep_tokenizer=True)
                    self._call(req, type(None))

    def activate(self, model_key: str) -> None:
        """Make sure a model is loaded (parking the others when one at a time)."""
        with self._lock:
            if model_key not in self._active:
                self._load(self._loaded[model_key])

    def unload(self, model_key: str) -> None:
        with self._lock:
            self._loaded.pop(model_key, None)
            self.infos.pop(model_key, None)
            if model_key in self._active:
                self._active.remove(model_key)
            if self._link is not None:
                self._call(UnloadRequest(model_key=model_key), type(None))

    def count_tokens(self, model_key: str, pieces: list[PromptPiece], add_bos: bool) -> int:
        req = TokenizeRequest(model_key=model_key, pieces=pieces, add_bos=add_bos)
        return self._call(req, TokenizeResult).n_tokens

    def generate(
        self, req: GenerateRequest, on_text: Callable[[str], None] | None = None
    ) -> GenerateResult:
        """One generation; with req.stream, on_text gets its text as the worker decodes
        it (on the receiver thread), before this returns."""
        return self._call(req, GenerateResult, on_text)

    def generate_group(self, req: BatchGenerateRequest) -> BatchGenerateResult:
        """Generations on one model decoded together in the worker (batchdecode.py)."""
        return self._call(req, BatchGenerateResult)

    def close(self) -> None:
        """Stop the worker; a request still waiting (a turn abandoned after Ctrl-C)
        raises EngineCrashed."""
        with self._lock:
            self._loaded.clear()
            self._active.clear()
            self.infos.clear()
            link, self._link = self._link, None
            if link is not None:
                link.close()
            if self._launcher is not None:
                self._launcher.shutdown(wait=False)
                self._launcher = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
