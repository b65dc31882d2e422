"""Names that become paths stay inside their folder (issue #13, item 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localtable.config import load_config
from localtable.errors import ConfigError, RecordError
from localtable.record import read_record, write_record
from tests.fakes import make_record
from tests.hostile import NO_MODELS, invoke, no_models_config, questions_file


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return no_models_config(tmp_path)


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "a/b", "..", ".hidden"])
def test_batch_name_is_one_folder_inside_runs_dir(tmp_path: Path, config: Path, name: str) -> None:
    runs = tmp_path / "deep" / "runs"
    name = str(tmp_path / "x") if name == "ABSOLUTE" else name
    code, out = invoke(
        "batch", str(questions_file(tmp_path)), "--name", name, "--runs-dir", str(runs),
        "--config", str(config), "-q",
    )  # fmt: skip
    assert code == 2, out
    assert "must be one folder name" in out
    assert not (tmp_path / "x").exists() and not runs.exists()


def test_a_questions_file_name_that_is_no_folder_name_asks_for_name(
    tmp_path: Path, config: Path
) -> None:
    spaced = tmp_path / "my questions.jsonl"
    spaced.write_text(questions_file(tmp_path).read_text())
    code, out = invoke("batch", str(spaced), "--runs-dir", str(tmp_path / "runs"),
                       "--config", str(config), "-q")  # fmt: skip
    assert code == 2 and "'my questions'" in out and "give --name" in out, out


@pytest.mark.parametrize(
    "file", ["../../../x.gguf", "/etc/x.gguf", "a/../../x.gguf", "a//b.gguf", "a\\..\\x.gguf"]
)
def test_hub_file_must_stay_inside_the_repository(tmp_path: Path, file: str) -> None:
    path = tmp_path / "models.toml"
    source = f'{{ kind = "hf", repo = "org/repo", file = {json.dumps(file)} }}'
    path.write_text(NO_MODELS.replace('{ kind = "path", path = "missing.gguf" }', source))
    with pytest.raises(ConfigError, match="models.m.source.file: file must be a path inside"):
        load_config(path)
    fine = '{ kind = "hf", repo = "org/repo", file = "sub/dir/model-Q4.gguf" }'
    path.write_text(NO_MODELS.replace('{ kind = "path", path = "missing.gguf" }', fine))
    load_config(path)  # a file in a folder of the repository is fine


def test_a_record_cannot_name_a_run_folder_outside(tmp_path: Path) -> None:
    """replay writes <run id>-replay-... next to the runs: a shared record must not say ../x."""
    write_record(tmp_path, make_record(["A", "B"]))
    raw = json.loads((tmp_path / "record.json").read_text())
    raw["run_id"] = "../../outside"
    (tmp_path / "record.json").write_text(json.dumps(raw))
    with pytest.raises(RecordError, match="invalid run record at run_id"):
        read_record(tmp_path)
