"""Load-aware engine threads: the count follows the neighbours' load, the text does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localtable.backends.llamacpp import threadload
from localtable.backends.llamacpp.messages import GenerateRequest, LoadRequest
from localtable.backends.promptpiece import PromptPiece
from localtable.config import load_config
from localtable.models.files import resolve
from tests.conftest import MODELS_TOML
from tests.fakes import sampling


class Machine:
    """A fake clock and CPU counters: a neighbour busy on `others` cores, this process on `own`."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy_total = 0.0
        self.own_total = 0.0

    def run(self, seconds: float, own: float, others: float) -> None:
        self.now += seconds
        self.own_total += own * seconds
        self.busy_total += (own + others) * seconds

    def governor(self, cpus: int = 2) -> threadload.ThreadGovernor:
        return threadload.ThreadGovernor(
            cpus=set(range(cpus)),
            busy=lambda: self.busy_total,
            own=lambda: self.own_total,
            clock=lambda: self.now,
        )


def test_an_idle_machine_gets_every_configured_thread() -> None:
    machine = Machine()
    governor = machine.governor()
    assert governor.threads(2) == 2
    machine.run(1.0, own=2.0, others=0.05)
    assert governor.threads(2) == 2


def test_a_neighbour_on_one_core_leaves_one_thread_and_its_end_gives_it_back() -> None:
    machine = Machine()
    governor = machine.governor()
    governor.threads(2)
    machine.run(1.0, own=1.33, others=0.67)  # two threads and `yes` sharing two cores
    assert governor.threads(2) == 1
    machine.run(1.0, own=1.0, others=1.0)  # one thread: `yes` gets its core
    assert governor.threads(2) == 1
    machine.run(1.0, own=1.0, others=0.0)  # `yes` ended
    assert governor.threads(2) == 2


def test_never_more_than_configured_nor_fewer_than_one() -> None:
    machine = Machine()
    governor = machine.governor(cpus=16)
    governor.threads(4)
    machine.run(1.0, own=4.0, others=2.0)
    assert governor.threads(4) == 4
    machine.run(1.0, own=1.0, others=16.0)  # counters over the CPUs' own time: clamped
    assert governor.threads(4) == 1


def test_a_short_window_waits_for_more_time() -> None:
    machine = Machine()
    governor = machine.governor()
    governor.threads(2)
    machine.run(0.05, own=0.0, others=2.0)  # a burst too short to count alone
    assert governor.threads(2) == 2
    machine.run(0.05, own=0.0, others=2.0)  # together with it, long enough
    assert governor.threads(2) == 1


def test_without_proc_stat_the_configured_count() -> None:
    governor = threadload.ThreadGovernor(cpus={0, 1}, busy=lambda: None)
    assert governor.threads(2) == 2
    assert governor.threads(2) == 2


def test_busy_seconds_counts_only_the_given_cpus(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  400 0 100 900 9 0 0 50 0 0\n"
        "cpu0 100 0 50 400 4 0 0 20 0 0\n"  # user nice system idle iowait irq softirq steal
        "cpu1 300 10 50 500 5 3 2 30 0 0\n"
        "intr 1 2 3\n"
    )
    ticks = threadload._TICKS
    assert threadload.busy_seconds({1}, stat) == pytest.approx(365 / ticks)
    assert threadload.busy_seconds({0, 1}, stat) == pytest.approx(515 / ticks)
    assert threadload.busy_seconds({0}, tmp_path / "missing") is None


class Alternating:
    """A governor that changes the thread count at every look: 1, 2, 1, 2, ..."""

    def __init__(self) -> None:
        self.looks = 0

    def due(self) -> bool:
        return True

    def threads(self, configured: int) -> int:
        self.looks += 1
        return 1 + self.looks % 2


class Fixed:
    def __init__(self, n: int) -> None:
        self.n = n

    def due(self) -> bool:
        return False

    def threads(self, configured: int) -> int:
        return self.n


PROMPT = (
    "A roundtable debate. Question: Should cities ban cars from their centres? "
    "Earlier answers: Yes, mostly, because air quality improves and streets become "
    "safer. No, because deliveries and people with disabilities need access. "
    "Now reply in the required format."
)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_changing_threads_mid_generation_keeps_the_text(model: str) -> None:
    """The worker's own path (prefill, reuse, grammar), with the thread count fixed
    at 1, at 2, and switched at every token: the same tokens each time."""
    from localtable.backends.llamacpp.worker import Worker

    path = resolve(model, load_config(MODELS_TOML)).path
    governors: list[Any] = [Fixed(1), Fixed(2), Alternating()]
    outputs = []
    for governor in governors:
        worker = Worker()
        worker.governor = governor
        worker.load(LoadRequest(model_key="m", path=path, n_ctx=1024, n_batch=512,
                                n_ubatch=128, threads=2, kv_slots=1))  # fmt: skip
        texts = []
        for seed, reply in ((1, "Yes."), (2, "Maybe.")):
            req = GenerateRequest(
                model_key="m", pieces=[PromptPiece(text=PROMPT + reply * 40, special=False)],
                add_bos=True, grammar=r'root ::= "Answer: " [^\x00-\x1f]*', seed=seed,
                sampling=sampling(max_tokens=40, temperature=1.0), reuse_prefix=True,
                conversation="a",
            )  # fmt: skip
            out = worker.generate(req)
            texts.append((out.text, out.token_ids))
        worker.close()
        outputs.append(texts)
    assert governors[2].looks > 40  # it did switch, token after token
    assert outputs[0] == outputs[1] == outputs[2]
