"""Turns of a round at the same time on real llama.cpp (issue #17): the same transcript,
byte for byte, as one turn at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from localtable.record import RunRecord, read_record
from tests.conftest import subprocess_env
from tests.realmodels import fast_config, localtable

pytestmark = pytest.mark.slow
QUESTION = "Should every city have free public transport?"


def debate(config: Path, runs: Path, lanes: int, env: dict[str, str]) -> tuple[RunRecord, str]:
    result = localtable(
        "debate", QUESTION, "--config", str(config), "--rounds", "2", "--seed", "5",
        "--runs-dir", str(runs), "--reuse", "--parallel-turns", str(lanes),
        "--decode", "sequential", env=env,  # lanes run turns decoded one at a time
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return read_record(run_dir), result.stderr


def test_two_lanes_give_the_transcript_of_one(tmp_path: Path) -> None:
    env = subprocess_env(tmp_path / "cache")
    config = fast_config(tmp_path, max_tokens=64)
    one, _ = debate(config, tmp_path / "one", 1, env)
    two, progress = debate(config, tmp_path / "two", 2, env)
    assert one.status == two.status == "complete"
    assert one.transcript_sha256 == two.transcript_sha256
    assert [(t.round, t.panelist) for t in two.turns] == [(t.round, t.panelist) for t in one.turns]
    for alone, together in zip(one.turns, two.turns, strict=True):
        a, b = alone.generation, together.generation
        assert a is not None and b is not None
        assert (b.token_ids, b.prompt_sha256) == (a.token_ids, a.prompt_sha256)
        # prefix reuse kept working: each conversation kept its own KV cache
        assert b.prompt_eval_tokens == a.prompt_eval_tokens
        if together.round == 2:
            assert b.prompt_eval_tokens < b.prompt_tokens, together.panelist
    # and two turns did run at once: a turn's progress line ended before its status
    assert any(line.endswith("... ") for line in progress.splitlines()), progress


def test_a_kv_cache_made_during_a_generation_decodes_in_its_own_context() -> None:
    """A second panelist's KV cache can be made while the first one's generation runs
    (two lanes, one model): the worker has wrapped that Llama's `generate` for its
    generation, and the twin must not take the wrapper, which decodes in the first
    context (seen: a different transcript, 1 run in 10, with a busy neighbour)."""
    import llama_cpp

    from localtable.backends.llamacpp.kvslots import share_weights
    from tests.realmodels import smollm2_path

    llm = llama_cpp.Llama(model_path=str(smollm2_path()), n_ctx=256, verbose=False)
    wrapped = llm.generate
    llm.generate = lambda *args, **kwargs: wrapped(*args, **kwargs)  # as worker.py does
    twin = share_weights(llm)
    assert twin.generate.__self__ is twin
    assert twin._ctx is not llm._ctx
    twin.close()
    del llm.generate
    llm.close()
