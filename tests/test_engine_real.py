"""The engine worker on real llama.cpp: crashes stay in the worker, bad grammars are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from localtable.backends.llamacpp.engine import Engine, EngineCrashed
from localtable.backends.llamacpp.messages import (
    EngineFailure,
    GenerateRequest,
    LoadRequest,
    PromptPiece,
)
from tests.fakes import sampling
from tests.realmodels import smollm2_path

pytestmark = pytest.mark.slow

PROMPT = [PromptPiece(text="<|im_start|>user\n", special=True),
          PromptPiece(text="Name a colour.", special=False),
          PromptPiece(text="<|im_end|>\n<|im_start|>assistant\n", special=True)]  # fmt: skip


def request(grammar: str | None, max_tokens: int = 24) -> GenerateRequest:
    return GenerateRequest(model_key="s", pieces=PROMPT, grammar=grammar, seed=3,
                           sampling=sampling(max_tokens=max_tokens))  # fmt: skip


def load(engine: Engine) -> None:
    engine.load(LoadRequest(model_key="s", path=smollm2_path(), n_ctx=512, threads=1))


def test_invalid_grammar_is_an_error_not_a_crash() -> None:
    with Engine() as engine:
        load(engine)
        pid = engine.worker_pid
        with pytest.raises(EngineFailure, match="invalid grammar"):
            engine.generate(request('root ::= "a" undefined-rule'))
        assert engine.worker_pid == pid  # the same worker is still alive
        assert engine.generate(request('root ::= "Red" | "Blue"')).text in ("Red", "Blue")


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process so far, in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_until_computing(pid: int, since: int, ticks: int = 20) -> None:
    """Wait for the event "the worker is generating": its CPU time grows past since."""
    deadline = time.monotonic() + 120
    while cpu_ticks(pid) < since + ticks:
        assert time.monotonic() < deadline, f"worker {pid} never started generating"
        time.sleep(0.05)


def test_a_crash_mid_generation_ends_the_request_and_the_next_one_restarts() -> None:
    with Engine() as engine:
        load(engine)
        first_pid = engine.worker_pid
        assert first_pid is not None
        idle = cpu_ticks(first_pid)
        outcome: list[BaseException | str] = []

        def generate() -> None:
            try:
                # a grammar with no early end: the generation outlasts the wait below
                long = request("root ::= [a-z ]{300,400}", max_tokens=400)
                outcome.append(engine.generate(long).text)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=generate)
        thread.start()
        wait_until_computing(first_pid, idle)
        assert not outcome, outcome
        os.kill(first_pid, signal.SIGSEGV)  # what a llama.cpp bug would do
        thread.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], EngineCrashed)
        assert "SIGSEGV" in str(outcome[0])
        # the next request starts a fresh worker and reloads the model
        again = engine.generate(request('root ::= "Green"'))
        assert again.text == "Green"
        assert engine.worker_pid not in (None, first_pid)


STORY = [PromptPiece(text="Write a long story about a cat. " * 8, special=False)]


def test_a_crash_fails_every_generation_in_flight_and_the_next_restarts() -> None:
    """Two generations at once (a round's turns, issue #17): both fail with the signal."""
    with Engine() as engine:
        engine.load(LoadRequest(model_key="s", path=smollm2_path(), n_ctx=1024, threads=2,
                                kv_slots=2))  # fmt: skip
        first_pid = engine.worker_pid
        assert first_pid is not None
        outcome: dict[str, BaseException | str] = {}
        started = threading.Barrier(3, timeout=60)

        def generate(conversation: str) -> None:
            long = GenerateRequest(
                model_key="s", pieces=STORY, grammar="root ::= [a-z ]{400,500}", seed=1,
                sampling=sampling(max_tokens=500), reuse_prefix=True, conversation=conversation,
            )  # fmt: skip
            started.wait()
            try:
                outcome[conversation] = engine.generate(long).text
            except BaseException as exc:
                outcome[conversation] = exc

        threads = [threading.Thread(target=generate, args=(c,)) for c in ("a", "b")]
        for thread in threads:
            thread.start()
        started.wait()
        link = engine._link
        assert link is not None
        deadline = time.monotonic() + 60
        while len(link._waiting) < 2:  # both sent (or being sent) to this worker
            assert time.monotonic() < deadline, "the generations were never sent"
            time.sleep(0.01)
        assert engine.count_tokens("s", STORY, False) > 0  # the worker still answers
        assert not outcome, outcome
        os.kill(first_pid, signal.SIGSEGV)
        for thread in threads:
            thread.join(timeout=60)
        assert set(outcome) == {"a", "b"}
        assert all(isinstance(x, EngineCrashed) and "SIGSEGV" in str(x) for x in outcome.values())
        green = 'root ::= "Green"'
        short = GenerateRequest(
            model_key="s", pieces=STORY, grammar=green, seed=1, sampling=sampling(max_tokens=16)
        )
        again = engine.generate(short)
        assert again.text == "Green"
        assert engine.worker_pid not in (None, first_pid)


def test_out_of_memory_kill_is_named() -> None:
    with Engine() as engine:
        load(engine)
        pid = engine.worker_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(EngineCrashed, match="SIGKILL.*out of memory"):
            engine.generate(request(None))


PARENT = """
import sys
from localtable.backends.llamacpp.engine import Engine
from tests.fakes import sampling
from localtable.backends.llamacpp.messages import GenerateRequest, LoadRequest, PromptPiece
engine = Engine()
engine.load(LoadRequest(model_key="s", path=sys.argv[1], n_ctx=4096, threads=1))
print(engine.worker_pid, flush=True)
# about a minute of generation, that the worker would finish if nothing stopped it
engine.generate(GenerateRequest(
    model_key="s", pieces=[PromptPiece(text="Write.", special=False)], seed=1,
    grammar="root ::= [a-z ]{2000,3000}", sampling=sampling(max_tokens=3000)))
"""


def gone(pid: int) -> bool:
    """Exited, or a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_worker_dies_with_a_killed_parent() -> None:
    """SIGKILL gives the parent no chance to stop its worker mid-generation: the kernel must."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(smollm2_path())],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        wait_until_computing(worker, cpu_ticks(worker))  # into the generation
        assert not gone(worker)
        parent.kill()
        parent.wait(timeout=60)
        deadline = time.monotonic() + 10
        while not gone(worker):
            if time.monotonic() > deadline:
                os.kill(worker, signal.SIGKILL)
                pytest.fail(f"worker {worker} kept generating after its parent was killed")
            time.sleep(0.1)
    finally:
        parent.kill()


def test_other_kv_caches_are_made_while_the_next_model_loads(tmp_path: Path) -> None:
    """A model's extra KV caches (one per panelist) come during the next load, and a
    load that fails beside them still names llama.cpp's reason (their log lines are
    not kept)."""
    from localtable.backends.llamacpp import worker as worker_module

    worker_module._install_log_capture()  # serve() does it in the worker process
    worker = worker_module.Worker()
    try:
        worker.load(LoadRequest(model_key="a", path=smollm2_path(), n_ctx=512, threads=1,
                                kv_slots=3))  # fmt: skip
        assert len(worker.pools["a"].slots) == 1
        # the contexts' hundreds of log lines stay out of the lines a failure is read from
        worker_module._LOG.append("the load's own line")
        worker_module._add_spares([worker.pools["a"]])
        assert list(worker_module._LOG)[-1] == "the load's own line"
        assert len(worker.pools["a"].slots) == 3
        worker.pools["a"].close()  # back to one: the next load makes them again
        assert len(worker.pools["a"].slots) == 1
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUF" + b"\xff" * 64)
        with pytest.raises(EngineFailure, match="could not load .*bad.gguf: .*gguf"):
            worker.load(LoadRequest(model_key="b", path=bad, n_ctx=512, threads=1))
        assert len(worker.pools["a"].slots) == 3  # made meanwhile, all of them
        worker.load(LoadRequest(model_key="c", path=smollm2_path(), n_ctx=512, threads=1,
                                kv_slots=2))  # fmt: skip
        assert len(worker.pools["c"].slots) == 1  # its own come with a later load
        texts = set()
        for conversation in ("x", "y", "z"):  # each on a cache of its own, all working
            req = request('root ::= "Red" | "Blue"').model_copy(
                update={"model_key": "a", "reuse_prefix": True, "conversation": conversation}
            )
            texts.add(worker.generate(req).text)
        assert texts <= {"Red", "Blue"}
        assert all(slot.owner is not None for slot in worker.pools["a"].slots)
    finally:
        worker.close()
