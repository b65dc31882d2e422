"""The engine worker on real llama.cpp: crashes stay in the worker, bad grammars are refused."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from localtable.config import Sampling
from localtable.engine import Engine, EngineCrashed
from localtable.engine_api import EngineFailure, GenerateRequest, LoadRequest, PromptPiece
from tests.realmodels import smollm2_path

pytestmark = pytest.mark.slow

PROMPT = [PromptPiece(text="<|im_start|>user\n", special=True),
          PromptPiece(text="Name a colour.", special=False),
          PromptPiece(text="<|im_end|>\n<|im_start|>assistant\n", special=True)]  # fmt: skip


def request(grammar: str | None, max_tokens: int = 24) -> GenerateRequest:
    return GenerateRequest(model_key="s", pieces=PROMPT, grammar=grammar, seed=3,
                           sampling=Sampling(max_tokens=max_tokens))  # fmt: skip


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


def test_a_crash_mid_generation_ends_the_request_and_the_next_one_restarts() -> None:
    with Engine() as engine:
        load(engine)
        first_pid = engine.worker_pid
        assert first_pid is not None
        outcome: list[BaseException | str] = []

        def generate() -> None:
            try:
                # a grammar with no early end: the generation surely outlasts the sleep
                long = request("root ::= [a-z ]{300,400}", max_tokens=400)
                outcome.append(engine.generate(long).text)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=generate)
        thread.start()
        time.sleep(1.0)
        os.kill(first_pid, signal.SIGSEGV)  # what a llama.cpp bug would do
        thread.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], EngineCrashed)
        assert "SIGSEGV" in str(outcome[0])
        # the next request starts a fresh worker and reloads the model
        again = engine.generate(request('root ::= "Green"'))
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
