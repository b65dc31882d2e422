"""Shared records, batch folders and lock files are untrusted input (issue #27, items 2, 3
and 7, and the plain bugs about locks, copies, temporary files and edited records).

Nothing here loads a model. A case that could read without bound runs in a child
process whose memory is capped (tests/hostile.py), and one that could hang runs with
a short timeout, so that code without the bound fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localtable.config import load_config
from localtable.errors import ConfigError, ModelFileError, RecordError
from localtable.models.gguf import read_gguf
from localtable.models.lock import read_lock
from localtable.record import list_runs, read_record, transcript_sha256, write_record
from localtable.research.batchindex import read_index
from localtable.research.questions import QuestionFileError, load_questions
from localtable.runlock import hold
from tests.conftest import REPO, subprocess_env
from tests.fakes import make_record
from tests.hostile import (
    RECORD,
    invoke,
    localtable,
    no_models_config,
    one_line_error,
    questions_file,
)
from tests.test_runlock import Holder

DEEP = 100_000
HANG_SECONDS = 30  # far more than any of these commands needs; a reader that hangs fails


def run_record(folder: Path, status: str = "interrupted") -> Path:
    record = make_record(["A", "B"])
    record.run_id = folder.name
    record.status = status  # type: ignore[assignment]
    write_record(folder, record)
    return folder


def quick(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process; a hang fails the test after HANG_SECONDS."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "localtable", *args], cwd=REPO, env=subprocess_env(cache),
            capture_output=True, text=True, timeout=HANG_SECONDS, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"`localtable {' '.join(args)}` hung")
    return proc


@pytest.fixture
def holders(isolated_cache: Path) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        if h.proc.poll() is None:
            h.kill()


# -- item 2: a batch never writes or deletes through a link --------------------------


def precious(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    return folder / "precious.txt"


def test_a_batch_whose_work_folder_is_a_link_deletes_nothing_outside(tmp_path: Path) -> None:
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    kept = [precious(outside / "one-s1"), precious(outside / "scratch")]
    (runs / "q").mkdir(parents=True)
    (runs / "q" / ".work").symlink_to(outside)
    code, out = invoke(
        "batch", str(questions_file(tmp_path)), "--runs-dir", str(runs),
        "--config", str(no_models_config(tmp_path)), "--seeds", "1", "-q",
    )  # fmt: skip
    assert all(p.read_text() == "keep me" for p in kept), out
    assert code == 2 and out.count("\n") == 1, out
    assert f"the work folder {runs / 'q' / '.work'} is a symbolic link" in out, out


def test_a_batch_whose_run_folder_is_a_link_deletes_nothing_outside(tmp_path: Path) -> None:
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    kept = precious(outside)
    (runs / "q" / ".work").mkdir(parents=True)
    (runs / "q" / ".work" / "one-s1").symlink_to(outside)
    code, out = invoke(
        "batch", str(questions_file(tmp_path)), "--runs-dir", str(runs),
        "--config", str(no_models_config(tmp_path)), "--seeds", "1", "-q",
    )  # fmt: skip
    assert kept.read_text() == "keep me" and (runs / "q" / ".work" / "one-s1").is_symlink()
    assert code == 2 and out.count("\n") == 1, out
    assert "is a symbolic link; localtable never writes or deletes through one" in out, out


def test_a_scratch_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    kept = precious(outside)
    (runs / "q" / ".work").mkdir(parents=True)
    (runs / "q" / ".work" / "scratch").symlink_to(outside)
    code, out = invoke(
        "batch", str(questions_file(tmp_path)), "--runs-dir", str(runs),
        "--config", str(no_models_config(tmp_path)), "--seeds", "1", "-q",
    )  # fmt: skip
    assert kept.read_text() == "keep me", out
    assert code == 2 and "the scratch folder" in out and "symbolic link" in out, out


# -- item 3: lock files ------------------------------------------------------------


def test_resume_never_truncates_what_a_linked_lock_points_to(tmp_path: Path) -> None:
    victim = tmp_path / "bashrc"
    victim.write_text("export KEEP=1\n")
    run = run_record(tmp_path / "runs" / "20260101-000000-aaaaaa")
    (run / ".lock").symlink_to(victim)
    result = localtable("resume", str(run), cache=tmp_path)
    assert victim.read_text() == "export KEEP=1\n"
    one_line_error(result, 2, f"cannot lock {run / '.lock'}: it is a symbolic link")


def test_a_run_folder_that_is_a_link_is_never_locked_or_written(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "20260101-000000-aaaaaa").symlink_to(elsewhere)
    run = tmp_path / "runs" / "20260101-000000-aaaaaa"
    with pytest.raises(RecordError, match="is a symbolic link; localtable never"), hold(run, "r"):
        pass
    assert list(elsewhere.iterdir()) == []


def test_a_lock_file_with_another_hard_link_is_not_truncated(tmp_path: Path) -> None:
    victim = tmp_path / "notes.txt"
    victim.write_text("keep me")
    run = run_record(tmp_path / "runs" / "20260101-000000-aaaaaa")
    os.link(victim, run / ".lock")
    with pytest.raises(RecordError, match="it is a hard link"), hold(run, "run"):
        pass
    assert victim.read_text() == "keep me"


def test_a_lock_that_is_a_fifo_is_refused_and_never_hangs(tmp_path: Path) -> None:
    run = run_record(tmp_path / "runs" / "20260101-000000-aaaaaa")
    os.mkfifo(run / ".lock")
    with pytest.raises(RecordError, match=r"it is a FIFO \(named pipe\)"), hold(run, "run"):
        pass
    result = quick("runs", "--runs-dir", str(tmp_path / "runs"), cache=tmp_path)
    assert result.returncode == 0 and "aaaaaa" in result.stdout, result.stderr


def test_a_record_is_never_written_into_a_fifo_or_through_a_link(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo-run"
    fifo.mkdir()
    os.mkfifo(fifo / "record.json")
    with pytest.raises(RecordError, match=r"it is a FIFO \(named pipe\), not a regular file"):
        write_record(fifo, make_record(["A", "B"]))
    victim = tmp_path / "victim.json"
    victim.write_text("keep me")
    linked = tmp_path / "linked-run"
    linked.mkdir()
    (linked / "record.json").symlink_to(victim)
    with pytest.raises(RecordError, match="it is a symbolic link, not a regular file"):
        write_record(linked, make_record(["A", "B"]))
    assert victim.read_text() == "keep me"


# -- item 7: every reader is bounded -----------------------------------------------


def test_a_config_that_is_dev_zero_is_one_line(tmp_path: Path) -> None:
    result = localtable("models", "--config", "/dev/zero", cache=tmp_path)
    one_line_error(result, 2, "/dev/zero: cannot read it: it is a device, not a regular file")


def test_a_record_linked_to_dev_zero_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "20260101-000000-aaaaaa"
    run.mkdir()
    (run / "record.json").symlink_to("/dev/zero")
    result = localtable("render", str(run), cache=tmp_path)
    one_line_error(result, 2, "unreadable run record: it is a device, not a regular file")


def test_a_questions_file_linked_to_dev_zero_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").symlink_to("/dev/zero")
    result = localtable(
        "batch", str(tmp_path / "q.jsonl"), "--runs-dir", str(tmp_path / "runs"),
        "--config", str(no_models_config(tmp_path)), cache=tmp_path,
    )  # fmt: skip
    one_line_error(result, 2, "cannot read it: it is a device, not a regular file")


def test_a_record_too_big_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_record(tmp_path / "20260101-000000-aaaaaa")
    monkeypatch.setattr("localtable.record.RECORD_MAX_BYTES", 100)
    with pytest.raises(RecordError, match="is larger than 100 bytes, the most localtable reads"):
        read_record(run)


def test_a_fifo_record_never_hangs_runs_and_shows_as_unreadable(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_record(runs / "20260101-000000-aaaaaa")
    (runs / "20260101-000000-bbbbbb").mkdir()
    os.mkfifo(runs / "20260101-000000-bbbbbb" / "record.json")
    result = quick("runs", "--runs-dir", str(runs), cache=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "aaaaaa" in lines[1] and "interrupted" in lines[1], result.stdout
    assert "bbbbbb" in lines[2] and "unreadable" in lines[2] and "FIFO" in lines[2], lines


def rounds_record(tmp_path: Path, rounds: int) -> Path:
    raw = json.loads(Path(RECORD).read_text())
    raw["rounds"] = rounds
    run = tmp_path / "20260101-000000-aaaaaa"
    run.mkdir()
    (run / "record.json").write_text(json.dumps(raw))
    return run


def test_a_record_of_a_billion_rounds_is_invalid(tmp_path: Path) -> None:
    run = rounds_record(tmp_path, 10**9)
    with pytest.raises(RecordError, match="invalid run record at rounds"):
        read_record(run)
    for command in (["render", str(run)], ["compare", str(run)]):
        result = quick(*command, cache=tmp_path)
        one_line_error(result, 2, "invalid run record at rounds")


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


def test_a_deeply_nested_record_is_one_line_and_runs_lists_the_rest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_record(runs / "20260101-000000-aaaaaa")
    deep = runs / "20260101-000000-bbbbbb"
    deep.mkdir()
    (deep / "record.json").write_text('{"schema_version": 4, "backends": ' + nested(DEEP) + "}")
    with pytest.raises(RecordError, match="unreadable run record: it nests deeper than 64"):
        read_record(deep)
    listing = list_runs(runs)
    assert [item.status for item in listing] == ["interrupted", "unreadable"]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_old_record_of_the_wrong_shape_is_unreadable_not_a_crash(
    tmp_path: Path, version: int
) -> None:
    runs = tmp_path / "runs"
    run_record(runs / "20260101-000000-aaaaaa")
    bad = runs / "20260101-000000-bbbbbb"
    bad.mkdir()
    (bad / "record.json").write_text(json.dumps({"schema_version": version, "turns": 5}))
    listing = list_runs(runs)  # upgrading it meets an int where turns should be a list
    assert [item.status for item in listing] == ["interrupted", "unreadable"]
    assert listing[1].problem and f"not the shape of schema version {version}" in listing[1].problem


def test_brackets_inside_strings_do_not_count(tmp_path: Path) -> None:
    run = run_record(tmp_path / "20260101-000000-aaaaaa")
    raw = json.loads((run / "record.json").read_text())
    raw["question"] = "[" * 1000 + ' "{" ' + "{" * 1000
    (run / "record.json").write_text(json.dumps(raw))
    assert read_record(run).question.startswith("[[[")


def test_a_deeply_nested_batch_index_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "batch.json").write_text('{"version": 2, "entries": ' + nested(DEEP) + "}")
    with pytest.raises(RecordError, match="unreadable batch index: it nests deeper than 64"):
        read_index(tmp_path)


def test_a_batch_index_cannot_send_score_outside_the_batch(tmp_path: Path) -> None:
    outside = run_record(tmp_path / "elsewhere")
    batch = tmp_path / "runs" / "study"
    batch.mkdir(parents=True)
    (batch / "batch.json").write_text(json.dumps({
        "version": 2, "name": "study", "source": "q.jsonl", "source_sha256": "0" * 64,
        "panel": "p", "rounds": 2, "seeds": [1], "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z", "questions": [],
        "entries": [{"question_id": "a", "seed": 1, "run_dir": f"../../{outside.name}"}],
    }))  # fmt: skip
    with pytest.raises(RecordError, match="invalid batch index at entries.0.run_dir"):
        read_index(batch)


def test_a_deeply_nested_models_toml_and_lock_are_one_line(tmp_path: Path) -> None:
    config = no_models_config(tmp_path)
    text = config.read_text()
    config.write_text(f"deep = {nested(DEEP)}\n" + text)
    with pytest.raises(ConfigError, match="cannot read it: it nests deeper than 64"):
        load_config(config)
    config.write_text(text)
    (tmp_path / "models.lock").write_text('{"lock_version": 1, "models": ' + nested(DEEP) + "}")
    with pytest.raises(ConfigError, match="unreadable lock file: it nests deeper than 64"):
        read_lock(load_config(config))


def test_deeply_nested_questions_files_are_one_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"id": "a", "question": "1?", "options": ' + nested(DEEP) + "}\n")
    with pytest.raises(QuestionFileError, match=r"q.jsonl:1: the line nests deeper than 64"):
        load_questions(jsonl)
    toml = tmp_path / "q.toml"
    toml.write_text(f"[[questions]]\nid = 'a'\nquestion = '1?'\noptions = {nested(DEEP)}\n")
    with pytest.raises(QuestionFileError, match="q.toml: the file nests deeper than 64"):
        load_questions(toml)
    comment = tmp_path / "c.toml"  # brackets in comments and strings are no nesting
    comment.write_text(
        "# " + "[" * 100 + "\n[[questions]]\nid = 'a'\nquestion = '" + "[" * 100 + "?'\n"
    )
    assert load_questions(comment).questions[0].question.startswith("[[[")


def gguf_with_nested_arrays(path: Path, depth: int) -> Path:
    key = b"general.deep"
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    array = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)
    path.write_bytes(head + array + b"\0" * 64)
    return path


def test_a_gguf_whose_metadata_nests_arrays_is_one_line(tmp_path: Path) -> None:
    path = gguf_with_nested_arrays(tmp_path / "deep.gguf", DEEP)
    with pytest.raises(ModelFileError, match="corrupt GGUF header: arrays nested more than 4"):
        read_gguf(path)
    shallow = read_gguf(gguf_with_nested_arrays(tmp_path / "ok.gguf", 2))
    assert shallow.tensor_count == 0


READ_GGUF = """
import sys
from pathlib import Path
from localtable.errors import ModelFileError
from localtable.models.gguf import read_gguf
try:
    read_gguf(Path(sys.argv[1]))
