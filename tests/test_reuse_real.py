"""Prefix reuse on real llama.cpp: bit-identical numbers, the same transcript, less work.

The worker keeps each panelist's evaluated prompt in a KV cache of its own and
evaluates only what is new (localtable/backends/llamacpp/kvslots.py). These tests check the
promise that makes this safe: a reused prefix gives the same logits as a cold
evaluation (also when the new part starts in the middle of an n_batch chunk,
past Gemma 3's sliding window, and in a second context over the same weights),
and a whole debate gives the same bytes with reuse on and off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localtable.backends.llamacpp.backend import N_UBATCH, LlamaCppBackend
from localtable.backends.llamacpp.engine import Engine
from localtable.backends.llamacpp.kvslots import MIN_STEP, KVSlot, share_weights
from localtable.batch.run import BatchRequest, SessionRunner, run_batch
from localtable.config import load_config
from localtable.models.files import resolve
from localtable.record import RunRecord, read_record, write_record
from localtable.research.questions import Question, QuestionSet
from localtable.session.rerun import resume_run
from localtable.session.run import DebateRequest, run_debate
from localtable.session.session import Session
from localtable.templates import TemplateSet
from tests.conftest import MODELS_TOML, REPO, subprocess_env
from tests.realmodels import fast_config, localtable

pytestmark = pytest.mark.slow

N_BATCH = N_UBATCH  # localtable's step: a ~760-token prompt spans several of them
PROMPT_TOKENS = 760  # past Gemma 3 270M's 512-token sliding window


def load_llm(model: str) -> Any:
    import llama_cpp

    path = resolve(model, load_config(MODELS_TOML)).path
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=1024, n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=2,
        n_threads_batch=2, flash_attn=False, verbose=False,
    )  # fmt: skip


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_prompt_steps_of_up_to_256_tokens_give_the_same_logits(model: str) -> None:
    """What prefix reuse relies on (backends/llamacpp/backend.py, N_UBATCH): however a
    prompt is cut into steps of 8 to 256 tokens, the logits are the same. (Gemma 3 gave other
    logits after a step of 257 or more, or after a last step of 2, 4 or 6.)"""
    import llama_cpp
    import numpy as np

    assert 2 <= N_UBATCH <= 256
    path = resolve(model, load_config(MODELS_TOML)).path
    text = (REPO / "README.md").read_text(encoding="utf-8")
    results = []
    for step in (N_UBATCH, 256, 64):  # 300 tokens: last steps of 44 or more
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=1024, n_batch=512, n_ubatch=step, n_threads=2,
            n_threads_batch=2, flash_attn=False, verbose=False,
        )  # fmt: skip
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:300]
        llm.eval(tokens)
        results.append(last_logits(llm))
        llm.close()
    assert all(np.array_equal(results[0], r) for r in results[1:]), model


def last_logits(llm: Any) -> Any:
    import llama_cpp
    import numpy as np

    row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()


def evaluate(slot: KVSlot, tokens: list[int], reuse: bool) -> tuple[Any, int]:
    """Evaluate a prompt the way the worker does; return its last logits and the reused length."""
    reused = slot.prepare(tokens, reuse)
    slot.prefill(tokens)
    last_step = tokens[slot.llm.n_tokens :]
    assert MIN_STEP <= len(last_step) < 2 * MIN_STEP
    slot.llm.eval(last_step)  # as create_completion does
    logits = last_logits(slot.llm)
    slot.keep_prompt(tokens)
    return logits, reused


def generate_a_little(slot: KVSlot, prompt: list[int]) -> None:
    """Decode a few tokens one at a time after the prompt, as a generation does, then
    keep only the prompt: the generated tokens' KV entries must not leak into reuse."""
    for token in prompt[:5]:
        slot.llm.eval([token])
    slot.keep_prompt(prompt)


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_reused_prefix_gives_the_logits_of_a_cold_evaluation(model: str) -> None:
    import numpy as np

    llm = load_llm(model)
    text = (REPO / "README.md").read_text(encoding="utf-8") * 3
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert len(tokens) > PROMPT_TOKENS + 200
    prompt, other = tokens[:PROMPT_TOKENS], tokens[PROMPT_TOKENS : PROMPT_TOKENS + 200]
    slot = KVSlot(llm)
    cold, reused = evaluate(slot, prompt, reuse=False)
    assert reused == 0
    # A second context over the same weights gives the same numbers cold.
    twin = KVSlot(share_weights(llm))
    twin_cold, _ = evaluate(twin, prompt, reuse=False)
    assert np.array_equal(cold, twin_cold)
    # Reuse from mid-chunk, a chunk boundary, past the sliding window, all but 2..8
    # tokens; the reuse point is rounded down to a multiple of 4 and leaves at least
    # MIN_STEP tokens (see localtable/backends/llamacpp/kvslots.py).
    cases = ((100, 100), (N_BATCH, N_BATCH), (601, 600), (PROMPT_TOKENS - 2, 752),
             (PROMPT_TOKENS - 5, 752), (PROMPT_TOKENS - 8, 752))  # fmt: skip
    for keep, expected in cases:
        earlier = prompt[:keep] + other[:40]  # an earlier prompt sharing `keep` tokens
        evaluate(slot, earlier, reuse=False)
        generate_a_little(slot, earlier)
        # another conversation in the twin context meanwhile changes nothing here
        evaluate(twin, other, reuse=True)
        generate_a_little(twin, other)
        logits, reused = evaluate(slot, prompt, reuse=True)
        assert reused == expected
        assert np.array_equal(cold, logits), f"{model}: reuse of {keep} tokens changed the logits"
    # An earlier prompt that is a prefix: its last len % 4 tokens are not reused.
    for keep, expected in ((750, 748), (751, 748), (752, 752)):
        evaluate(slot, prompt[:keep], reuse=False)
        logits, reused = evaluate(slot, prompt, reuse=True)
        assert reused == expected
        assert np.array_equal(cold, logits), f"{model}: reuse after a {keep}-token prompt"
    # The same prompt again: still at least MIN_STEP tokens are evaluated.
    logits, reused = evaluate(slot, prompt, reuse=True)
    assert reused == PROMPT_TOKENS - MIN_STEP and np.array_equal(cold, logits)
    twin.llm.close()
    llm.close()


