"""Batch workers on the fake backend: N local worker processes give the records of one,
a worker killed mid-debate and a coordinator killed mid-batch lose and duplicate nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.cli import cli
from localtable.config import load_config
from localtable.record import read_record
from localtable.research.batch import BatchEvent, BatchRequest, run_batch
from localtable.research.batchindex import read_index
from localtable.research.questions import load_questions
from localtable.research.workers import LocalPool, SessionRunner, WorkerSpec
from localtable.templates import TemplateSet
from tests import fakebackend
from tests.conftest import REPO
from tests.test_backends import CONFIG

QUESTIONS = "".join(
    json.dumps({"id": f"q{i}", "question": f"Question {i}?"}) + "\n" for i in range(3)
)
# Ray on loopback only: a node address of 127.0.0.1, no token to share between processes.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
# The CLI in a process of its own, with the fake backend registered as a plugin would.
DRIVER = """
import sys
import tests.fakebackend  # registers the `scripted` source kind
from localtable.cli import main
sys.argv = ["localtable", *sys.argv[1:]]
main()
"""


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "models.toml"
    config.write_text(CONFIG)  # `scripted` models: tests.fakebackend registered the kind
    questions = tmp_path / "study.jsonl"
    questions.write_text(QUESTIONS)
    return config, questions


def batch_args(config: Path, questions: Path, runs: Path, *more: str) -> list[str]:
    return [
        "batch", str(questions), "--config", str(config), "--runs-dir", str(runs),
        "--seeds", "1-2", "--rounds", "2", *more,
    ]  # fmt: skip


def transcripts(batch_dir: Path) -> dict[tuple[str, int], str | None]:
    """(question, seed) -> transcript sha256, read from the run records themselves."""
    index = read_index(batch_dir)
    out = {}
    for e in index.entries:
        record = read_record(batch_dir / e.run_dir)
        assert record.status in ("complete", "failed") and e.status == record.status
        assert (record.question_id, record.seed) == (e.question_id, e.seed)
        assert e.transcript_sha256 == record.transcript_sha256
        out[(e.question_id, e.seed)] = record.transcript_sha256
    return out


def assert_settled(batch_dir: Path) -> None:
    """Every run folder under its own name is finished, and nothing is left half-done."""
    folders = sorted(p.name for p in batch_dir.iterdir() if p.is_dir() and p.name != ".work")
    assert folders == sorted(e.run_dir for e in read_index(batch_dir).entries)
    assert not (batch_dir / ".work").exists(), list((batch_dir / ".work").iterdir())


def test_two_worker_processes_give_the_records_of_one(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    one = CliRunner().invoke(cli, batch_args(config, questions, tmp_path / "one"),
                             catch_exceptions=False)  # fmt: skip
    assert one.exit_code == 0, one.output
    two = CliRunner().invoke(
        cli, batch_args(config, questions, tmp_path / "two", "--workers", "2"),
        catch_exceptions=False,
    )  # fmt: skip
    assert two.exit_code == 0, two.output
    serial = transcripts(tmp_path / "one" / "study")
    assert len(serial) == 6 and None not in serial.values()
    assert transcripts(tmp_path / "two" / "study") == serial
    assert_settled(tmp_path / "two" / "study")
    index = read_index(tmp_path / "two" / "study")
    ran_on = {e.ran_on for e in index.entries}
    assert len(ran_on) == 2 and all(r and "pid" in r for r in ran_on), ran_on  # both worked
    assert "worker 1 ready" in two.output and "worker 2 ready" in two.output
    assert "Batch study: 6 complete, 0 failed, 0 errors" in two.output
    assert "worker 1 on " in two.output and " debates" in two.output  # the summary per worker


def test_a_worker_killed_mid_debate_hands_its_debate_back(
    study: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, questions = study
    loaded = load_config(config)
    qs = load_questions(questions)
    req = BatchRequest(questions=qs, seeds=[1, 2], panel="duo", rounds=2, runs_dir=tmp_path / "a")
    with SessionRunner(loaded, TemplateSet(), lambda e: None) as runner:
        serial = run_batch(req, runner, lambda e: None)
    expected = transcripts(serial.batch_dir)

    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv(fakebackend.HOLD, str(hold))
    events: list[BatchEvent] = []
    req2 = req.model_copy(update={"runs_dir": tmp_path / "b"})
    pool = LocalPool(WorkerSpec(loaded=loaded, panel="duo", threads=1), 2)
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = run_batch(req2, pool, events.append)
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    # both workers hold in their second generation: the first turn of each debate is saved
    deadline = time.monotonic() + 120
    while len(list(hold.iterdir())) < 2 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    victim = int(sorted(hold.iterdir())[0].name)
    os.kill(victim, signal.SIGKILL)
    while not any(e.action == "requeue" for e in events) and thread.is_alive():
        time.sleep(0.01)
    (hold / "go").touch()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome
    requeued = [e for e in events if e.action == "requeue"]
    assert len(requeued) == 1 and "SIGKILL" in (requeued[0].error or "")
    again = [e for e in events if e.action == "resume" and e.question_id == requeued[0].question_id
             and e.seed == requeued[0].seed]  # fmt: skip
    assert len(again) == 1  # resumed from its last finished turn, not started over
    batch_dir = tmp_path / "b" / "study"
    assert transcripts(batch_dir) == expected
    assert_settled(batch_dir)


def test_the_coordinator_killed_mid_batch_then_run_again_finishes_it(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    serial = CliRunner().invoke(cli, batch_args(config, questions, tmp_path / "one"),
                                catch_exceptions=False)  # fmt: skip
    assert serial.exit_code == 0, serial.output
    hold = tmp_path / "hold"
    hold.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), **{fakebackend.HOLD: str(hold)})
    command = [sys.executable, "-c", DRIVER,
               *batch_args(config, questions, tmp_path / "two", "--workers", "2")]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    batch_dir = tmp_path / "two" / "study"
    work = batch_dir / ".work"

    def saved() -> int:  # debates whose first turn the coordinator has saved
        return sum(_turns(p / "record.json") >= 1 for p in work.iterdir()) if work.is_dir() else 0

    deadline = time.monotonic() + 120
    while (len(list(hold.iterdir())) < 2 or saved() < 2) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=60)
    assert saved() == 2
    workers = [int(p.name) for p in hold.iterdir()]
    for pid in workers:  # the orphaned workers notice and stop
        while Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid):
            time.sleep(0.01)
    (hold / "go").touch()
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert transcripts(batch_dir) == transcripts(tmp_path / "one" / "study")
    assert_settled(batch_dir)


def _turns(record_file: Path) -> int:
    try:
        return len(json.loads(record_file.read_text())["turns"])
    except (OSError, ValueError, KeyError):
        return 0


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "zombie"


@pytest.mark.ray
def test_ray_auto_actors_give_the_records_of_one_worker(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    """`--ray auto` (a private Ray on 127.0.0.1) on the fake backend: the Ray pool's logic
    and the CLI around it (the real models on a cluster: test_ray_real.py)."""
    pytest.importorskip("ray")
    config, questions = study
    one = CliRunner().invoke(cli, batch_args(config, questions, tmp_path / "one"),
                             catch_exceptions=False)  # fmt: skip
    assert one.exit_code == 0, one.output
    env = dict(os.environ, PYTHONPATH=str(REPO), **RAY_ENV)
    command = [
        sys.executable,
        "-c",
        DRIVER,
        *batch_args(config, questions, tmp_path / "ray", "--ray", "auto", "--workers", "2"),
    ]
    ray = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert ray.returncode == 0, ray.stderr
    batch_dir = tmp_path / "ray" / "study"
    assert transcripts(batch_dir) == transcripts(tmp_path / "one" / "study")
    assert_settled(batch_dir)
    assert "worker 1 ready on " in ray.stderr and "worker 2 ready on " in ray.stderr
    assert all(e.ran_on and "127.0.0.1, node " in e.ran_on for e in read_index(batch_dir).entries)


def test_a_batch_imports_ray_only_when_asked() -> None:
    code = "import sys, localtable.research.batch, localtable.cli; print('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)  # fmt: skip
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_live_line_shows_counts_workers_rate_and_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from localtable.cli import BatchPrinter
    from localtable.research.batch import BatchProgress, WorkerState

    progress = BatchProgress(
        total=16, finished=5, failed=1, errors=0, running=2, per_hour=41.4, eta_seconds=754,
        workers=[WorkerState(worker=1, state="busy", run_id="q3-s1", turns=4),
                 WorkerState(worker=2, state="refused", where="node-b", message="no model")],
    )  # fmt: skip
    printer = BatchPrinter(quiet=False, live=True)
    printer(BatchEvent(position=4, total=16, question_id="q3", seed=1, action="run",
                       status="running", worker=1, progress=progress))  # fmt: skip
    printer.close()
    err = capsys.readouterr().err
    assert "[4/16] q3 seed 1: running on worker 1" in err
    assert (
        "5/16 done · 2 running · 1 failed · w1 q3-s1 (4 turns) · w2 refused · 41 debates/h · "
        "ETA 12m34s"
    ) in err


def test_quiet_hides_progress_but_not_a_worker_that_died(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from localtable.cli import BatchPrinter

    printer = BatchPrinter(quiet=True, live=True)
    printer(BatchEvent(position=1, total=4, question_id="q1", seed=1, action="run",
                       status="running", worker=1))  # fmt: skip
    printer(BatchEvent(position=1, total=4, question_id="q1", seed=1, action="requeue",
                       status="running", worker=1, error="killed by SIGKILL"))  # fmt: skip
    printer(BatchEvent(position=0, total=4, question_id="", seed=0, action="lost",
                       status="dead", worker=2, error="exit 1"))  # fmt: skip
    printer.close()
    err = capsys.readouterr().err
    assert "running" not in err
    assert "its worker 1 died (killed by SIGKILL); back in the queue" in err
    assert "worker 2 died: exit 1" in err
