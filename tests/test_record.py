"""The run record on disk: versioning, atomic writes, listing."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from localtable.debate.seeds import Seeds
from localtable.errors import RecordError
from localtable.record import list_runs, read_record, transcript_sha256, write_record
from localtable.report.render import render
from localtable.templates import builtin
from tests.fakes import make_record
from tests.scored import scored_record
from tests.scored import turn as scored_turn

DATA = Path(__file__).parent / "data"


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


@pytest.mark.parametrize("version", [1, 2])
def test_stored_records_of_older_versions_read_as_version_5(tmp_path: Path, version: int) -> None:
    """Real records written by localtable at d1000e0 (version 2, and the same run as
    version 1 wrote it: no memory plan, no rejected summaries)."""
    stored = json.loads((DATA / f"record-v{version}-real.json").read_text(encoding="utf-8"))
    (tmp_path / "record.json").write_text(json.dumps(stored))
    record = read_record(tmp_path)
    assert record.schema_version == 5 and record.seed_scheme == "run"
    seeds = Seeds.of(record)  # the seeds they were run with, which resume derives again
    index = {p.name: p.index for p in record.panelists}
    assert [t.generation.seed for t in record.turns if t.generation] == [
        seeds.turn(t.round, index[t.panelist]) for t in record.turns if t.generation
    ]
    assert all(
        t.parsed.order[0] == ("answer" if t.round == 1 else "decision")
        for t in record.turns
        if t.parsed
    )  # answer first then
    assert transcript_sha256(record) == stored["transcript_sha256"]  # outputs unchanged
    assert (record.memory is None) == (version == 1)
    for model, old in zip(record.models, stored["models"], strict=True):
        assert model.backend == "llamacpp" and model.sha256 == old["sha256"]
        assert model.settings["threads"] == old["threads"]
        assert model.settings["n_ubatch"] == old["n_ubatch"]
        assert model.settings["path"] == old["path"]
    assert record.backends["llamacpp"]["llama_cpp_python"] == stored["engine"]["llama_cpp_python"]
    assert record.machine is not None and record.machine.python == stored["engine"]["python"]
    # the display limits that applied then are kept for the renderers
    max_tokens = {p["name"]: p["sampling"]["max_tokens"] for p in stored["panelists"]}
    for turn in record.turns:
        assert turn.answer_max_chars == max(40, min(400, 2 * max_tokens[turn.panelist]))
    assert record.summary is not None and record.summary.line_max_chars == 160
    # written as version 5 (seed_scheme "run" kept), it reads back as the same record
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    text = render(record, "text", builtin())  # renderers need only the record
    assert record.question in text and all(p.name in text for p in record.panelists)


def test_a_version_3_record_reads_as_version_5_with_its_transcript_hash() -> None:
    """tests/data/record.json was written as version 3: turns answer first, open
    positions grouped by the summarizer, no labels."""
    stored = json.loads((DATA / "record.json").read_text(encoding="utf-8"))
    assert stored["schema_version"] == 3
    record = read_record(DATA)
    assert record.schema_version == 5 and record.seed_scheme == "run"
    assert record.positions == [] and record.labelings == []
    assert all(
        t.parsed.order == (["answer", "reasoning"] if t.round == 1 else
                           ["decision", "answer", "influenced_by", "reasoning"])
        for t in record.turns
        if t.parsed
    )  # fmt: skip
    assert all(t.position is None and t.continuation is None for t in record.turns)
    assert transcript_sha256(record) == stored["transcript_sha256"]


def test_samples_are_optional_checked_and_hashed(tmp_path: Path) -> None:
    """Vote mode's extra round-1 answers (`samples`): a record without them reads and
    hashes as before; with them they are read back, hashed, and must be round-1
    answers of the panel's seats."""
    plain = scored_record([["42", "41", "7"], ["42", "42", "7"]])
    assert "samples" not in json.loads(plain.model_dump_json(exclude_defaults=True))
    voted = scored_record([["42", "41", "7"], ["42", "42", "7"]], samples=[["42", "1", "7"]])
    assert transcript_sha256(voted) != transcript_sha256(plain)  # samples are outputs
    edited = voted.model_copy(deep=True)
    edited.samples[1] = scored_turn(1, "B2", "2")
    assert transcript_sha256(edited) != transcript_sha256(voted)
    write_record(tmp_path, voted)
    assert read_record(tmp_path) == voted
    raw = json.loads((tmp_path / "record.json").read_text())
    raw["samples"][0]["round"] = 2
    (tmp_path / "record.json").write_text(json.dumps(raw))
    with pytest.raises(RecordError, match="samples are round-1 answers"):
        read_record(tmp_path)
    raw["samples"][0]["round"], raw["samples"][0]["panelist"] = 1, "Z9"
    (tmp_path / "record.json").write_text(json.dumps(raw))
    with pytest.raises(RecordError, match="sample of 'Z9'"):
        read_record(tmp_path)


def test_sampling_outside_todays_limits_still_reads(tmp_path: Path) -> None:
    """Recorded sampling is stored as it was: a limit tightened later (in the config)
    must not make old records unreadable."""
    record = make_record(["A", "B"])
    raw = json.loads(record.model_dump_json())
    raw["panelists"][0]["sampling"]["temperature"] = 99.0  # over the config's limit of 5
    raw["panelists"][0]["sampling"]["max_tokens"] = 1_000_000
    (tmp_path / "record.json").write_text(json.dumps(raw))
    assert read_record(tmp_path).panelists[0].sampling.temperature == 99.0


def test_full_disk_keeps_the_previous_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_record(["A", "B"])
    write_record(tmp_path, first)

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    second = make_record(["A", "B"], question="changed")
    with pytest.raises(RecordError, match="disk is full.*localtable resume"):
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
