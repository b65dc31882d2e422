"""The run's handle on the engine worker process.

Every request goes over a pipe to localtable.backends.llamacpp.worker. When the worker dies
(a llama.cpp crash), the request raises EngineCrashed with the signal, and
the next request starts a fresh worker and reloads the models it had.

When the models do not fit in memory together (localtable/backends/llamacpp/memory.py), the
engine holds one at a time: activating a model "parks" the others, keeping
only their vocabulary so that prompts can still be counted.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing import util as mp_util
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TypeVar

from localtable.backends.chatformat import PromptPiece
from localtable.backends.llamacpp.messages import (
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
from localtable.backends.llamacpp.worker import serve

T = TypeVar("T")

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


def _kill_worker(proc: BaseProcess) -> None:
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5)


class Engine:
    """One worker process holding every loaded model of a run."""

    def __init__(self) -> None:
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._reaper: mp_util.Finalize | None = None
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
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(child,), daemon=True, name="localtable-engine")
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        # The worker ignores SIGTERM, which multiprocessing sends its children at exit
        # before waiting for them: an engine left open must still not hang the exit.
        self._reaper = mp_util.Finalize(self, _kill_worker, args=(proc,), exitpriority=10)
        for req in self._loaded.values():  # after a crash: bring the models back
            if req.model_key in self._active:
                self.infos[req.model_key] = self._send(req, ModelInfo)
            else:
                self._send(TokenizerRequest(model_key=req.model_key, path=req.path), type(None))

    def _send(self, req: Request, expect: type[T]) -> T:
        assert self._conn is not None and self._proc is not None
        try:
            self._conn.send(req)
            status, payload = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._proc.join(timeout=10)
            reason = describe_exit(self._proc.exitcode)
            self._discard()
            raise EngineCrashed(reason) from None
        if status == "error":
            raise EngineFailure(payload)
        if expect is type(None):
            return None
        assert isinstance(payload, expect)
        return payload

    def _call(self, req: Request, expect: type[T]) -> T:
        if self._proc is None:
            self._start()
        return self._send(req, expect)

    def load(self, req: LoadRequest) -> ModelInfo:
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
        if model_key in self._active:
            self._active.remove(model_key)
            if self._proc is not None:
                req = UnloadRequest(model_key=model_key, keep_tokenizer=True)
                self._call(req, type(None))

    def activate(self, model_key: str) -> None:
        """Make sure a model is loaded (parking the others when one at a time)."""
        if model_key not in self._active:
            self.load(self._loaded[model_key])

    def unload(self, model_key: str) -> None:
        self._loaded.pop(model_key, None)
        self.infos.pop(model_key, None)
        if model_key in self._active:
            self._active.remove(model_key)
        if self._proc is not None:
            self._call(UnloadRequest(model_key=model_key), type(None))

    def count_tokens(self, model_key: str, pieces: list[PromptPiece], add_bos: bool) -> int:
        req = TokenizeRequest(model_key=model_key, pieces=pieces, add_bos=add_bos)
        return self._call(req, TokenizeResult).n_tokens

    def generate(self, req: GenerateRequest) -> GenerateResult:
        return self._call(req, GenerateResult)

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._reaper is not None:
            self._reaper()  # kills the worker if it is alive, once
        self._proc, self._conn, self._reaper = None, None, None

    def close(self) -> None:
        self._loaded.clear()
        self._active.clear()
        self.infos.clear()
        self._discard()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
