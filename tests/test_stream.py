"""Streaming on the terminal: each turn's text shows as it is generated, and the
report on stdout and the record are byte for byte those of a run without it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from localtable.cli import shown
from localtable.record import read_record
from tests.conftest import REPO, subprocess_env
from tests.realmodels import fast_config

pytestmark = pytest.mark.slow
QUESTION = "Should cities ban cars from their centres?"


def debate(config: Path, runs: Path, env: dict[str, str], terminal: bool) -> tuple[str, str]:
    """(stdout, stderr) of `localtable debate`; with terminal, stderr is a pty."""
    args = [sys.executable, "-m", "localtable", "debate", QUESTION, "--config", str(config)]
    args += ["--rounds", "2", "--seed", "11", "--runs-dir", str(runs)]
    if not terminal:
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=1800)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    main, child = pty.openpty()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=child)
    os.close(child)
    seen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child's end closed: EIO
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = proc.communicate(timeout=1800)
    reader.join(timeout=60)
    os.close(main)
    assert proc.returncode == 0, b"".join(seen).decode(errors="replace")
    return out.decode(), b"".join(seen).decode().replace("\r\n", "\n")


def test_a_terminal_sees_each_turn_as_it_is_written_and_nothing_else_changes(
    tmp_path: Path, isolated_cache: Path
) -> None:
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path, max_tokens=64)
    plain_out, plain_err = debate(config, tmp_path / "plain", env, terminal=False)
    live_out, live_err = debate(config, tmp_path / "live", env, terminal=True)
    assert live_out == plain_out  # the report on stdout, byte for byte
    (plain,) = (tmp_path / "plain").iterdir()
    (live,) = (tmp_path / "live").iterdir()
    a, b = read_record(plain), read_record(live)
    assert a.transcript_sha256 == b.transcript_sha256 and a.transcript_sha256
    assert [t.generation.raw_output for t in a.turns if t.generation] == [
        t.generation.raw_output for t in b.turns if t.generation
    ]
    # a pipe gets today's progress lines; the terminal each turn's text under its header
    assert "── " not in plain_err and "[1/7] round 1/2 · " in plain_err
    for turn in b.turns:
        header = f"round {turn.round}/2 · {turn.panelist} ──"
        assert header in live_err
        if turn.generation is not None and turn.continuation is None:
            after = live_err[live_err.index(header) :]
            assert after.split("\n", 1)[1].startswith(shown(turn.generation.raw_output))
    assert "summary · " in live_err
