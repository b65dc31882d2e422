"""Resume and replay on real llama.cpp: interrupted runs finish byte-identical to one-go runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localtable.record import read_record
from tests.conftest import REPO, default_stop_signals, subprocess_env
from tests.realmodels import fast_config, localtable

pytestmark = pytest.mark.slow
QUESTION = "Should every city have free public transport?"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return subprocess_env(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_config(tmp_path_factory.mktemp("config"))


@pytest.fixture(scope="module")
def one_go(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], config: Path) -> Path:
    """The reference: the same debate done in one go."""
    runs = tmp_path_factory.mktemp("one-go")
    result = localtable(
        "debate",
        QUESTION,
        "--config",
        str(config),
        "--rounds",
        "2",
        "--seed",
        "11",
        "--runs-dir",
        str(runs),
        "-q",
        "--decode",
        "sequential",  # batched runs: tests/test_batched_real.py
        env=env,
    )
    assert result.returncode in (0, 1), result.stderr
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


def interrupt(runs: Path, env: dict[str, str], config: Path, sig: int, after_turns: int) -> Path:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localtable",
            "debate",
            QUESTION,
            "--config",
            str(config),
            "--rounds",
            "2",
            "--seed",
            "11",
            "--runs-dir",
            str(runs),
            "-q",
            "--decode",
            "sequential",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_stop_signals,
    )
    deadline = time.monotonic() + 3000  # shared 2-core machines can be very slow
    while time.monotonic() < deadline and proc.poll() is None:
        records = list(runs.glob("*/record.json"))
        try:
            if records and len(json.loads(records[0].read_text())["turns"]) >= after_turns:
                break
        except ValueError:
            pass
        time.sleep(0.1)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    return run_dir


def comparable(run_dir: Path) -> tuple[object, ...]:
    r = read_record(run_dir)
    turns = [
        (t.round, t.panelist, t.status, t.generation.raw_output if t.generation else None, t.parsed)
        for t in r.turns
    ]
    summary = r.summary.generation.raw_output if r.summary and r.summary.generation else None
    return (turns, summary, r.transcript_sha256)


@pytest.mark.parametrize(("sig", "after_turns"), [(signal.SIGINT, 2), (signal.SIGKILL, 4)])
def test_resume_matches_the_run_done_in_one_go(
    tmp_path: Path, env: dict[str, str], config: Path, one_go: Path, sig: int, after_turns: int
) -> None:
    run_dir = interrupt(tmp_path, env, config, sig, after_turns)
    stopped = read_record(run_dir)
    # SIGINT: marked interrupted; SIGKILL: no chance to mark, still "running"
    assert stopped.status == ("interrupted" if sig == signal.SIGINT else "running")
    assert len([t for t in stopped.turns if t.status != "interrupted"]) >= after_turns
    assert len(stopped.turns) < 6
    result = localtable("resume", run_dir.name, "--runs-dir", str(tmp_path), "-q", env=env)
    assert result.returncode in (0, 1), result.stderr
    assert "Transcript sha256" in result.stderr
    assert comparable(run_dir) == comparable(one_go)
    again = localtable("resume", run_dir.name, "--runs-dir", str(tmp_path), env=env)
    assert again.returncode == 2 and "already complete" in again.stderr


def test_replay_is_identical(env: dict[str, str], one_go: Path) -> None:
    result = localtable("replay", str(one_go), "--runs-dir", str(one_go.parent), "-q", env=env)
    record = read_record(one_go)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"identical {record.transcript_sha256}"


def test_replay_reports_first_divergence(tmp_path: Path, env: dict[str, str], one_go: Path) -> None:
    copy = tmp_path / one_go.name
    raw = json.loads((one_go / "record.json").read_text())
    turn = raw["turns"][1]  # round 1, second panelist
    text = turn["generation"]["raw_output"]
    turn["generation"]["raw_output"] = text[:20] + "~" + text[21:]
    copy.mkdir()
    (copy / "record.json").write_text(json.dumps(raw))
    result = localtable("replay", str(copy), "--runs-dir", str(tmp_path), "-q", env=env)
    assert result.returncode == 1
    assert f"diverges at round 1, {turn['panelist']}, token" in result.stdout
    assert "(character 20)" in result.stdout


def test_replay_refuses_another_engine_build_unless_asked(
    tmp_path: Path, env: dict[str, str], one_go: Path
) -> None:
    copy = tmp_path / one_go.name
    raw = json.loads((one_go / "record.json").read_text())
    raw["backends"]["llamacpp"]["library_sha256"]["libllama.so.0.5.0"] = "0" * 64
    copy.mkdir()
    (copy / "record.json").write_text(json.dumps(raw))
    refused = localtable("replay", str(copy), "--runs-dir", str(tmp_path), env=env)
    assert refused.returncode == 2
    assert "engine build differs" in refused.stderr and "--allow-engine-change" in refused.stderr
    forced = localtable(
        "replay", str(copy), "--runs-dir", str(tmp_path), "-q", "--allow-engine-change", env=env
    )
    assert "engine differs: libllama.so.0.5.0" in forced.stderr
    assert forced.returncode == 0 and forced.stdout.startswith("identical ")


def test_replay_without_the_model_file(tmp_path: Path, env: dict[str, str], one_go: Path) -> None:
    copy = tmp_path / one_go.name
    raw = json.loads((one_go / "record.json").read_text())
    raw["models"][0]["sha256"] = "f" * 64
    raw["models"][0]["settings"]["path"] = "/nonexistent/model.gguf"
    copy.mkdir()
    (copy / "record.json").write_text(json.dumps(raw))
    result = localtable("replay", str(copy), "--runs-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "is not on this machine" in result.stderr and "ffffffffffff" in result.stderr


def test_runs_lists_them(env: dict[str, str], one_go: Path) -> None:
    result = localtable("runs", "--runs-dir", str(one_go.parent), env=env)
    assert result.returncode == 0
    record = read_record(one_go)
    line = next(li for li in result.stdout.splitlines() if li.startswith(record.run_id))
    assert (
        record.status in line and "fast" in line and (record.transcript_sha256 or "")[:12] in line
    )
    assert "Should every city have free" in line
