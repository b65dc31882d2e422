"""Batches on a scripted fake runner: index, skip, resume, seeds, progress estimate."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.backends.base import TurnRequest, TurnResult
from localtable.batch.run import (
    BatchEvent,
    BatchRequest,
    estimate_left,
    parse_seeds,
    read_index,
    run_batch,
    run_id_for,
)
from localtable.cli import cli
from localtable.errors import ConfigError, RecordError
from localtable.record import RunRecord, read_record, write_record
from localtable.research.questions import Question, QuestionSet
from localtable.session.run import DebateRequest, RunInterrupted, execute
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, make_record
from tests.scripted import scripted_reply

NAMES = ["A1", "B2", "C3"]
QUESTIONS = QuestionSet(
    name="demo",
    source="demo.jsonl",
    sha256="0" * 64,
    questions=[
        Question(id="cap", question="Capital?", kind="choice", options=["Paris", "Lyon"],
                 answer="Paris"),
        Question(id="sum", question="7+5?", kind="number", answer="12"),
    ],
)  # fmt: skip
ANSWERS = {"cap": ["Paris", "Lyon", "Paris"], "sum": ["12", "12", "13"]}


@dataclass
class ScriptedSpeaker(FakeSpeaker):
    """Answers by question and panelist; raises KeyboardInterrupt at call number `stop_at`."""

    answers: dict[str, str] = field(default_factory=dict)
    stop_at: int | None = None

    def generate(self, request: TurnRequest) -> TurnResult:
        panelist, grammar = request.panelist, request.grammar
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        # a reply in the shape the grammar asks for (tests/scripted.py)
        self.replies[panelist] = [scripted_reply(grammar, self.answers.get(panelist, ""))]
        return super().generate(request)


@dataclass
class FakeRunner:
    stop: dict[str, int] = field(default_factory=dict)  # run id -> call to interrupt at
    calls: list[tuple[str, str]] = field(default_factory=list)

    def _speaker(self, run_id: str, question_id: str) -> ScriptedSpeaker:
        answers = dict(zip(NAMES, ANSWERS[question_id], strict=True))
        return ScriptedSpeaker({}, answers=answers, stop_at=self.stop.pop(run_id, None))

    def run(self, req: DebateRequest) -> RunRecord:
        assert req.run_id and req.question_id
        self.calls.append(("run", req.run_id))
        record = make_record(NAMES, rounds=req.rounds, question=req.question)
        record.run_id, record.seed, record.panel = req.run_id, req.seed, req.panel
        record.question_id, record.question_kind = req.question_id, req.question_kind
        record.options, record.answer_key = list(req.options), req.answer_key
        run_dir = req.runs_dir / req.run_id
        write_record(run_dir, record)
        speaker = self._speaker(req.run_id, req.question_id)
        return execute(record, run_dir, speaker, builtin(), lambda e: None)  # type: ignore[arg-type]

    def resume(self, run_dir: Path) -> RunRecord:
        self.calls.append(("resume", run_dir.name))
        record = read_record(run_dir)
        record.turns = [t for t in record.turns if t.status != "interrupted"]
        record.status = "running"
        assert record.question_id
        speaker = self._speaker(record.run_id, record.question_id)
        return execute(record, run_dir, speaker, builtin(), lambda e: None)  # type: ignore[arg-type]


def request(tmp_path: Path, **changes: object) -> BatchRequest:
    values: dict[str, object] = {
        "questions": QUESTIONS, "seeds": [1, 2], "panel": "default", "rounds": 2,
        "runs_dir": tmp_path,
    }  # fmt: skip
    values.update(changes)
    return BatchRequest.model_validate(values)


def test_parse_seeds() -> None:
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("1,3,7") == [1, 3, 7]
    assert parse_seeds("3-4, 1, 4") == [3, 4, 1]
    for bad in ("", "a", "5-1", "1-", "1-2000"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_estimate_left() -> None:
    assert estimate_left([], 3) is None
    assert estimate_left([10.0, 20.0], 4) == 60.0


def test_batch_runs_every_question_and_seed_then_skips_them(tmp_path: Path) -> None:
    runner, events = FakeRunner(), []
    result = run_batch(request(tmp_path), runner, events.append)
    assert result.batch_dir == tmp_path / "demo"
    assert [c[1] for c in runner.calls] == ["cap-s1", "cap-s2", "sum-s1", "sum-s2"]
    index = read_index(tmp_path / "demo")
    assert index.version == 2 and index.panel == "default" and index.rounds == 2
    assert [(e.question_id, e.seed, e.run_dir, e.status) for e in index.entries] == [
        ("cap", 1, "cap-s1", "complete"), ("cap", 2, "cap-s2", "complete"),
        ("sum", 1, "sum-s1", "complete"), ("sum", 2, "sum-s2", "complete"),
    ]  # fmt: skip
    for entry in index.entries:
        record = read_record(tmp_path / "demo" / entry.run_dir)
        assert entry.transcript_sha256 == record.transcript_sha256 is not None
        assert record.question_id == entry.question_id and record.seed == entry.seed
    cap = read_record(tmp_path / "demo" / "cap-s1")
    assert cap.question_kind == "choice" and cap.answer_key == "Paris"
    assert [e.action for e in events if e.position] == ["run", "done"] * 4
    assert all(e.worker == 1 for e in events if e.action in ("run", "done"))
    done = [e for e in events if e.action == "done"]
    assert done[-1].eta_seconds == 0.0 and all(e.seconds is not None for e in done)
    # again: everything is finished, nothing runs
    again, events2 = FakeRunner(), []
    run_batch(request(tmp_path), again, events2.append)
    assert again.calls == [] and [e.action for e in events2] == ["skip"] * 4
    assert not (tmp_path / "demo" / ".work").exists()


def test_interrupted_batch_resumes_the_interrupted_debate_and_skips_finished(
    tmp_path: Path,
) -> None:
    runner = FakeRunner(stop={"cap-s2": 4})  # Ctrl-C during cap-s2's 5th generation
    with pytest.raises(RunInterrupted, match="run the same `localtable batch` command again"):
        run_batch(request(tmp_path), runner, lambda e: None)
    index = read_index(tmp_path / "demo")
    assert [e.status for e in index.entries] == ["complete", "interrupted", "pending", "pending"]
    # an unfinished debate stays in .work/: only finished ones are under their own name
    assert not (tmp_path / "demo" / "cap-s2").exists()
    assert read_record(tmp_path / "demo" / ".work" / "cap-s2").status == "interrupted"
    events: list[BatchEvent] = []
    second = FakeRunner()
    run_batch(request(tmp_path), second, events.append)
    assert second.calls == [("resume", "cap-s2"), ("run", "sum-s1"), ("run", "sum-s2")]
    assert [e.action for e in events if e.position and e.action != "done"] == [
        "skip", "resume", "run", "run"
    ]  # fmt: skip
    resumed = read_record(tmp_path / "demo" / "cap-s2")
    assert resumed.status == "complete" and len(resumed.turns) == 6
    # an older localtable ran debates in place: a SIGKILL there left a record "running"
    # under the run's own name and a stale index; the record decides, and it moves to .work
    record = read_record(tmp_path / "demo" / "sum-s2")
    record.status, record.summary = "running", None
    write_record(tmp_path / "demo" / "sum-s2", record)
    third = FakeRunner()
    run_batch(request(tmp_path), third, lambda e: None)
    assert third.calls == [("resume", "sum-s2")]
    assert read_record(tmp_path / "demo" / "sum-s2").status == "complete"


def test_batch_refuses_other_rounds_or_changed_questions(tmp_path: Path) -> None:
    run_batch(request(tmp_path, seeds=[1]), FakeRunner(), lambda e: None)
    with pytest.raises(ConfigError, match="was run with --panel default --rounds 2"):
        run_batch(request(tmp_path, seeds=[1], rounds=3), FakeRunner(), lambda e: None)
    changed = QUESTIONS.model_copy(
        update={"questions": [QUESTIONS.questions[0].model_copy(update={"question": "Other?"})]}
    )
    with pytest.raises(ConfigError, match="holds a debate of another question"):
        run_batch(request(tmp_path, seeds=[1], questions=changed), FakeRunner(), lambda e: None)
    # another name is another batch
    other = run_batch(request(tmp_path, seeds=[1], rounds=3, name="r3"), FakeRunner(), print)
    assert other.batch_dir == tmp_path / "r3"


def test_unknown_index_version_is_a_clear_error(tmp_path: Path) -> None:
    run_batch(request(tmp_path, seeds=[1]), FakeRunner(), lambda e: None)
    path = tmp_path / "demo" / "batch.json"
    raw = json.loads(path.read_text())
    raw["version"] = 99
    path.write_text(json.dumps(raw))
    with pytest.raises(RecordError, match="batch index version 99 is not supported"):
        read_index(tmp_path / "demo")


def test_run_ids_name_question_and_seed() -> None:
    assert run_id_for("arithmetic-001", 7) == "arithmetic-001-s7"


def test_cli_batch_reports_bad_question_files_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "question": "Q?", "kind": "choice"}\n')
    result = CliRunner().invoke(cli, ["batch", str(path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {path}:1: field 'options': a choice question needs options: a list of 2 or more"
    )
    both = CliRunner().invoke(cli, ["batch", str(path), "--task", "arithmetic"])
    assert both.exit_code == 2 and "not both" in both.output
    task = CliRunner().invoke(cli, ["batch", "--task", "nope"])
    assert task.exit_code == 2 and "unknown task 'nope'" in task.output
