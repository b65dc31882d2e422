"""The run's handle on the engine worker process.

Every request goes over a pipe to localtable.worker. When the worker dies
(a llama.cpp crash), the request raises EngineCrashed with the signal, and
the next request starts a fresh worker and reloads the models it had.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TypeVar

from localtable.engine_api import (
    EngineFailure,
    GenerateRequest,
    GenerateResult,
    LoadRequest,
    ModelInfo,
    PromptPiece,
    Request,
    TokenizeRequest,
    TokenizeResult,
    UnloadRequest,
)
from localtable.worker import serve

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


class Engine:
    """One worker process holding every loaded model of a run."""

    def __init__(self) -> None:
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._loaded: dict[str, LoadRequest] = {}
        self.infos: dict[str, ModelInfo] = {}

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
        for req in self._loaded.values():  # after a crash: bring the models back
            self.infos[req.model_key] = self._send(req, ModelInfo)

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
        if req.model_key in self.infos and self._loaded.get(req.model_key) == req:
            return self.infos[req.model_key]
        info = self._call(req, ModelInfo)
        self._loaded[req.model_key] = req
        self.infos[req.model_key] = info
        return info

    def unload(self, model_key: str) -> None:
        self._loaded.pop(model_key, None)
        self.infos.pop(model_key, None)
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
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
        self._proc, self._conn = None, None

    def close(self) -> None:
        self._loaded.clear()
        self.infos.clear()
        self._discard()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
