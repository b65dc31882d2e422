"""The Backend seam, through a backend added as any would be: tests/fakebackend.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.backends.base import create
from localtable.cli import cli
from localtable.config import load_config
from localtable.errors import ConfigError
from localtable.record import read_record, write_record
from localtable.research.batch import BatchRequest, SessionRunner, run_batch
from localtable.research.questions import Question, QuestionSet
from localtable.templates import TemplateSet
from tests import fakebackend

CONFIG = """
[debate]
panel = "duo"
rounds = 2

[models.alpha]
source = { kind = "scripted" }
[models.beta]
source = { kind = "scripted" }

[panels.duo]
panelists = [
  { name = "Ada", model = "alpha" },
  { name = "Bob", model = "beta" },
  { name = "Cy", model = "alpha", persona = "A skeptic." },
]
"""


@pytest.fixture
def fake_backend(tmp_path: Path) -> Path:
    """A models.toml of `scripted` models: importing tests.fakebackend registered them."""
    fakebackend.LOADS.clear()
    fakebackend.OPENED_WITH.clear()
    config = tmp_path / "models.toml"
    config.write_text(CONFIG)
    return config


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown backend 'nope'.*llamacpp"):
        create("nope")


def test_a_registered_backend_runs_a_debate_end_to_end(fake_backend: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["debate", "Is this seam enough?", "--config", str(fake_backend), "--runs-dir", str(runs)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = list(runs.iterdir())
    record = read_record(run_dir)
    assert record.status == "complete"
    assert [m.backend for m in record.models] == ["fake", "fake"]
    assert record.backends == {"fake": {"version": "fake-1"}}
    assert all(t.generation and t.generation.token_ids for t in record.turns)
    assert record.summary is not None and record.summary.consensus.kind == "all"
    # a model shared by two panelists is loaded once
    assert fakebackend.LOADS == {"alpha": 1, "beta": 1}


def test_quality_reads_the_reasoning_with_the_summarizers_model_only_when_asked(
    fake_backend: Path, tmp_path: Path
) -> None:
    """`localtable quality --judge-reasoning` loads the summarizer's model from the
    record and asks it, under the stance grammar, what each yes/no turn's reasoning
    concludes (the fake reads every one as "No"); without the flag nothing loads."""
    runs = tmp_path / "runs"
    args = ["debate", "Is this seam enough?", "--config", str(fake_backend), "--runs-dir",
            str(runs), "-q"]  # fmt: skip
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
    (run_dir,) = list(runs.iterdir())
    record = read_record(run_dir)
    answers = {"Ada": "Yes, because it is enough.", "Bob": "No, because it is too thin."}
    record.turns = [
        t.model_copy(update={"parsed": t.parsed.model_copy(update={"answer": answers[t.panelist]})})
        if t.parsed and t.panelist in answers
        else t
        for t in record.turns
    ]
    write_record(run_dir, record)
    fakebackend.LOADS.clear()
    plain = CliRunner().invoke(cli, ["quality", str(run_dir)], catch_exceptions=False)
    assert plain.exit_code == 0, plain.output
    assert "not measured (--judge-reasoning)" in plain.output and not fakebackend.LOADS
    judged = CliRunner().invoke(
        cli, ["quality", str(run_dir), "--judge-reasoning"], catch_exceptions=False
    )
    assert judged.exit_code == 0, judged.output
    row = next(x for x in judged.output.splitlines() if x.startswith("Answers against their own"))
    # Ada's two "Yes" answers against "No"; Bob's agree; Cy's answer opens with neither
    assert "2 of 4 yes/no answers (0 neither)" in row
    assert "Against its own reasoning: " in judged.output
    assert fakebackend.LOADS == {"alpha": 1}  # the summarizer Ada's model, nothing else


def test_a_batch_loads_each_model_once(fake_backend: Path, tmp_path: Path) -> None:
    questions = QuestionSet(
        name="three",
        source="test",
        sha256="0" * 64,
        questions=[Question(id=f"q{i}", question=f"Question {i}?") for i in range(3)],
    )
    req = BatchRequest(
        questions=questions, seeds=[1, 2], panel="duo", rounds=1, runs_dir=tmp_path / "runs"
    )
    with SessionRunner(load_config(fake_backend), TemplateSet(), lambda e: None) as runner:
        result = run_batch(req, runner, lambda e: None)
    assert result.count("complete") == 6
    assert fakebackend.LOADS == {"alpha": 1, "beta": 1}  # six debates, one load each


def test_resume_opens_the_recorded_plan(fake_backend: Path, tmp_path: Path) -> None:
    """resume loads what the record says, not what models.toml says today."""
    runs = tmp_path / "runs"
    args = ["debate", "Q?", "--config", str(fake_backend), "--runs-dir", str(runs), "-q"]
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
    (run_dir,) = list(runs.iterdir())
    record = read_record(run_dir)
    assert record.memory is not None
    record.memory = record.memory.model_copy(update={"loading": "one at a time"})
    record.turns = [t for t in record.turns if t.round == 1]
    record.summary, record.status = None, "interrupted"
    write_record(run_dir, record)
    fakebackend.OPENED_WITH.clear()
    resumed = CliRunner().invoke(
        cli,
        ["resume", str(run_dir), "--config", str(fake_backend), "--runs-dir", str(runs), "-q"],
        catch_exceptions=False,
    )
    assert resumed.exit_code == 0, resumed.output
    assert [m.loading for m in fakebackend.OPENED_WITH if m] == ["one at a time"]
    assert read_record(run_dir).status == "complete"


def test_every_template_a_debate_renders_is_in_its_record(
    fake_backend: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay refuses a changed template only if the record has its sha256."""
    rendered: set[str] = set()
    render = TemplateSet.render

    def recording(self: TemplateSet, template_name: str, **values: object) -> str:
        rendered.add(template_name)
        return render(self, template_name, **values)

    monkeypatch.setattr(TemplateSet, "render", recording)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        cli,
        ["debate", "Is this seam enough?", "--config", str(fake_backend), "--runs-dir", str(runs)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = list(runs.iterdir())
    record = read_record(run_dir)
    assert {"turn.gbnf.j2", "label.j2", "label.gbnf.j2", "summarize.j2"} <= rendered
    assert rendered <= set(record.templates)
    assert record.templates["label.j2"] == TemplateSet().sha256("label.j2")
