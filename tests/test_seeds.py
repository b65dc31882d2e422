"""Seeds depend on the question (record version 5); a version 4 record keeps the seeds
it ran with, so resume and replay reproduce it byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from localtable.cli import cli
from localtable.debate.protocol import Debate
from localtable.debate.seeds import Seeds, question_key
from localtable.protocols import builtin_protocol
from localtable.record import RunRecord, read_record, write_record
from tests import fakebackend
from tests.conftest import REPO
from tests.fakes import FakeSpeaker, make_record
from tests.test_protocols import TRIO, calls_sha, open_debate

# Written by `localtable debate "Is one line enough?" --vote 6` on the scripted TRIO
# panel at 6e62b8b (version 4): turns, labels, samples and a summary. Its templates
# have changed since, so resume and replay refuse it (as they refuse any record whose
# templates changed); the tests that resume and replay one make it on today's.
V4_RECORD = REPO / "tests" / "data" / "record-v4-scripted.json"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def every_seed(seeds: Seeds) -> list[int]:
    """A debate's seeds: 3 seats' turns over 3 rounds, a summary and its retries after
    them, 2 vote samples a seat, 3 attempts at labels after each round, a judge's."""
    return [
        *(seeds.turn(r, i) for r in range(1, 7) for i in range(3)),
        *(seeds.sample(n, i) for n in (1, 2) for i in range(3)),
        *(seeds.stage(f"labels{r}", a) for r in range(1, 4) for a in range(3)),
        seeds.stage("judge1/A1", 0),
    ]


def test_the_schemes_derive_these_seeds() -> None:
    """Pinned. The "run" scheme gave seat A's round-1 turn of every question of a
    `batch --seeds 1` the seed 2124535810."""
    assert Seeds(1, "").turn(1, 0) == 2124535810
    record = make_record(["A1", "B2", "C3"], question="What is 3+4?").model_copy(update={"seed": 1})
    new = Seeds.of(record)
    assert new.question_key == question_key("What is 3+4?", [])
    assert new.question_key == hashlib.sha256(b"What is 3+4?").hexdigest()
    assert new.question_key == "9967e62b29b6bb114d9536d399047499906d8dc5cf85adccad597f1ad051295e"
    assert (new.turn(1, 0), new.sample(1, 0), new.stage("labels1", 0)) == (
        1638284756, 535817338, 457556703,
    )  # fmt: skip
    # as docs/record.md says: sha256("<seed>/<question key>/<round>/<index>")
    digest = hashlib.sha256(f"1/{new.question_key}/1/0".encode()).digest()
    assert new.turn(1, 0) == int.from_bytes(digest[:4], "big") % (2**31 - 2) + 1
    old = Seeds.of(record.model_copy(update={"seed_scheme": "run"}))
    assert old == Seeds(1, "")


def test_two_questions_with_one_run_seed_draw_different_seeds() -> None:
    one = make_record(["A1", "B2", "C3"], question="What is 3+4?")
    two = make_record(["A1", "B2", "C3"], question="What is 3+5?")
    seeds = every_seed(Seeds.of(one))
    assert len(set(seeds)) == len(seeds)  # every step and seat its own
    assert not set(seeds) & set(every_seed(Seeds.of(two)))
    # the same stem with other options is another question
    options = one.model_copy(update={"question_kind": "choice", "options": ["7", "8"]})
    others = one.model_copy(update={"question_kind": "choice", "options": ["6", "7"]})
    assert not set(every_seed(Seeds.of(options))) & set(every_seed(Seeds.of(others)))
    assert not set(every_seed(Seeds.of(options))) & set(seeds)
    # what records up to version 4 did: the same seeds whatever the question
    old = [r.model_copy(update={"seed_scheme": "run"}) for r in (one, two)]
    assert every_seed(Seeds.of(old[0])) == every_seed(Seeds.of(old[1]))


