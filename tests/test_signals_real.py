"""SIGTERM and SIGHUP on a real debate (issue #13, items 1 and 3).

`timeout`, systemd, `docker stop` and a closed SSH session stop a run with SIGTERM
or SIGHUP, often sent to the whole process group (the engine worker included).
The run must end as Ctrl-C ends it: the record finished as `interrupted`, the
worker gone, exit 128 + the signal. While it runs, its lock keeps a second
process out and `runs` says `running`.
"""

from __future__ import annotations

import json
import os
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


def turns_in(runs: Path) -> int:
    try:
        (record,) = runs.glob("*/record.json")
        return len(json.loads(record.read_text())["turns"])
    except (ValueError, OSError):
        return 0


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def runs_status(runs: Path, env: dict[str, str]) -> str:
    result = localtable("runs", "--runs-dir", str(runs), env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[1].split()[3]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_ends_the_run_like_ctrl_c(
    tmp_path: Path, env: dict[str, str], sig: signal.Signals, code: int
) -> None:
    config = fast_config(tmp_path)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "localtable", "debate", QUESTION, "--config", str(config),
         "--rounds", "3", "--seed", "11", "--runs-dir", str(runs), "-q"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as under `timeout` or a terminal
        preexec_fn=default_stop_signals,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 3000  # shared 2-core machines can be very slow
        while time.monotonic() < deadline and proc.poll() is None and turns_in(runs) < 1:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        workers = children(proc.pid)
        assert workers, "no engine worker"
        (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]

        if sig == signal.SIGTERM:  # item 1: the live run is locked, and shown as running
            resumed = localtable("resume", run_dir.name, "--runs-dir", str(runs), env=env)
            assert resumed.returncode == 2, resumed.stderr
            assert f"is in use by pid {proc.pid} (localtable debate" in resumed.stderr
            assert runs_status(runs, env) == "running"

        os.killpg(proc.pid, sig)  # the whole group, worker included, as `timeout` does
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "localtable resume" in err, err

    record = read_record(run_dir)
    assert record.status == "interrupted"
    assert record.error and record.error.startswith(f"stopped by {sig.name}"), record.error
    assert len([t for t in record.turns if t.status in ("ok", "failed")]) >= 1
    for turn in record.turns:  # the worker did not die first: no turn failed for it
        assert "engine process" not in (turn.error or ""), turn.error
    deadline = time.monotonic() + 60
    while not all(gone(w) for w in workers):
        assert time.monotonic() < deadline, f"engine worker(s) {workers} outlived the run"
        time.sleep(0.1)
    assert runs_status(runs, env) == "interrupted"
