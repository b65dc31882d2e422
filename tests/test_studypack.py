"""A study's finished debates shipped in the repository: packed the same bytes every time,
scored where they lie, restored as a batch that the same command resumes; links refused."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from localtable.cli import cli
from localtable.errors import RecordError
from localtable.record import PACKED_RECORD_FILE, RECORD_FILE, read_record, write_record
from localtable.research.batchindex import read_index
from localtable.research.studypack import main, pack, packed_bytes, read_shipped, restore
from localtable.safefiles import FileRefused, gunzip_bounded
from tests import fakebackend

MODELS = """
[debate]
panel = "trio"
rounds = 2
seed = 5
[models.plain]
source = { kind = "scripted", voice = "says 7" }
[models.latex]
source = { kind = "scripted", voice = "says \\\\boxed{7}" }
[panels.trio]
panelists = [
  { name = "Ada", model = "plain" },
  { name = "Bob", model = "latex" },
  { name = "Cy", model = "latex" },
]
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def study(tmp_path: Path) -> tuple[list[str], Path]:
    """A finished du2023 batch of 4 debates in vote mode (samples too), then one of them
    left interrupted and one never run: the batch command's arguments, and its folder."""
    fakebackend.LOADS.clear()
    (tmp_path / "models.toml").write_text(MODELS)
    questions = tmp_path / "sums.jsonl"
    lines = [{"id": f"q{i}", "question": f"What is {i}+7?", "kind": "number", "answer": 7}
             for i in range(4)]  # fmt: skip
    questions.write_text("\n".join(json.dumps(x) for x in lines))
    args = [str(questions), "--config", str(tmp_path / "models.toml"), "--runs-dir",
            str(tmp_path / "runs"), "--protocol", "du2023", "--vote", "6", "-q"]  # fmt: skip
    assert run("batch", *args).exit_code == 0
    batch = tmp_path / "runs" / "sums"
    cut = read_record(batch / "q2-s5")
    write_record(batch / "q2-s5", cut.model_copy(update={"status": "interrupted"}))
    shutil.rmtree(batch / "q3-s5")
    return args, batch


def test_pack_ships_the_finished_debates_the_same_bytes_every_time(
    study: tuple[list[str], Path], tmp_path: Path
) -> None:
    _, batch = study
    dest = tmp_path / "studies" / "sums"
    done = pack(batch, dest)
    assert (done.shipped, done.written, done.removed, done.unfinished) == (2, 3, 0, 2)
    assert sorted(p.name for p in dest.iterdir()) == ["batch.json", "q0-s5", "q1-s5"]
    index = read_index(dest)
    assert [e.run_dir for e in index.entries] == ["q0-s5", "q1-s5"]
    assert len(index.questions) == 4  # the batch's definition, whole
    ends = [read_record(batch / r).finished_at for r in ("q0-s5", "q1-s5")]
    assert index.updated_at == max(e for e in ends if e is not None)
    shipped = (dest / "q0-s5" / PACKED_RECORD_FILE).read_bytes()
    assert shipped[4:8] == b"\0\0\0\0"  # gzip's mtime: 0, so no date changes the bytes
    assert gzip.decompress(shipped) == (batch / "q0-s5" / RECORD_FILE).read_bytes()
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    again = pack(batch, dest)
    assert (again.shipped, again.written, again.removed) == (2, 0, 0)
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    record = read_record(batch / "q1-s5")
    assert packed_bytes(record) == packed_bytes(record.model_copy())


def test_score_reads_the_shipped_folder_as_it_lies(
    study: tuple[list[str], Path], tmp_path: Path
) -> None:
    _, batch = study
    dest = tmp_path / "studies" / "sums"
    pack(batch, dest)
    for rule in ([], ["--answer-rule", "boxed_or_last_number"]):
        shipped = run("score", str(dest), *rule)
        assert shipped.exit_code == 0, shipped.output
        assert shipped.output.startswith("Accuracy: sums\n2 scored debates")
        restored = tmp_path / f"restored{len(rule)}" / "sums"
        assert restore(dest, restored) == 2
        assert run("score", str(restored), *rule).output == shipped.output
    paper = run("score", str(dest)).output
    boxed = run("score", str(dest), "--answer-rule", "boxed_or_last_number").output
    assert "last_number 6 of 18 (33.3%) · boxed_or_last_number 18 of 18 (100.0%)" in paper
    assert paper != boxed and "not the one the runs recorded (last_number)" in boxed


