"""Turns of a round run at the same time (issue #17): fast, on fake speakers.

Every wait here is on an event that the code under test must cause; the timeouts
only turn a hang into a failure.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from localtable.backends.base import Backend, BackendDown, TurnRequest, TurnResult
from localtable.backends.llamacpp.backend import LlamaCppBackend
from localtable.cli_output import ProgressPrinter
from localtable.debate.protocol import Debate, ProgressEvent
from localtable.record import RunRecord, read_record, transcript_sha256
from localtable.session.run import RunInterrupted, execute
from localtable.session.session import SessionSpeaker
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, crash, make_record

WAIT = 30  # seconds: far beyond what any step takes; reached only when a test fails
R1 = "Reasoning: because {a}\nAnswer: {a}"
LABELS = "Position A: Yes\nPosition B: No\nA1: A\nB2: B\nC3: A"
R2 = "Reasoning: again.\nInfluenced by: nobody\nDecision: maintained\nPosition: {p}\nAnswer: {a}"
SUMMARY = "Summary: They talked.\nCounterpoint: Safety risks.\nAnswer: Yes, mostly."


def replies(rounds: int = 2) -> dict[str, list[Any]]:
    """A1 also labels the rounds and writes the summary."""
    if rounds == 1:
        return {
            "A1": [R1.format(a="Yes, it helps."), LABELS, SUMMARY],
            "B2": [R1.format(a="No, it harms.")],
            "C3": [R1.format(a="Yes, mostly so.")],
        }
    return {
        "A1": [
            R1.format(a="Yes, it helps."),
            LABELS,
            R2.format(p="A", a="Yes, it helps."),
            SUMMARY,
        ],
        "B2": [R1.format(a="No, it harms."), R2.format(p="B", a="No, it harms.")],
        "C3": [R1.format(a="Yes, mostly so."), R2.format(p="A", a="Yes, mostly so.")],
    }


@dataclass
class GatedSpeaker(FakeSpeaker):
    """A FakeSpeaker whose turns say when they start and may wait for a gate first."""

    gates: dict[str, threading.Event] = field(default_factory=dict)
    started: dict[str, threading.Event] = field(default_factory=dict)
    threads: set[str] = field(default_factory=set)  # where generate ran

    def generate(self, request: TurnRequest) -> TurnResult:
        self.threads.add(threading.current_thread().name)
        self.started.setdefault(request.panelist, threading.Event()).set()
        gate = self.gates.get(request.panelist)
        if gate is not None and request.conversation == "":  # turns, not the moderator
            assert gate.wait(WAIT), f"{request.panelist}'s gate never opened"
        return super().generate(request)


def debate(
    speaker: FakeSpeaker, record: RunRecord, lanes: int, saved: list[RunRecord] | None = None
) -> Debate:
    def save(r: RunRecord) -> None:
        if saved is not None:
            saved.append(r.model_copy(deep=True))

    return Debate(record, speaker, builtin(), save, lambda e: None, lanes=lanes)


def turn_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("localtable-turn-")]


def test_two_lanes_run_two_turns_at_once_and_the_transcript_is_the_sequential_one() -> None:
    both = threading.Barrier(2, timeout=WAIT)  # broken (a failed turn) unless two meet

    class MeetingSpeaker(GatedSpeaker):
        def generate(self, request: TurnRequest) -> TurnResult:
            if request.conversation == "" and request.panelist in ("A1", "B2"):
                both.wait()  # round 1 and round 2: A1 and B2 are in flight together
            return super().generate(request)

    together = MeetingSpeaker(replies())
    both_rounds = debate(together, make_record(["A1", "B2", "C3"]), lanes=2).run()
    alone = FakeSpeaker(replies())
    one_at_a_time = debate(alone, make_record(["A1", "B2", "C3"]), lanes=1).run()
    assert [t.status for t in both_rounds.turns] == ["ok"] * 6
    assert len([name for name in together.threads if name.startswith("localtable-turn-")]) >= 2
    assert transcript_sha256(both_rounds) == transcript_sha256(one_at_a_time)
    assert both_rounds.model_dump() == one_at_a_time.model_dump()  # the whole record


def test_the_record_keeps_panel_order_when_a_later_panelist_finishes_first() -> None:
    speaker = GatedSpeaker(replies(1), gates={"A1": threading.Event()})
    saved: list[RunRecord] = []
    record = make_record(["A1", "B2", "C3"], rounds=1)

    def save(r: RunRecord) -> None:
        saved.append(r.model_copy(deep=True))
        if {t.panelist for t in r.turns} == {"B2", "C3"}:
            speaker.gates["A1"].set()  # A1 ends only after both later panelists are saved

    finished = Debate(record, speaker, builtin(), save, lambda e: None, lanes=3).run()
    assert [t.panelist for t in saved[0].turns] in (["B2"], ["C3"])
    assert [t.panelist for t in saved[1].turns] == ["B2", "C3"]
    assert [t.panelist for t in saved[2].turns] == ["A1", "B2", "C3"]  # panel order
    assert [t.panelist for t in finished.turns] == ["A1", "B2", "C3"]


def test_a_failed_turn_loses_no_other_turn_of_its_round() -> None:
    mine = replies(1)
    mine["B2"] = [crash()]
    mine["A1"][1] = "Position A: Yes\nA1: A\nC3: A"
    speaker = GatedSpeaker(mine, gates={"C3": threading.Event()})
    record = make_record(["A1", "B2", "C3"], rounds=1)

    def save(r: RunRecord) -> None:
        if any(t.panelist == "B2" for t in r.turns):
            speaker.gates["C3"].set()  # C3 finishes after B2 failed beside it

    finished = Debate(record, speaker, builtin(), save, lambda e: None, lanes=3).run()
    assert [(t.panelist, t.status) for t in finished.turns] == [
        ("A1", "ok"),
        ("B2", "failed"),
        ("C3", "ok"),
    ]
    assert finished.summary is not None and finished.summary.status == "ok"


def test_a_backend_down_lets_the_others_in_flight_finish_then_stops() -> None:
    mine = replies()
    mine["B2"] = [BackendDown("http://gpu:8080: HTTP 503")]
    speaker = GatedSpeaker(mine, gates={"A1": threading.Event()})
    record = make_record(["A1", "B2", "C3"], rounds=2)

    def save(r: RunRecord) -> None:
        if any(t.panelist == "B2" for t in r.turns):
            speaker.gates["A1"].set()  # A1 was in flight when B2's server went down

    with pytest.raises(BackendDown):
        Debate(record, speaker, builtin(), save, lambda e: None, lanes=2).run()
    assert [(t.round, t.panelist, t.status) for t in record.turns] == [
        (1, "A1", "ok"),
        (1, "B2", "interrupted"),
    ]  # C3 never started: no turn starts after a backend went down
    assert "C3" not in speaker.started


@pytest.fixture
def ctrl_c_reaches_python() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt in this process for the test: a suite started in
    the background of a non-interactive shell inherits SIGINT ignored, and Python then
    leaves it ignored, so the test's own Ctrl-C would never arrive."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c_reaches_python")
def test_ctrl_c_keeps_every_turn_in_flight_as_interrupted_and_nothing_done_is_lost(
    tmp_path: Path,
) -> None:
    speaker = GatedSpeaker(replies(), gates={"B2": threading.Event(), "C3": threading.Event()})

    main = threading.main_thread().ident
    assert main is not None and threading.current_thread().ident == main
    for name in ("B2", "C3"):
        speaker.started[name] = threading.Event()

    def user() -> None:  # presses Ctrl-C once B2 and C3 are both generating
        for name in ("B2", "C3"):
            assert speaker.started[name].wait(WAIT)
        signal.pthread_kill(main, signal.SIGINT)

    pressing = threading.Thread(target=user)
    pressing.start()
    record = make_record(["A1", "B2", "C3"], rounds=2)
    with pytest.raises(RunInterrupted):
        execute(record, tmp_path, speaker, builtin(), lambda e: None, parallel_turns=2)  # type: ignore[arg-type]
    pressing.join(WAIT)
    on_disk = read_record(tmp_path)
    expected = [(1, "A1", "ok"), (1, "B2", "interrupted"), (1, "C3", "interrupted")]
    assert [(t.round, t.panelist, t.status) for t in on_disk.turns] == expected
    assert on_disk.status == "interrupted"
    # the abandoned turns end later: they write nothing over the interrupted record
    speaker.gates["B2"].set()
    speaker.gates["C3"].set()
    for thread in turn_threads():
        thread.join(WAIT)
    assert read_record(tmp_path).turns == on_disk.turns
    assert [(t.round, t.panelist, t.status) for t in record.turns] == expected


def test_one_lane_is_the_old_way_on_the_callers_thread() -> None:
    speaker = GatedSpeaker(replies())
    debate(speaker, make_record(["A1", "B2", "C3"]), lanes=1).run()
    assert speaker.threads == {threading.current_thread().name}


# -- how many lanes ---------------------------------------------------------------


def test_lanes_are_what_every_backend_of_the_panel_allows() -> None:
    class Quiet:  # a backend that keeps the seam's default: its turns one at a time
        turn_lanes = Backend.turn_lanes

    class Wide:
        def turn_lanes(self, requested: int) -> int:
            return requested or 6

    record = make_record(["A1", "B2", "C3"])
    backends: dict[str, object] = {"quiet": Quiet(), "wide": Wide()}
    session = SimpleNamespace(backend=lambda name: backends[name])

    def speaker(backend_of: dict[str, str]) -> SessionSpeaker:
        s = SessionSpeaker.__new__(SessionSpeaker)
        s.session, s.record, s.seats, s.backend_of = session, record, {}, backend_of  # type: ignore[assignment]
        return s

    assert speaker({"m": "wide"}).lanes(0) == 3  # at most the panel
    assert speaker({"m": "wide"}).lanes(2) == 2
    assert speaker({"m": "quiet"}).lanes(3) == 1
    assert speaker({"m": "wide", "n": "quiet"}).lanes(0) == 1


def llama_backend(one_at_a_time: bool, threads: int, slots: dict[str, int]) -> LlamaCppBackend:
    backend = LlamaCppBackend(engine=SimpleNamespace(one_at_a_time=one_at_a_time))  # type: ignore[arg-type]
    backend.seats = {k: SimpleNamespace(info=SimpleNamespace(threads=threads)) for k in slots}  # type: ignore[misc]
    backend.generating_slots = dict(slots)
    return backend


def test_the_llama_backend_runs_one_turn_at_a_time_when_models_take_turns_in_memory() -> None:
    assert llama_backend(True, 16, {"a": 3}).turn_lanes(4) == 1
    assert llama_backend(True, 16, {"a": 3}).turn_lanes(0) == 1


def test_the_llama_backend_auto_lanes_follow_threads_and_kv_caches() -> None:
    assert llama_backend(False, 2, {"a": 3}).turn_lanes(3) == 3  # asked for: given
    assert llama_backend(False, 2, {"a": 3, "b": 1}).turn_lanes(0) == 1  # 2 threads a turn
    assert llama_backend(False, 4, {"a": 3, "b": 1}).turn_lanes(0) == 2
    assert llama_backend(False, 5, {"a": 3, "b": 1}).turn_lanes(0) == 2
    assert llama_backend(False, 16, {"a": 2, "b": 1}).turn_lanes(0) == 3  # one per KV cache
    assert llama_backend(False, 16, {"a": 1}).turn_lanes(0) == 1  # no reuse: one context


# -- progress -------------------------------------------------------------------------


def event(panelist: str, status: str, done: int) -> ProgressEvent:
    return ProgressEvent(
        stage="turn", round=1, rounds=2, panelist=panelist, done=done, total=7, status=status
    )


def test_progress_lines_of_turns_running_together(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter(quiet=False, write=sys.stderr.write)
    printer(event("A1", "generating", 0))
    printer(event("B2", "generating", 0))
    printer(event("B2", "ok", 1))
    printer(event("A1", "failed", 2))
    printer(event("C3", "generating", 2))
    printer(event("C3", "ok", 3))
    lines = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == [
        "[1/7] round 1/2 · A1 ... ",
        "[2/7] round 1/2 · B2 ... ok",
        "[1/7] round 1/2 · A1 ... failed",
        "[3/7] round 1/2 · C3 ... ok",
    ]
