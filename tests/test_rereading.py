"""`localtable score --answer-rule`: recorded free-text replies read again by another rule,
the header saying so, and every rule's parse rate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from localtable.cli import cli
from localtable.debate.protocol import Debate
from localtable.errors import ConfigError
from localtable.protocols import builtin_protocol
from localtable.record import RunRecord, write_record
from localtable.research.rereading import reread
from localtable.research.scoreview import render_score
from localtable.research.scoring import score
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, make_record
from tests.scored import scored_record

NAMES = ["A1", "B2", "C3"]


def du2023_debate(run_id: str, key: str, replies: dict[str, list[str]]) -> RunRecord:
    """A du2023 debate of three seats whose replies are scripted, recorded by the paper's
    rule (last_number), as a batch records it."""
    protocol = builtin_protocol("du2023")
    record = make_record(NAMES, anonymous=True, question="What is the result of 1+2?")
    record = record.model_copy(update={
        "run_id": run_id, "question_id": run_id.rsplit("-s", 1)[0], "question_kind": "number",
        "answer_key": key, "protocol": protocol.record(),
    })  # fmt: skip
    speaker = FakeSpeaker({k: list(v) for k, v in replies.items()})
    done = Debate(record, speaker, protocol.templates(), lambda r: None, lambda e: None).run()
    return done.model_copy(update={"status": "complete"})


# Debate 1: the boxed answers are right, and the paper's rule reads the number before
# each box (or none). Debate 2: a box with no number after a right number: the paper's
# rule reads it, the boxed rule does not.
DEBATES = [
    du2023_debate("q1-s1", "3", {
        "A1": ["1 + 2 = \\boxed{3}", "2 \\times 1 = 2, so \\boxed{3}"],
        "B2": ["It is 3", "Still 3"],
        "C3": ["\\(\\boxed{3}\\).", "5"],
    }),
    du2023_debate("q2-s1", "7", {
        "A1": ["7 is \\boxed{x}", "7"],
        "B2": ["7", "7"],
        "C3": ["7 too", "7"],
    }),
]  # fmt: skip


def test_the_two_rules_give_different_accuracies() -> None:
    paper = score(DEBATES)
    boxed = score(DEBATES, answer_rule="boxed_or_last_number")
    single = {r.label.split(" (")[0]: r for r in paper.rows}
    single_boxed = {r.label.split(" (")[0]: r for r in boxed.rows}
    a1 = "Single: A1"
    # A1's round 1: the paper reads "2" (wrong) and "7" (right); the box reads 3 (right)
    # and nothing (unparsed)
    assert single[a1].accuracy["first"].correct == 1 and single[a1].unparsed == 0
    assert single_boxed[a1].accuracy["first"].correct == 1 and single_boxed[a1].unparsed == 1
    c3 = "Single: C3"  # "\(\boxed{3}\)." reads nothing by the paper's rule, 3 by the box
    assert single[c3].accuracy["first"].correct == 1 and single[c3].unparsed == 1
    assert single_boxed[c3].accuracy["first"].correct == 2 and single_boxed[c3].unparsed == 0
    mean, mean_boxed = paper.rows[3], boxed.rows[3]
    assert mean.label.startswith("Single: mean") and mean_boxed.label == mean.label
    assert (mean.accuracy["first"].correct, mean_boxed.accuracy["first"].correct) == (4, 5)
    # SC@3: debate 1 is [2, 3, none] (a tie) by the paper's rule, [3, 3, 3] by the box;
    # debate 2 is [7, 7, 7], and [none, 7, 7]
    round1 = paper.rows[4]
    assert round1.label.startswith("SC@3") and round1.accuracy["wrong"].correct == 1
    assert boxed.rows[4].accuracy["wrong"].correct == 2
    assert paper.answers and boxed.answers
    assert [(r.rule, r.read, r.replies) for r in paper.answers.rates] == [
        ("last_number", 11, 12), ("boxed_or_last_number", 11, 12)
    ]  # fmt: skip
    assert paper.answers.rates == boxed.answers.rates  # over the same replies
    assert paper.answers.chosen is None and boxed.answers.chosen == "boxed_or_last_number"
    assert boxed.answers.recorded == ["last_number"] and boxed.answers.differs


def test_the_header_names_the_rule_and_the_parse_rates() -> None:
    paper = render_score(score(DEBATES), "text", builtin(), "Accuracy: t")
    assert "Answers read by the rule the runs recorded: last_number.\n" in paper
    rates = (
        "Parse rate (replies in which the rule reads a number): last_number 11 of 12 (91.7%) "
        "· boxed_or_last_number 11 of 12 (91.7%)\n"
    )
    assert rates in paper
    boxed = score(DEBATES, answer_rule="boxed_or_last_number")
    text = render_score(boxed, "text", builtin(), "Accuracy: t")
    assert (
        "Answers read again by the rule boxed_or_last_number (--answer-rule), not the one the "
        "runs recorded (last_number): every free-text reply re-read.\n" in text
    )
    assert rates in text
    same = render_score(score(DEBATES, answer_rule="last_number"), "text", builtin(), "A")
    assert "by the rule last_number (--answer-rule), the one the runs recorded." in same
    assert "Parse rate" in render_score(boxed, "md", builtin(), "Accuracy: t")
    csv_text = render_score(boxed, "csv", builtin(), "Accuracy: t")
    assert "parse_rate,boxed_or_last_number,,,,,11,12,0.9167,,,,12," in csv_text
    structured = render_score(score([scored_record([["42", "41", "42"]])]), "text", builtin(), "A")
    assert "Parse rate" not in structured and "Answers read" not in structured


def test_rereading_turns_unreadable_turns_readable_and_back() -> None:
    record = DEBATES[0]
    c3 = record.turn(1, "C3")
    assert c3 is not None and c3.status == "failed" and c3.parsed is None
    again = reread(record, "boxed_or_last_number")
    c3_again = again.turn(1, "C3")
    assert c3_again is not None and c3_again.status == "ok" and c3_again.parsed is not None
    assert c3_again.parsed.answer == "3" and c3_again.generation == c3.generation
    c3_round2 = again.turn(2, "C3")  # "5" after a (now readable) 3: a changed answer
    assert c3_round2 is not None and c3_round2.answer_changed is True
    a1 = reread(DEBATES[1], "boxed_or_last_number").turn(1, "A1")
    assert a1 is not None and a1.status == "failed" and "reads no number" in str(a1.error)
    # the paper's rule again gives back the record as the debate made it
    assert reread(again, "last_number").turns == record.turns
    assert again.transcript_sha256 == record.transcript_sha256  # the replies are untouched


def test_samples_are_read_again_too() -> None:
    record = DEBATES[0]
    sample = record.turns[0].model_copy(update={"round": 1})  # A1's boxed round-1 reply
    with_samples = record.model_copy(update={"samples": [sample]})
    again = reread(with_samples, "boxed_or_last_number")
    assert [s.parsed.answer if s.parsed else None for s in again.samples] == ["3"]
    assert [s.parsed.answer if s.parsed else None for s in with_samples.samples] == ["2"]


def test_structured_turns_and_unknown_rules_are_refused() -> None:
    structured = scored_record([["42", "41", "42"]])
    with pytest.raises(ConfigError, match="structured .* score it without --answer-rule"):
        score([structured], answer_rule="last_number")
    with pytest.raises(ConfigError, match="no such answer rule; choose one of last_number"):
        score(DEBATES, answer_rule="boxed")


def test_the_score_command_reads_again(tmp_path: Path) -> None:
    for record in DEBATES:
        write_record(tmp_path / record.run_id, record)
    runner = CliRunner()
    targets = [str(tmp_path / r.run_id) for r in DEBATES]
    recorded = runner.invoke(cli, ["score", *targets], catch_exceptions=False)
    boxed = runner.invoke(cli, ["score", *targets, "--answer-rule", "boxed_or_last_number"],
                          catch_exceptions=False)  # fmt: skip
    assert recorded.exit_code == 0 and boxed.exit_code == 0, boxed.output
    assert "the runs recorded: last_number." in recorded.output
    assert "read again by the rule boxed_or_last_number" in boxed.output
    assert recorded.output != boxed.output
    bad = runner.invoke(cli, ["score", *targets, "--answer-rule", "boxed"])
    assert bad.exit_code == 2
    assert bad.output.startswith("Error: --answer-rule boxed: no such answer rule")
