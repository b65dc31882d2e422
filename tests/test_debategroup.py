"""A batch's --group (issue #28, item 3): the rounds of several debates decoded
together by one worker. On the fake backend, whose batched answers name how many
sequences shared their step (so the text depends on the group, as on llama.cpp):
the group recorded, the same records from one worker or two and from a second
batch, a group interrupted mid-round resumed as the same group, and a record of a
group refused alone by `resume` and `replay`."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.backends.base import TurnRequest
from localtable.batch.run import BatchEvent, BatchRequest, run_batch
from localtable.batch.workers import LocalPool, SessionRunner, WorkerSpec
from localtable.cli import cli
from localtable.config import load_config
from localtable.record import RunRecord, read_record, write_record
from localtable.research.batchindex import read_index
from localtable.research.questions import load_questions
from localtable.session.decodegroup import DebateGroup, Member
from localtable.templates import TemplateSet
from tests import fakebackend
from tests.test_backends import CONFIG
from tests.test_decodegroup import GroupingBackend, request

QUESTIONS = "".join(
    json.dumps({"id": f"q{i}", "question": f"Question {i}?"}) + "\n" for i in range(3)
)


def test_a_round_waits_for_every_debate_of_the_group_whatever_the_timing() -> None:
    """Debate b resumes past round 1 (it joins round 2 only), c stops after round 1:
    round 1 is a and c, round 2 is a and b, in group order, however the threads run."""

    def run(seed: int) -> list[list[str]]:
        jitter = random.Random(seed)
        backend = GroupingBackend()
        group = DebateGroup(["a", "b", "c"])

        def where(panelist: str) -> Member:
            return Member(model="m", backend=backend)  # type: ignore[arg-type]

        def debate(run_id: str, rounds: list[int]) -> None:
            for r in rounds:
                time.sleep(jitter.random() / 200)
                view = group.join(run_id, r, ["x", "y"], where)

                def turn(p: str, view: object = view) -> None:
                    time.sleep(jitter.random() / 200)
                    try:
                        view.generate(request(p))  # type: ignore[attr-defined]
                    finally:
                        view.leave(p)  # type: ignore[attr-defined]

                threads = [threading.Thread(target=turn, args=(p,)) for p in ("x", "y")]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=30)
            group.end(run_id)

        plan = {"a": [1, 2], "b": [2], "c": [1]}
        threads = [threading.Thread(target=debate, args=item) for item in plan.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        return backend.steps

    runs = [run(seed) for seed in range(4)]
    assert runs[0] == [["a/x", "a/y", "c/x", "c/y"], ["a/x", "a/y", "b/x", "b/y"]]
    assert all(r == runs[0] for r in runs)


def test_a_view_hands_the_debate_its_own_panelists_only() -> None:
    backend = GroupingBackend()
    group = DebateGroup(["r1"])
    view = group.join("r1", 1, ["x"], lambda p: Member(model="m", backend=backend))  # type: ignore[arg-type]
    assert view.running == {"x"}
    result = view.generate(request("x"))
    assert result.batch is not None and result.batch.members == ["r1/x"]
    assert isinstance(request("x"), TurnRequest)


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "models.toml"
    config.write_text(CONFIG)  # Ada and Cy on model alpha, Bob on beta
    questions = tmp_path / "study.jsonl"
    questions.write_text(QUESTIONS)
    return config, questions


def batch(config: Path, questions: Path, runs: Path, *more: str) -> str:
    args = ["batch", str(questions), "--config", str(config), "--runs-dir", str(runs),
            "--seeds", "1-2", "--rounds", "2", *more]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def records(batch_dir: Path) -> dict[str, RunRecord]:
    return {e.run_dir: read_record(batch_dir / e.run_dir) for e in read_index(batch_dir).entries}


def hashes(batch_dir: Path) -> dict[str, str | None]:
    return {run: r.transcript_sha256 for run, r in records(batch_dir).items()}


GROUPED = ("--decode", "batched", "--group", "2")


def test_the_group_is_recorded_and_every_way_of_running_it_gives_the_same_records(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    fakebackend.GROUPS.clear()
    batch(config, questions, tmp_path / "one", *GROUPED)
    one = records(tmp_path / "one" / "study")
    assert all(r.status == "complete" for r in one.values())
    # consecutive debates of the batch, two by two
    assert {run: r.decode_group for run, r in one.items()} == {
        "q0-s1": ["q0-s1", "q0-s2"], "q0-s2": ["q0-s1", "q0-s2"],
        "q1-s1": ["q1-s1", "q1-s2"], "q1-s2": ["q1-s1", "q1-s2"],
        "q2-s1": ["q2-s1", "q2-s2"], "q2-s2": ["q2-s1", "q2-s2"],
    }  # fmt: skip
    # each round's turns on model alpha: both debates' Ada and Cy, in one step
    ada = one["q1-s2"].turn(2, "Ada")
    assert ada is not None and ada.generation is not None and ada.generation.batch is not None
    assert ada.generation.batch.members == ["q1-s1/Ada", "q1-s1/Cy", "q1-s2/Ada", "q1-s2/Cy"]
    assert "in 4" in ada.generation.raw_output  # the text depends on the group
    assert ["q0-s1/Ada", "q0-s1/Cy", "q0-s2/Ada", "q0-s2/Cy"] in fakebackend.GROUPS
    # two workers, and a second batch (the group run again): the same records
    batch(config, questions, tmp_path / "two", *GROUPED, "--workers", "2")
    batch(config, questions, tmp_path / "again", *GROUPED)
    assert hashes(tmp_path / "two" / "study") == hashes(tmp_path / "one" / "study")
    assert hashes(tmp_path / "again" / "study") == hashes(tmp_path / "one" / "study")
    # without --group (each debate's round batched alone), and one after another: other text
    batch(config, questions, tmp_path / "alone", "--decode", "batched")
    batch(config, questions, tmp_path / "seq")
    alone, seq = hashes(tmp_path / "alone" / "study"), hashes(tmp_path / "seq" / "study")
    assert all(r.decode_group == [] for r in records(tmp_path / "seq" / "study").values())
    mine = hashes(tmp_path / "one" / "study")
    assert all(mine[run] != alone[run] != seq[run] for run in mine)


def test_sequential_transcripts_do_not_change_with_the_group_code(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    """A sequential batch gives what a debate run on its own gives (the path before)."""
    config, questions = study
    batch(config, questions, tmp_path / "seq", "--seeds", "1")
    record = records(tmp_path / "seq" / "study")["q0-s1"]
    result = CliRunner().invoke(cli, [
        "debate", "Question 0?", "--config", str(config), "--runs-dir", str(tmp_path / "d"),
        "--seed", "1", "--rounds", "2", "-q",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    (alone,) = [read_record(p) for p in (tmp_path / "d").iterdir()]
    assert alone.transcript_sha256 == record.transcript_sha256
    assert all(g is None or g.batch is None for t in record.turns for g in (t.generation,))


def interrupt(batch_dir: Path, partly: str, finished: str) -> None:
    """Leave a group as a batch killed mid-round 2 leaves it: `partly` saved its first
    panelist's round-2 turn only, `finished` all its turns and labels but not its
    summary."""
    for run in (partly, finished):
        work = batch_dir / ".work" / run
        shutil.move(batch_dir / run, work)
        record = read_record(work)
        if run == partly:
            first = record.panelists[0].name
            record.turns = [t for t in record.turns if t.round == 1 or t.panelist == first]
            record.labelings = [lab for lab in record.labelings if lab.round < 2]
        record.summary, record.transcript_sha256 = None, None
        record.status, record.finished_at = "interrupted", None
        write_record(work, record)


def test_a_group_interrupted_mid_round_resumes_as_the_same_group(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    batch(config, questions, tmp_path / "runs", *GROUPED)
    batch_dir = tmp_path / "runs" / "study"
    reference = records(batch_dir)
    interrupt(batch_dir, "q1-s2", "q1-s1")
    fakebackend.GROUPS.clear()
    output = batch(config, questions, tmp_path / "runs")  # the same batch, even without --group
    resumed = records(batch_dir)
    costs = {"seconds", "prompt_eval_tokens"}
    untimed = {"generation": costs, "continuation": costs}
    for run in ("q1-s1", "q1-s2"):
        assert resumed[run].transcript_sha256 == reference[run].transcript_sha256
        assert [t.model_dump(exclude=untimed) for t in resumed[run].turns] == [
            t.model_dump(exclude=untimed) for t in reference[run].turns
        ]
    # round 2 was redone by both debates in one group (q1-s1's turns only checked)
    assert fakebackend.GROUPS == [
        ["q1-s1/Ada", "q1-s1/Cy", "q1-s2/Ada", "q1-s2/Cy"],
        ["q1-s1/Bob", "q1-s2/Bob"],
    ]
    assert "Batch study: 6 complete, 0 failed, 0 errors" in output


def test_a_group_this_batch_does_not_hold_is_refused_in_one_line(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    batch(config, questions, tmp_path / "runs", *GROUPED)
    batch_dir = tmp_path / "runs" / "study"
    interrupt(batch_dir, "q1-s2", "q1-s1")
    args = [
        "batch",
        str(questions),
        "--config",
        str(config),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--seeds",
        "2",
        "--rounds",
        "2",
    ]  # q1-s1 is not in it
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert "it was decoded together with q1-s1, which this batch does not hold" in result.output


def test_resume_and_replay_refuse_a_record_of_a_group_alone(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    batch(config, questions, tmp_path / "runs", *GROUPED, "--seeds", "1-2")
    batch_dir = tmp_path / "runs" / "study"
    replay = CliRunner().invoke(cli, ["replay", str(batch_dir / "q0-s1"), "--config",
                                      str(config), "--runs-dir", str(tmp_path / "r")])  # fmt: skip
    assert replay.exit_code == 2
    assert "decoded together with 1 other debates of its batch (q0-s2; --group)" in replay.output
    assert "cannot be replayed alone" in replay.output
    interrupt(batch_dir, "q0-s2", "q0-s1")
    shutil.move(batch_dir / ".work" / "q0-s2", tmp_path / "q0-s2")
    resume = CliRunner().invoke(cli, ["resume", str(tmp_path / "q0-s2"), "--config",
                                      str(config)])  # fmt: skip
    assert resume.exit_code == 2 and "cannot be resumed alone" in resume.output


def test_group_needs_batched_decoding_and_local_workers(
    study: tuple[Path, Path], tmp_path: Path
) -> None:
    config, questions = study
    base = ["batch", str(questions), "--config", str(config), "--runs-dir", str(tmp_path)]
    plain = CliRunner().invoke(cli, [*base, "--group", "2"], catch_exceptions=False)
    assert plain.exit_code == 2 and "it needs --decode batched" in plain.output
    ray = CliRunner().invoke(cli, [*base, *GROUPED, "--ray", "auto"], catch_exceptions=False)
    assert ray.exit_code == 2 and "not on Ray actors" in ray.output


def test_a_worker_killed_mid_group_gives_the_whole_group_back(
    study: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, questions = study
    loaded = load_config(config)
    req = BatchRequest(questions=load_questions(questions), seeds=[1, 2], panel="duo",
                       rounds=2, runs_dir=tmp_path / "a", decode="batched", group=2)  # fmt: skip
    with SessionRunner(loaded, TemplateSet(), lambda e: None) as runner:
        expected = hashes(run_batch(req, runner, lambda e: None).batch_dir)
    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv(fakebackend.HOLD, str(hold))  # each worker waits in its 2nd generation
    events: list[BatchEvent] = []
    pool = LocalPool(WorkerSpec(loaded=loaded, panel="duo", threads=1), 2)
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = run_batch(
                req.model_copy(update={"runs_dir": tmp_path / "b"}), pool, events.append
            )
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 120
    while len(list(hold.iterdir())) < 2 and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    os.kill(int(sorted(hold.iterdir())[0].name), signal.SIGKILL)
    while not any(e.action == "requeue" for e in events) and thread.is_alive():
        time.sleep(0.01)
    (hold / "go").touch()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome
    requeued = [(e.question_id, e.seed) for e in events if e.action == "requeue"]
    assert len(requeued) == 2 and requeued[0][0] == requeued[1][0]  # both of its group
    assert hashes(tmp_path / "b" / "study") == expected