def test_the_scheme_changes_the_seeds_and_nothing_else() -> None:
    """The same debate under either scheme: every request the same but for its seed."""
    speakers: dict[str, FakeSpeaker] = {}
    for scheme in ("run", "question"):
        record, speaker = open_debate()
        record = record.model_copy(update={"seed_scheme": scheme})
        templates = builtin_protocol("roundtable").templates()
        Debate(record, speaker, templates, lambda r: None, lambda e: None).run()
        speakers[scheme] = speaker
    old, new = speakers["run"].calls, speakers["question"].calls
    assert len(old) == len(new) == 9  # C3 was cut off and continued
    assert not {c.seed for c in old} & {c.seed for c in new}
    for c in [*old, *new]:
        c.seed = 0
    assert calls_sha(speakers["run"]) == calls_sha(speakers["question"])


@pytest.fixture
def trio(tmp_path: Path) -> Path:
    fakebackend.LOADS.clear()
    path = tmp_path / "models.toml"
    path.write_text(TRIO)
    return path


def generations(record: RunRecord) -> list[int]:
    gens = [t.generation for t in [*record.turns, *record.samples]]
    gens += [x.generation for x in record.labelings]
    gens.append(record.summary.generation if record.summary else None)
    return [g.seed for g in gens if g is not None]


def test_a_batch_and_a_single_debate_of_one_question_are_one_transcript(
    trio: Path, tmp_path: Path
) -> None:
    question = "Is one line enough?"
    runs = tmp_path / "runs"
    args = ["--config", str(trio), "--runs-dir", str(runs), "--seed", "5", "-q"]
    assert run("debate", question, *args).exit_code == 0
    (single_dir,) = list(runs.iterdir())
    questions = tmp_path / "two.jsonl"
    lines = [{"id": "q0", "question": question}, {"id": "q1", "question": "Is two enough?"}]
    questions.write_text("\n".join(json.dumps(x) for x in lines))
    batch = run("batch", str(questions), *[a for a in args if a not in ("--seed", "5")],
                "--seeds", "5")  # fmt: skip
    assert batch.exit_code == 0, batch.output
    single, first = read_record(single_dir), read_record(runs / "two" / "q0-s5")
    second = read_record(runs / "two" / "q1-s5")
    assert generations(single) == generations(first)
    assert single.transcript_sha256 == first.transcript_sha256
    assert not set(generations(first)) & set(generations(second))
    stored = json.loads((single_dir / "record.json").read_text(encoding="utf-8"))
    assert stored["schema_version"] == 5 and stored["seed_scheme"] == "question"


def test_a_version_4_record_reads_with_the_seeds_it_ran_with(tmp_path: Path) -> None:
    """A real version 4 record: every seed its run drew (turns, labels, vote samples,
    summary) is the one its scheme derives, so resume and replay draw the same."""
    stored = json.loads(V4_RECORD.read_text(encoding="utf-8"))
    assert stored["schema_version"] == 4 and "seed_scheme" not in stored
    shutil.copyfile(V4_RECORD, tmp_path / "record.json")
    record = read_record(tmp_path)
    assert record.schema_version == 5 and record.seed_scheme == "run"
    assert record.transcript_sha256 == stored["transcript_sha256"]
    seeds, seat = Seeds.of(record), {p.name: p.index for p in record.panelists}
    assert seeds == Seeds(5, "")
    derived = [seeds.turn(t.round, seat[t.panelist]) for t in record.turns]
    derived += [seeds.sample(1, seat[p]) for p in seat]  # --vote 6: one a seat
    derived += [seeds.stage(f"labels{x.round}", 0) for x in record.labelings]
    derived.append(seeds.turn(record.rounds + 1, seat[record.summarizer]))
    assert [s.panelist for s in record.samples] == list(seat)
    assert generations(record) == derived


