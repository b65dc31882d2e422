"""A round's generations gathered into groups decoded together (`--decode batched`).

Debate.run_round runs each turn of the round on a thread of its own; each turn
asks for its generations one after another (a turn, then perhaps its
continuation), through the speaker. A DecodeGroup holds each request until
every turn still running has either asked or ended, then hands them all to the
backends at once, in turn order: step 1 is the round's first generations,
step 2 the continuations step 1 left to make, and so on. What a step holds
depends only on what the steps before it returned, never on which thread came
first, so the same record gives the same groups: replay and resume rebuild them
(the record keeps each generation's group, Generation.batch).

A backend with `generate_group` decodes its part of a step together (the
llama.cpp backend: the requests on one model as sequences of one context); one
without it generates its part one request after another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from localtable.backends.base import Backend, TurnFailed, TurnRequest, TurnResult
from localtable.record import DecodeBatch


@dataclass
class _Asked:
    request: TurnRequest
    done: threading.Event = field(default_factory=threading.Event)
    result: TurnResult | None = None
    error: BaseException | None = None


@dataclass
class Member:
    """Where a panelist's generation goes: its model, on its backend."""

    model: str
    backend: Backend


class DecodeGroup:
    """The generations of a round's turns (`members`, in turn order), in steps."""

    def __init__(self, members: list[str], where: Callable[[str], Member]) -> None:
        self.members = members
        self.where = where
        self.running = set(members)  # turns that may still ask for a generation
        self.asked: dict[str, _Asked] = {}
        self.step = 0
        self._lock = threading.Lock()

    def generate(self, request: TurnRequest) -> TurnResult:
        asked = _Asked(request)
        with self._lock:
            self.asked[request.panelist] = asked
            ready = self._ready()
        if ready is not None:
            self._run(*ready)
        asked.done.wait()
        if asked.error is not None:
            raise asked.error
        assert asked.result is not None
        return asked.result

    def leave(self, panelist: str) -> None:
        """The turn ended: it asks for nothing more."""
        with self._lock:
            self.running.discard(panelist)
            ready = self._ready()
        if ready is not None:
            self._run(*ready)

    def _ready(self) -> tuple[int, list[_Asked]] | None:
        """(step, its requests in turn order) once every running turn has asked."""
        if not self.asked or set(self.asked) != self.running:
            return None
        self.step += 1
        step = [self.asked[name] for name in self.members if name in self.asked]
        self.asked = {}
        return self.step, step

    def _run(self, step: int, asked: list[_Asked]) -> None:
        try:
            by_backend: dict[int, list[_Asked]] = {}
            backends: dict[int, Backend] = {}
            for a in asked:
                backend = self.where(a.request.panelist).backend
                by_backend.setdefault(id(backend), []).append(a)
                backends[id(backend)] = backend
            for key, part in by_backend.items():
                self._run_part(step, backends[key], part)
        except BaseException as exc:  # a bug: every waiting turn sees it
            for a in asked:
                if not a.done.is_set():
                    a.error = exc
                    a.done.set()
            raise

    def _run_part(self, step: int, backend: Backend, part: list[_Asked]) -> None:
        together = getattr(backend, "generate_group", None)
        turns = [(self.where(a.request.panelist).model, a.request) for a in part]
        if together is not None:
            results: list[TurnResult | TurnFailed] = together(turns)
        else:
            results = []
            for model, request in turns:
                try:
                    results.append(backend.seat(model).generate(request))
                except TurnFailed as exc:
                    results.append(exc)
        for a, result in zip(part, results, strict=True):
            if isinstance(result, TurnFailed):
                a.error = result
            else:
                members = result.decoded_with or [a.request.panelist]
                a.result = result.model_copy(
                    update={"batch": DecodeBatch(step=step, members=members)}
                )
            a.done.set()
