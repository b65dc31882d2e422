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

A batch's `--group N` decodes the rounds of N debates together (DebateGroup):
each round waits until every debate of the group has reached it or ended, then
their turns form one DecodeGroup whose members are `<run id>/<panelist>`, the
debates in group order. Which debates join a round depends only on their
records, so the same records give the same groups.
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

    def generate(self, request: TurnRequest, who: str = "") -> TurnResult:
        """who: the member asking (a debate group's `<run id>/<panelist>`); by default
        the request's panelist. The backend sees it as the request's panelist, so that
        it names the members it decoded together."""
        who = who or request.panelist
        if who != request.panelist:
            request = request.model_copy(update={"panelist": who})
        asked = _Asked(request)
        with self._lock:
            self.asked[who] = asked
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


class DebateView:
    """One debate's side of a round of a DebateGroup: its panelists' generations go to
    the round's DecodeGroup as `<run id>/<panelist>` (what SessionSpeaker calls)."""

    def __init__(self, group: DecodeGroup, run_id: str) -> None:
        self.group = group
        self.prefix = f"{run_id}/"

    @property
    def running(self) -> set[str]:
        n = len(self.prefix)
        return {who[n:] for who in self.group.running if who.startswith(self.prefix)}

    def generate(self, request: TurnRequest) -> TurnResult:
        return self.group.generate(request, self.prefix + request.panelist)

    def leave(self, panelist: str) -> None:
        self.group.leave(self.prefix + panelist)


class DebateGroup:
    """The debates of a batch's --group, whose rounds are decoded together.

    Each debate joins each round it runs turns in (`join`, from its own thread); the
    round's DecodeGroup is made once every debate of the group has joined that round
    or a later one, or ended (`end`): so a debate that has nothing to run in a round
    (resumed past it) or that stopped holds no one up, and which debates share a
    round depends only on their records."""

    def __init__(self, runs: list[str]) -> None:
        self.runs = runs
        self.at = dict.fromkeys(runs, 0)  # the last round each debate joined
        self.ended: set[str] = set()
        self.joined: dict[int, dict[str, tuple[list[str], Callable[[str], Member]]]] = {}
        self.rounds: dict[int, DecodeGroup] = {}
        self._changed = threading.Condition()

    def join(
        self, run_id: str, round_no: int, members: list[str], where: Callable[[str], Member]
    ) -> DebateView:
        """Wait for the round's other debates; then this debate's view of its group."""
        with self._changed:
            self.at[run_id] = round_no
            self.joined.setdefault(round_no, {})[run_id] = (members, where)
            self._changed.notify_all()
            while round_no not in self.rounds:
                if all(r in self.ended or self.at[r] >= round_no for r in self.runs):
                    self.rounds[round_no] = self._round(round_no)
                    self._changed.notify_all()
                else:
                    self._changed.wait()
            return DebateView(self.rounds[round_no], run_id)

    def end(self, run_id: str) -> None:
        """The debate asks for no more rounds (finished, failed or stopped)."""
        with self._changed:
            self.ended.add(run_id)
            self._changed.notify_all()

    def _round(self, round_no: int) -> DecodeGroup:
        joined = self.joined[round_no]
        where_of = {r: where for r, (_, where) in joined.items()}
        members = [f"{r}/{p}" for r in self.runs if r in joined for p in joined[r][0]]

        def where(who: str) -> Member:
            run_id, panelist = who.split("/", 1)  # a run id holds no "/" (record.RUN_ID)
            return where_of[run_id](panelist)

        return DecodeGroup(members, where)