def v4_of_today(trio: Path, runs: Path) -> tuple[Path, dict[str, Any]]:
    """A version 4 record of a debate on today's templates, as version 4 wrote it: a new
    debate's header written back as version 4 (no seed_scheme), resumed from no turns
    (so under the "run" scheme), then written back as version 4 again."""
    assert run("debate", "Is one line enough?", "--config", str(trio), "--runs-dir",
               str(runs), "--vote", "6", "-q").exit_code == 0  # fmt: skip
    (run_dir,) = list(runs.iterdir())
    path = run_dir / "record.json"

    def as_version_4(raw: dict[str, Any]) -> dict[str, Any]:
        assert raw.pop("seed_scheme") in ("question", "run")
        return {**raw, "schema_version": 4}

    empty = as_version_4(json.loads(path.read_text(encoding="utf-8")))
    empty.update(turns=[], samples=[], labelings=[], positions=[], summary=None,
                 status="interrupted", transcript_sha256=None, finished_at=None)  # fmt: skip
    path.write_text(json.dumps(empty), encoding="utf-8")
    resumed = run("resume", str(run_dir), "--config", str(trio), "--runs-dir", str(runs), "-q")
    assert resumed.exit_code == 0, resumed.output
    stored = as_version_4(json.loads(path.read_text(encoding="utf-8")))
    path.write_text(json.dumps(stored), encoding="utf-8")
    return run_dir, stored


def test_a_version_4_record_replays_with_the_seeds_it_ran_with(trio: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_dir, stored = v4_of_today(trio, runs)
    record = read_record(run_dir)
    assert record.schema_version == 5 and record.seed_scheme == "run"
    assert record.transcript_sha256 == stored["transcript_sha256"]
    assert generations(record)[:3] == [Seeds(5, "").turn(1, i) for i in range(3)]
    replayed = run("replay", str(run_dir), "--config", str(trio), "--runs-dir", str(runs))
    assert replayed.exit_code == 0, replayed.output
    assert f"identical {stored['transcript_sha256']}" in replayed.output
    (replay_dir,) = [p for p in runs.iterdir() if "-replay-" in p.name]
    replay = read_record(replay_dir)
    assert replay.seed_scheme == "run" and generations(replay) == generations(record)


def test_a_version_4_record_resumes_with_the_seeds_it_ran_with(trio: Path, tmp_path: Path) -> None:
    """Interrupted after round 1 as version 4 wrote it, resumed, it ends with the
    transcript of the run in one go, written as version 5 that names its scheme."""
    runs = tmp_path / "runs"
    run_dir, stored = v4_of_today(trio, runs)
    whole = generations(read_record(run_dir))
    turns = [t for t in stored["turns"] if t["round"] == 1]
    cut = {**stored, "turns": turns, "samples": [], "summary": None, "status": "interrupted",
           "transcript_sha256": None, "finished_at": None}  # fmt: skip
    (run_dir / "record.json").write_text(json.dumps(cut), encoding="utf-8")
    resumed = run("resume", str(run_dir), "--config", str(trio), "--runs-dir", str(runs), "-q")
    assert resumed.exit_code == 0, resumed.output
    done = read_record(run_dir)
    assert done.status == "complete" and generations(done) == whole
    assert done.transcript_sha256 == stored["transcript_sha256"]
    written = json.loads((run_dir / "record.json").read_text(encoding="utf-8"))
    assert written["schema_version"] == 5 and written["seed_scheme"] == "run"


def test_under_the_question_scheme_that_record_would_resume_otherwise(
    trio: Path, tmp_path: Path
) -> None:
    """The check above can fail: what was kept keeps its seeds (round 1, its labels),
    and nothing generated after it has one of the run's."""
    runs = tmp_path / "runs"
    run_dir, stored = v4_of_today(trio, runs)
    record = read_record(run_dir)
    cut = record.model_copy(update={
        "turns": [t for t in record.turns if t.round == 1], "samples": [], "summary": None,
        "status": "interrupted", "transcript_sha256": None, "seed_scheme": "question",
    })  # fmt: skip
    write_record(run_dir, cut)
    resumed = run("resume", str(run_dir), "--config", str(trio), "--runs-dir", str(runs), "-q")
    assert resumed.exit_code == 0, resumed.output
    done = read_record(run_dir)
    kept = set(generations(cut))
    assert kept < set(generations(done))
    assert not (set(generations(done)) - kept) & set(generations(record))
    assert done.transcript_sha256 != stored["transcript_sha256"]