def test_a_restored_study_is_resumed_by_the_same_batch_command(
    study: tuple[list[str], Path], tmp_path: Path
) -> None:
    args, batch = study
    dest = tmp_path / "studies" / "sums"
    pack(batch, dest)
    shutil.rmtree(batch)
    assert restore(dest, batch) == 2
    assert restore(dest, batch) is None  # there already: kept as it is
    assert not list(batch.parent.glob(".sums.restoring*"))
    shipped = {r: (batch / r / RECORD_FILE).read_bytes() for r in ("q0-s5", "q1-s5")}
    calls = sum(fakebackend.CALLS.values())
    resumed = run("batch", *args)
    assert resumed.exit_code == 0, resumed.output
    # two debates run (3 seats x 2 rounds + 3 seats x 1 sample each), two skipped
    assert sum(fakebackend.CALLS.values()) - calls == 2 * 9
    assert [e.status for e in read_index(batch).entries] == ["complete"] * 4
    assert {r: (batch / r / RECORD_FILE).read_bytes() for r in shipped} == shipped


def test_links_are_refused_never_followed(study: tuple[list[str], Path], tmp_path: Path) -> None:
    _, batch = study
    dest = tmp_path / "studies" / "sums"
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(batch / "q1-s5", elsewhere)
    shutil.rmtree(batch / "q1-s5")
    os.symlink(elsewhere, batch / "q1-s5")
    with pytest.raises(RecordError, match="q1-s5 is a symbolic link"):
        pack(batch, dest)
    os.unlink(batch / "q1-s5")
    (batch / "q1-s5").mkdir()
    os.symlink(elsewhere / RECORD_FILE, batch / "q1-s5" / RECORD_FILE)
    with pytest.raises(RecordError, match="symbolic link"):
        pack(batch, dest)
    assert not dest.exists()
    shutil.rmtree(batch / "q1-s5")
    pack(batch, dest)
    shipped = dest / "q0-s5" / PACKED_RECORD_FILE
    os.replace(shipped, tmp_path / "real.gz")
    os.symlink(tmp_path / "real.gz", shipped)
    with pytest.raises(RecordError, match="symbolic link"):
        read_shipped(dest)
    refused = run("score", str(dest))
    assert refused.exit_code != 0 and "symbolic link" in refused.output


def test_a_shipped_record_is_bounded_once_decompressed() -> None:
    bomb = gzip.compress(b"{" + b" " * 1_000_000 + b"}", mtime=0)
    assert len(bomb) < 2_000
    with pytest.raises(FileRefused, match="decompresses to more than"):
        gunzip_bounded(bomb, 100_000)
    assert gunzip_bounded(bomb, 2_000_000).startswith(b"{ ")
    with pytest.raises(FileRefused, match="not one whole gzip member"):
        gunzip_bounded(bomb[:-4], 2_000_000)
    with pytest.raises(FileRefused, match="not gzip"):
        gunzip_bounded(b"{}", 100)


def test_the_make_targets_entry_point(
    study: tuple[list[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, batch = study
    dest = tmp_path / "studies" / "sums"
    assert main(["pack", str(batch), str(dest)]) == 0
    assert "2 finished debates shipped (3 files written, 0 removed); 2 not finished" in (
        capsys.readouterr().out
    )
    target = tmp_path / "again" / "sums"
    assert main(["restore", str(dest), str(target)]) == 0
    assert "2 finished debates restored" in capsys.readouterr().out
    assert main(["restore", str(dest), str(target)]) == 0
    assert "is there already: kept as it is" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2
    assert "no shipped study here" in capsys.readouterr().err