QUESTION = "Should cities ban cars from their centres?"


def debate(tmp_path: Path, env: dict[str, str], reuse: bool) -> RunRecord:
    runs = tmp_path / ("runs-reuse" if reuse else "runs-cold")
    config = fast_config(tmp_path, max_tokens=48)
    result = localtable(
        "debate", QUESTION, "--config", str(config),
        "--rounds", "3", "--runs-dir", str(runs), "--reuse" if reuse else "--no-reuse", "-q",
        "--decode", "sequential",  # reuse serves turns decoded one at a time
        env=env,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return read_record(run_dir)


@pytest.fixture(scope="module")
def reuse_on(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> RunRecord:
    """The fast panel's 3-round debate with reuse on (default), shared by the tests below."""
    return debate(tmp_path_factory.mktemp("reuse-on"), subprocess_env(session_cache), reuse=True)


def new_tokens(record: RunRecord) -> dict[tuple[int, str], int]:
    """Per turn, the prompt tokens its panelist's previous prompt did not have."""
    out: dict[tuple[int, str], int] = {}
    for turn in record.turns:
        gen = turn.generation
        assert gen is not None
        before = record.turn(turn.round - 1, turn.panelist)
        prev = before.generation if before is not None else None
        if prev is not None and gen.prompt.startswith(prev.prompt):
            out[(turn.round, turn.panelist)] = gen.prompt_tokens - prev.prompt_tokens
        else:
            out[(turn.round, turn.panelist)] = gen.prompt_tokens
    return out


def test_debate_is_byte_identical_with_reuse_on_and_off(
    tmp_path: Path, isolated_cache: Path, reuse_on: RunRecord
) -> None:
    on, off = reuse_on, debate(tmp_path, subprocess_env(isolated_cache), reuse=False)
    assert on.reuse_prefix and not off.reuse_prefix
    assert {m.chat_mode for m in on.models} == {"template", "completion"}  # SmolLM2, Gemma 3
    assert len(on.turns) == len(off.turns) == 9
    for a, b in zip(on.turns, off.turns, strict=True):
        assert (a.round, a.panelist, a.status) == (b.round, b.panelist, b.status)
        assert a.generation is not None and b.generation is not None
        assert a.generation.prompt_sha256 == b.generation.prompt_sha256
        assert a.generation.raw_output == b.generation.raw_output, (a.round, a.panelist)
    assert on.summary is not None and off.summary is not None and on.summary.generation
    assert off.summary.generation is not None
    assert on.summary.generation.raw_output == off.summary.generation.raw_output
    assert on.transcript_sha256 is not None
    assert on.transcript_sha256 == off.transcript_sha256

    # Without reuse every prompt token is evaluated; with it, about only the new ones.
    assert all(t.generation and t.generation.prompt_eval_tokens == t.generation.prompt_tokens
               for t in off.turns)  # fmt: skip
    new = new_tokens(on)
    for turn in on.turns:
        assert turn.generation is not None
        evaluated = turn.generation.prompt_eval_tokens
        assert evaluated <= 1.25 * new[(turn.round, turn.panelist)] + 2, (turn.round, turn.panelist)
    evaluated_on = sum(t.generation.prompt_eval_tokens for t in on.turns if t.generation)
    evaluated_off = sum(t.generation.prompt_eval_tokens for t in off.turns if t.generation)
    assert evaluated_on < 0.6 * evaluated_off


def test_models_loaded_one_at_a_time_give_the_same_transcript(
    tmp_path: Path, reuse_on: RunRecord
) -> None:
    together = reuse_on
    # In process, with a 1 MB budget: the models cannot fit together.
    config = fast_config(tmp_path, max_tokens=48)
    req = DebateRequest(
        question=QUESTION, panel="fast", rounds=3, seed=42, runs_dir=tmp_path / "runs-in-turn",
        reuse_prefix=True, memory_budget=1 << 20,
    )  # fmt: skip
    notes: list[str] = []
    engine = Engine()
    loaded = load_config(config)
    with Session(TemplateSet(), loaded) as session:
        session.add_backend(LlamaCppBackend(engine))
        _, in_turn = run_debate(
            req, loaded, TemplateSet(), lambda e: None, session, notice=notes.append
        )
    assert in_turn.memory is not None and in_turn.memory.loading == "one at a time"
    assert in_turn.memory.budget_bytes == 1 << 20
    assert len(notes) == 1 and "one at a time" in notes[0] and "over the budget" in notes[0]
    # each model: once to read its facts, then at most once per round
    assert len(engine.load_count) == 2
    assert all(n <= 1 + in_turn.rounds for n in engine.load_count.values()), engine.load_count
    assert [(t.round, t.panelist) for t in in_turn.turns] == [
        (t.round, t.panelist) for t in together.turns
    ]
    for a, b in zip(together.turns, in_turn.turns, strict=True):
        assert a.generation is not None and b.generation is not None
        assert a.generation.raw_output == b.generation.raw_output
    assert in_turn.transcript_sha256 == together.transcript_sha256

    # Resumed after round 1, the run loads as recorded: one model at a time again.
    run_dir = tmp_path / "runs-in-turn" / in_turn.run_id
    cut = in_turn.model_copy(deep=True)
    cut.turns = [t for t in cut.turns if t.round == 1]
    cut.summary, cut.status, cut.transcript_sha256 = None, "interrupted", None
    write_record(run_dir, cut)
    engine = Engine()
    with Session(TemplateSet(), loaded) as session:
        session.add_backend(LlamaCppBackend(engine))
        resumed = resume_run(run_dir, loaded, TemplateSet(), lambda e: None, session=session)
        assert engine.one_at_a_time
    assert len(engine.load_count) == 2
    assert all(n <= 1 + in_turn.rounds for n in engine.load_count.values()), engine.load_count
    assert resumed.transcript_sha256 == in_turn.transcript_sha256


def test_a_batch_loads_each_model_once(tmp_path: Path) -> None:
    """One Session for the batch: its debates reuse the loaded models."""
    loaded = load_config(fast_config(tmp_path, max_tokens=32))
    questions = QuestionSet(
        name="two", source="test", sha256="0" * 64,
        questions=[Question(id="a", question="2+2?", kind="number", answer="4"),
                   Question(id="b", question="3+4?", kind="number", answer="7")],
    )  # fmt: skip
    req = BatchRequest(questions=questions, seeds=[1], panel="fast", rounds=1,
                       runs_dir=tmp_path / "runs", reuse_prefix=True)  # fmt: skip
    engine = Engine()
    with SessionRunner(loaded, TemplateSet(), lambda e: None) as runner:
        runner.session.add_backend(LlamaCppBackend(engine))
        result = run_batch(req, runner, lambda e: None)
        assert all(e.status in ("complete", "failed") for e in result.index.entries)
        assert sorted(engine.load_count.values()) == [1, 1], engine.load_count
