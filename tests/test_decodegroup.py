"""session/decodegroup.py: a round's generations gathered into steps, whatever the
threads' timing (issue #28). A fake backend logs what each step handed it."""

from __future__ import annotations

import random
import threading
import time

from localtable.backends.base import TurnFailed, TurnRequest, TurnResult
from localtable.record import SamplingRecord
from localtable.session.decodegroup import DecodeGroup, Member

SAMPLING = SamplingRecord(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, repeat_penalty=1.0,
                          typical_p=1.0, frequency_penalty=0.0, presence_penalty=0.0,
                          max_tokens=8)  # fmt: skip


class GroupingBackend:
    name = "grouping"

    def __init__(self) -> None:
        self.steps: list[list[str]] = []

    def generate_group(self, turns: list[tuple[str, TurnRequest]]) -> list[TurnResult | TurnFailed]:
        who = [r.panelist for _, r in turns]
        self.steps.append(who)
        out: list[TurnResult | TurnFailed] = []
        for _, r in turns:
            if r.panelist == "broken":
                out.append(TurnFailed("refused"))
                continue
            out.append(TurnResult(
                prompt="p", prompt_tokens=1, prompt_sha256="s", text=r.prefill + "x",
                finish_reason="stop", completion_tokens=1, prompt_eval_tokens=1, seconds=0.0,
                decoded_with=who,
            ))  # fmt: skip
        return out


def request(name: str, prefill: str = "") -> TurnRequest:
    return TurnRequest(panelist=name, messages=[], grammar="", seed=1, sampling=SAMPLING,
                       prefill=prefill)  # fmt: skip


def run_round(names: list[str], generations: dict[str, int], jitter: random.Random):
    backend = GroupingBackend()
    group = DecodeGroup(names, lambda name: Member(model="m", backend=backend))  # type: ignore[arg-type]
    results: dict[str, list[object]] = {n: [] for n in names}

    def turn(name: str) -> None:
        try:
            for k in range(generations[name]):
                time.sleep(jitter.random() / 200)  # threads ask in any order
                try:
                    results[name].append(group.generate(request(name, "c" * k)).batch)
                except TurnFailed as exc:
                    results[name].append(str(exc))
                    return
        finally:
            group.leave(name)

    threads = [threading.Thread(target=turn, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return backend.steps, results


def test_steps_do_not_depend_on_which_thread_asks_first() -> None:
    names = ["a", "b", "broken", "c"]
    generations = {"a": 1, "b": 3, "broken": 2, "c": 2}  # b and c are continued
    runs = [run_round(names, generations, random.Random(seed)) for seed in range(5)]
    steps, results = runs[0]
    assert steps == [["a", "b", "broken", "c"], ["b", "c"], ["b"]]
    assert all(run == runs[0] for run in runs)
    assert results["broken"] == ["refused"]  # a failed request ends its turn, not the group
    first, second, third = results["b"]
    assert (first.step, first.members) == (1, ["a", "b", "broken", "c"])  # type: ignore[attr-defined]
    assert (second.step, second.members) == (2, ["b", "c"])  # type: ignore[attr-defined]
    assert (third.step, third.members) == (3, ["b"])  # type: ignore[attr-defined]


def test_a_turn_that_asks_nothing_does_not_hold_the_others() -> None:
    steps, results = run_round(["a", "b"], {"a": 0, "b": 1}, random.Random(1))
    assert steps == [["b"]] and len(results["b"]) == 1
