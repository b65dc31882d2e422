"""Research mode on real llama.cpp: a scored batch interrupted, resumed, scored and compared."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localtable.debate.answers import parse_number
from localtable.record import read_record
from localtable.research.batchindex import read_index
from tests.conftest import REPO, default_stop_signals, subprocess_env
from tests.realmodels import fast_config, localtable

pytestmark = pytest.mark.slow
QUESTIONS = [
    {"id": "capital", "question": "What is the capital of France?", "kind": "choice",
     "options": ["Paris", "Lyon", "Marseille"], "answer": "Paris"},
    {"id": "sum", "question": "What is 7 + 5?", "kind": "number", "answer": 12},
]  # fmt: skip


def turns_in(record_file: Path) -> int:
    try:
        return len(json.loads(record_file.read_text())["turns"])
    except (OSError, ValueError, KeyError):
        return 0


def status_of(record_file: Path) -> str | None:
    try:
        return str(json.loads(record_file.read_text())["status"])
    except (OSError, ValueError, KeyError):
        return None


def test_batch_interrupted_resumed_scored_and_compared(
    tmp_path: Path, isolated_cache: Path
) -> None:
    env = subprocess_env(isolated_cache)
    config = fast_config(tmp_path)
    questions = tmp_path / "study.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    runs = tmp_path / "runs"
    args = ["batch", str(questions), "--config", str(config), "--runs-dir", str(runs),
            "--seeds", "1", "--rounds", "2"]  # fmt: skip
    batch_dir = runs / "study"
    # a debate runs in .work/ and moves under its own name once finished
    first = batch_dir / "capital-s1" / "record.json"
    second = batch_dir / ".work" / "sum-s1" / "record.json"

    # 1. Ctrl-C once the first debate is finished and the second has begun
    proc = subprocess.Popen(
        [sys.executable, "-m", "localtable", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_stop_signals,
    )  # fmt: skip
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline and proc.poll() is None:
        if status_of(first) in ("complete", "failed") and turns_in(second) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "run the same `localtable batch` command again" in err
    index = read_index(batch_dir)
    assert [e.status for e in index.entries][1] == "interrupted"
    assert index.entries[0].status in ("complete", "failed")
    assert read_record(second.parent).status == "interrupted"
    assert not (batch_dir / "sum-s1").exists()  # no unfinished run under a finished one's name

    # 2. the same command again: skips the first, resumes the second
    again = localtable(*args, env=env, timeout=1500)
    assert again.returncode == 0, again.stderr
    assert "[1/2] capital seed 1: " in again.stderr and ", skipped" in again.stderr
    assert "[2/2] sum seed 1: resuming" in again.stderr
    assert "SC@3: majority of the round-1 answers" in again.stdout
    assert "Debate: majority after round 2" in again.stdout
    index = read_index(batch_dir)
    for entry, q in zip(index.entries, QUESTIONS, strict=True):
        record = read_record(batch_dir / entry.run_dir)
        assert record.status in ("complete", "failed") and entry.status == record.status
        assert entry.transcript_sha256 == record.transcript_sha256
        assert record.question_id == q["id"] and record.question_kind == q["kind"]
        assert record.answer_key == str(q["answer"])
        assert len(record.turns) == 6
        for turn in record.turns:
            if turn.status == "ok" and turn.parsed is not None:
                # the grammar held: a choice is an option, a number is a number
                if q["kind"] == "choice":
                    assert turn.parsed.answer in q["options"]
                else:
                    assert parse_number(turn.parsed.answer) is not None

    # 3. compare and score in every format
    text = localtable("compare", str(batch_dir), env=env)
    assert text.returncode == 0, text.stderr
    assert "Final-round agreement" in text.stdout and "SmolLM2 Skeptic" in text.stdout
    md = localtable("compare", "study", "--runs-dir", str(runs), "--format", "md", env=env)
    assert md.returncode == 0 and "### Final-round agreement" in md.stdout
    rows = list(csv.reader(io.StringIO(
        localtable("compare", str(batch_dir), "--format", "csv", env=env).stdout
    )))  # fmt: skip
    assert rows[0][0] == "table" and sum(r[0] == "position" for r in rows) == 6
    page = tmp_path / "compare.html"
    html = localtable("compare", str(batch_dir), "--format", "html", "--output", str(page), env=env)
    assert html.returncode == 0 and "<svg" in page.read_text()
    scored = localtable("score", str(batch_dir), "--format", "md", env=env)
    assert scored.returncode == 0 and "2 scored debates" in scored.stdout
