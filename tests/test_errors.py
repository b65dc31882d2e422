"""Errors that say what is wrong, and exit codes that follow docs/commands.md (issue #13,
item 10)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.errors import RecordError
from localtable.session.run import execute
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, make_record
from tests.hostile import RECORD, invoke, no_models_config, questions_file


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return no_models_config(tmp_path)


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A runs folder that cannot be created: read-only for a user, /sys for root."""
    if os.geteuid() != 0:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
        yield parent / "runs"
        parent.chmod(0o755)
        return
    target = Path("/sys/localtable-test-runs")
    try:
        target.mkdir()
    except OSError:
        yield target
        return
    target.rmdir()
    pytest.skip("no unwritable folder on this machine")


def test_a_read_only_runs_folder_is_not_a_full_disk(unwritable: Path) -> None:
    record = make_record(["A1", "B2"], rounds=1)
    speaker = FakeSpeaker(
        {
            "A1": ["Reasoning: r\nAnswer: Yes, it helps."],
            "B2": ["Reasoning: r\nAnswer: No, it harms."],
        }
    )
    with pytest.raises(RecordError) as caught:
        execute(record, unwritable / "run", speaker, builtin(), lambda e: None)
    message = str(caught.value)
    assert "permission denied or read-only" in message and "disk" not in message, message
    assert "resume" not in message and "nothing was saved" in message, message


def test_batch_into_a_read_only_runs_folder(tmp_path: Path, config: Path, unwritable: Path) -> None:
    code, out = invoke("batch", str(questions_file(tmp_path)), "--runs-dir", str(unwritable),
                       "--config", str(config), "-q")  # fmt: skip
    assert code == 1, out
    assert "permission denied or read-only" in out and "disk" not in out, out


def test_a_template_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    layout = tmp_path / "latin1.j2"
    layout.write_bytes(b"caf\xe9 {{ v.title }}\n")
    code, out = invoke("render", RECORD, "--template", str(layout))
    assert code == 2, out
    assert f"{layout}: not UTF-8 text (byte 0xe9 at offset 3)" in out, out
    assert "frozen" not in out


def test_a_template_that_is_a_device_is_not_missing() -> None:
    code, out = invoke("render", RECORD, "--template", "/dev/zero")
    assert code == 2 and "/dev/zero: not a regular file" in out, out


def test_a_record_that_is_a_symlink_loop(tmp_path: Path) -> None:
    run = tmp_path / "20260101-000000-abcdef"
    run.mkdir()
    (run / "record.json").symlink_to(run / "record.json")
    code, out = invoke("render", str(run))
    assert code == 2, out
    assert "Too many levels of symbolic links" in out and "no record.json there" not in out, out
    code, out = invoke("runs", "--runs-dir", str(tmp_path))
    assert code == 0 and "unreadable" in out, out


def test_bad_records_and_nothing_to_score_are_bad_input(tmp_path: Path) -> None:
    assert invoke("render", "nope", "--runs-dir", str(tmp_path))[0] == 2  # missing
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "record.json").write_text("{not json")
    assert invoke("render", str(broken))[0] == 2
    empty = tmp_path / "empty"
    (empty / "batch").mkdir(parents=True)
    (empty / "batch" / "batch.json").write_text(
        json.dumps({"version": 1, "name": "batch", "source": "q.jsonl", "source_sha256": "0" * 64,
                    "panel": "p", "rounds": 1, "seeds": [1], "created_at": "2026-01-01T00:00:00Z",
                    "updated_at": "2026-01-01T00:00:00Z", "questions": [], "entries": []})
    )  # fmt: skip
    code, out = invoke("score", str(empty / "batch"))
    assert code == 2 and "no runs to compare" in out, out
    code, out = invoke("score", str(empty))  # a folder with no batch index and no record
    assert code == 2 and "no run" in out, out
