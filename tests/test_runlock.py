"""One process per run and per batch (issue #13, item 1), without loading a model.

A helper process takes a lock the way a debate or a batch does and keeps it until
its stdin closes; the tests then act as a second user would. test_signals_real.py
checks the same against a real debate.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.cli import cli
from localtable.record import list_runs, write_record
from localtable.runlock import RunLocked, hold, lock_holder
from tests.conftest import REPO, subprocess_env
from tests.fakes import make_record
from tests.hostile import NO_MODELS

HOLDER = """
import sys
from pathlib import Path
from localtable.runlock import hold
with hold(Path(sys.argv[1]), "test"):
    print("held", flush=True)
    sys.stdin.read()
"""


class Holder:
    """Another process holding a folder's lock until stop() or kill()."""

    def __init__(self, folder: Path, cache: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, env=subprocess_env(cache),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # returns once the lock is held (or the helper died)
        assert line == "held\n", self.proc.communicate()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.communicate(timeout=60)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.fixture
def holders(isolated_cache: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def running_record(runs: Path) -> Path:
    record = make_record(["A", "B"])  # status "running", as a debate leaves it while it runs
    record.run_id = "20260101-000000-aaaaaa"
    write_record(runs / record.run_id, record)
    return runs / record.run_id


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def runs_status(runs: Path) -> str:
    code, out = invoke("runs", "--runs-dir", str(runs))
    assert code == 0, out
    return out.splitlines()[1].split()[3]  # RUN, DATE (2 words), STATUS


def test_resume_is_refused_while_another_process_holds_the_run(
    tmp_path: Path, isolated_cache: Path, holders: list[Holder]
) -> None:
    run_dir = running_record(tmp_path)
    holders.append(holder := Holder(run_dir, isolated_cache))
    assert lock_holder(run_dir) == f"pid {holder.pid} (localtable {run_dir})"
    assert runs_status(tmp_path) == "running"

    code, out = invoke("resume", run_dir.name, "--runs-dir", str(tmp_path))
    assert code == 2, out
    assert out == (
        f"Error: run {run_dir.name} is in use by pid {holder.pid} (localtable {run_dir}); "
        "wait for it to end, or stop that process first (its lock goes with it)\n"
    )
    assert json.loads((run_dir / "record.json").read_text())["turns"] == []  # untouched

    holder.stop()
    assert lock_holder(run_dir) is None
    assert runs_status(tmp_path) == "interrupted"  # `running` in the record, nobody on it


def test_a_killed_holder_releases_the_lock(
    tmp_path: Path, isolated_cache: Path, holders: list[Holder]
) -> None:
    run_dir = running_record(tmp_path)
    holders.append(holder := Holder(run_dir, isolated_cache))
    holder.kill()  # SIGKILL: no chance to clean up; the kernel releases the lock
    assert lock_holder(run_dir) is None
    listing = list_runs(tmp_path)
    assert [item.status for item in listing] == ["interrupted"]
    with hold(run_dir, "run"):  # and the next process gets it
        assert lock_holder(run_dir) is not None


def test_a_second_batch_on_the_same_folder_is_refused(
    tmp_path: Path, isolated_cache: Path, holders: list[Holder]
) -> None:
    questions = tmp_path / "study.jsonl"
    questions.write_text(json.dumps({"id": "one", "question": "2+2?", "kind": "number"}) + "\n")
    runs = tmp_path / "runs"
    config = tmp_path / "models.toml"
    config.write_text(NO_MODELS)  # had the batch run, it would fail at once, loading nothing
    holders.append(holder := Holder(runs / "study", isolated_cache))
    code, out = invoke("batch", str(questions), "--runs-dir", str(runs), "--config", str(config))
    assert code == 2, out
    assert f"batch study ({runs / 'study'}) is in use by pid {holder.pid}" in out
    assert not (runs / "study" / "batch.json").exists()


def test_a_batch_holding_its_lock_can_lock_its_runs(tmp_path: Path) -> None:
    batch = tmp_path / "study"
    with hold(batch, "batch"), hold(batch / "one-s1", "run"):
        assert lock_holder(batch) is not None and lock_holder(batch / "one-s1") is not None
        # the same process opening it again is refused too
        with pytest.raises(RunLocked, match="run is in use by pid"), hold(batch / "one-s1", "run"):
            pass
    assert lock_holder(batch) is None and lock_holder(batch / "one-s1") is None
    assert (batch / ".lock").read_text() == ""  # no stale holder left behind


def test_lock_holder_never_creates_anything(tmp_path: Path) -> None:
    assert lock_holder(tmp_path / "nowhere") is None
    assert lock_holder(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
