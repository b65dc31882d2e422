"""A batch's --group on real llama.cpp (issue #28, item 3): two debates of the tiny
panel whose rounds are decoded together, their four SmolLM2 turns as sequences of
one context. The group is in each record; a second batch gives the same records (the
group's replay, here by a worker process); a group interrupted mid-round resumes as
the same group."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from localtable.record import RunRecord, read_record
from localtable.research.batchindex import read_index
from tests.conftest import subprocess_env
from tests.realmodels import fast_config, localtable
from tests.test_debategroup import interrupt

pytestmark = pytest.mark.slow
SMOL = ["SmolLM2", "SmolLM2 Skeptic"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("group")
    questions = tmp / "pair.jsonl"
    questions.write_text("".join(
        json.dumps({"id": f"q{i}", "question": q}) + "\n"
        for i, q in enumerate(["Should cities ban cars?", "Is remote work better?"])
    ))  # fmt: skip
    return fast_config(tmp), questions, subprocess_env(tmp / "cache")


def run_batch(setup: tuple[Path, Path, dict[str, str]], runs: Path, *more: str) -> None:
    config, questions, env = setup
    result = localtable(
        "batch", str(questions), "--config", str(config), "--runs-dir", str(runs), "--seeds",
        "7", "--rounds", "2", "--decode", "batched", "--group", "2", "-q", *more, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def records(batch_dir: Path) -> dict[str, RunRecord]:
    return {e.run_dir: read_record(batch_dir / e.run_dir) for e in read_index(batch_dir).entries}


@pytest.fixture(scope="module")
def grouped(
    setup: tuple[Path, Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    run_batch(setup, runs)
    return runs / "pair"


def test_the_group_is_recorded_and_decoded_as_one_context(grouped: Path) -> None:
    ran = records(grouped)
    assert {r.decode_group == ["q0-s7", "q1-s7"] for r in ran.values()} == {True}
    assert all(r.status == "complete" and r.decode == "batched" for r in ran.values())
    both = [f"{run}/{p}" for run in ("q0-s7", "q1-s7") for p in SMOL]
    for record in ran.values():
        for t in record.turns:
            g = t.generation
            assert g is not None and g.batch is not None
            if t.round == 1 or t.panelist in SMOL:  # a continuation step may hold fewer
                expected = both if t.panelist in SMOL else [
                    f"{run}/Gemma 3 270M" for run in ("q0-s7", "q1-s7")]  # fmt: skip
                assert g.batch.step > 1 or g.batch.members == expected, g.batch


def test_a_second_batch_gives_the_same_records(
    setup: tuple[Path, Path, dict[str, str]], grouped: Path, tmp_path: Path
) -> None:
    """Run again, by a worker process this time (its turns reported over its pipe)."""
    run_batch(setup, tmp_path, "--workers", "2")
    again, first = records(tmp_path / "pair"), records(grouped)
    assert {k: r.transcript_sha256 for k, r in again.items()} == {
        k: r.transcript_sha256 for k, r in first.items()
    }


def test_a_group_interrupted_mid_round_resumes_identically(
    setup: tuple[Path, Path, dict[str, str]], grouped: Path, tmp_path: Path
) -> None:
    reference = records(grouped)
    shutil.copytree(grouped, tmp_path / "pair")
    interrupt(tmp_path / "pair", "q1-s7", "q0-s7")
    run_batch(setup, tmp_path)
    resumed = records(tmp_path / "pair")
    costs = {"seconds", "prompt_eval_tokens"}
    untimed = {"generation": costs, "continuation": costs}
    for run, record in resumed.items():
        assert record.transcript_sha256 == reference[run].transcript_sha256
        assert [t.model_dump(exclude=untimed) for t in record.turns] == [
            t.model_dump(exclude=untimed) for t in reference[run].turns
        ]