except ModelFileError as exc:
    print(exc)
"""


def test_a_gguf_that_is_a_fifo_never_hangs(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model.gguf")
    try:  # in a process of its own: an open that blocks fails the test, not the suite
        proc = subprocess.run(
            [sys.executable, "-c", READ_GGUF, str(tmp_path / "model.gguf")], cwd=REPO,
            env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=HANG_SECONDS,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO as a GGUF hung")
    assert "model.gguf: not a model file: it is a FIFO (named pipe)" in proc.stdout, proc


# -- plain bugs ----------------------------------------------------------------------


def test_resume_of_a_run_inside_a_live_batch_is_refused(
    tmp_path: Path, isolated_cache: Path, holders: list[Holder]
) -> None:
    batch = tmp_path / "runs" / "study"
    run = run_record(batch / ".work" / "one-s1")
    (batch / "batch.json").write_text("{}")  # a batch folder; its coordinator is the holder
    holders.append(holder := Holder(batch, isolated_cache))
    before = (run / "record.json").read_text()
    code, out = invoke("resume", str(run))
    assert code == 2 and out.count("\n") == 1, out
    assert f"run one-s1 belongs to the batch in {batch.resolve()}, which is in use by " in out
    assert f"pid {holder.pid}" in out
    assert (run / "record.json").read_text() == before


def test_runs_shows_each_copy_of_a_run_by_its_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = run_record(runs / "20260101-000000-aaaaaa")
    shutil.copytree(run, runs / "my-copy")
    code, out = invoke("runs", "--runs-dir", str(runs))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[1].startswith("20260101-000000-aaaaaa "), out
    assert lines[2].startswith("my-copy (run 20260101-000000-aaaaaa) "), out


def test_a_finished_run_keeps_no_temporary_file(tmp_path: Path) -> None:
    run = run_record(tmp_path / "20260101-000000-aaaaaa", status="running")
    stale = run / ".record.json.k1ll3d.tmp"  # what a process killed mid-write leaves
    stale.write_text("{half")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (run / ".record.json.l1nk.tmp").symlink_to(victim)
    record = read_record(run)
    write_record(run, record)  # still running: another writer's temporary file may be live
    assert stale.exists()
    record.status = "complete"
    write_record(run, record)
    assert sorted(p.name for p in run.iterdir()) == ["record.json"]
    assert victim.read_text() == "keep me"


def test_an_edited_record_renders_with_a_warning(tmp_path: Path) -> None:
    raw = json.loads(Path(RECORD).read_text())
    run = tmp_path / "20260101-000000-aaaaaa"
    run.mkdir()
    (run / "record.json").write_text(json.dumps(raw))
    clean = localtable("render", str(run), "--format", "md", cache=tmp_path)
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr
    raw["turns"][0]["generation"]["raw_output"] = "I was edited after the run."
    (run / "record.json").write_text(json.dumps(raw))
    actual = transcript_sha256(read_record(run))
    result = localtable("render", str(run), "--format", "md", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"Warning: run {raw['run_id']} was changed after it ran: its transcript hashes to "
        f"{actual[:12]}..., not the recorded {raw['transcript_sha256'][:12]}...; the report "
        "shows it as it is now\n"
    )
    assert f"does not match the record's content, which hashes to {actual}" in result.stdout
