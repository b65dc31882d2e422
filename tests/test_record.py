"""The run record on disk: versioning, atomic writes, listing."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from localtable.errors import RecordError
from localtable.record import list_runs, read_record, transcript_sha256, write_record
from tests.fakes import make_record


def test_roundtrip_and_hash_ignores_timing(tmp_path: Path) -> None:
    record = make_record(["A", "B"])
    write_record(tmp_path, record)
    again = read_record(tmp_path)
    assert again == record
    assert transcript_sha256(again) == transcript_sha256(record)


def test_unknown_schema_version_fails_clearly(tmp_path: Path) -> None:
    write_record(tmp_path, make_record(["A", "B"]))
    raw = json.loads((tmp_path / "record.json").read_text())
    raw["schema_version"] = 99
    (tmp_path / "record.json").write_text(json.dumps(raw))
    with pytest.raises(RecordError, match="schema version 99 is not supported"):
        read_record(tmp_path)


def test_a_version_1_record_reads_as_version_2(tmp_path: Path) -> None:
    write_record(tmp_path, make_record(["A", "B"]))
    raw = json.loads((tmp_path / "record.json").read_text())
    raw["schema_version"] = 1
    del raw["memory"]  # version 1 had no memory plan
    (tmp_path / "record.json").write_text(json.dumps(raw))
    record = read_record(tmp_path)
    assert record.schema_version == 2 and record.memory is None


def test_full_disk_keeps_the_previous_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_record(["A", "B"])
    write_record(tmp_path, first)

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    second = make_record(["A", "B"], question="changed")
    with pytest.raises(RecordError, match="No space left on device.*localtable resume"):
        write_record(tmp_path, second)
    monkeypatch.undo()
    assert read_record(tmp_path).question == first.question
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]  # no temp file left


def test_list_runs_reports_unreadable_records(tmp_path: Path) -> None:
    write_record(tmp_path / "20260101-000000-aaaaaa", make_record(["A", "B"]))
    bad = tmp_path / "20260101-000001-bbbbbb"
    bad.mkdir()
    (bad / "record.json").write_text("{not json")
    listing = list_runs(tmp_path)
    assert [item.record is not None for item in listing] == [True, False]
    assert listing[1].problem and "unreadable run record" in listing[1].problem
