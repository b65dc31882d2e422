"""Scoring math: accuracy, standard error, baselines, flips, agreement, unparsed = wrong."""

from __future__ import annotations

import math

import pytest

from localtable.errors import LocaltableError
from localtable.research.render import render_score
from localtable.research.scoring import Accuracy, majority_right, score
from localtable.templates import builtin
from tests.scored import scored_record


def test_accuracy_and_standard_error() -> None:
    acc = Accuracy(correct=1, total=3)
    assert acc.rate == pytest.approx(1 / 3)
    assert acc.stderr == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 3))
    assert Accuracy(correct=0, total=0).stderr == 0.0


def test_majority_ties_and_unparsed_answers_are_wrong() -> None:
    tie = scored_record([["42", "41", None]])  # 42 vs 41, one failed: a tie
    assert not majority_right(tie, 1)
    lone = scored_record([["42", None, None]])  # one valid vote is the plurality
    assert majority_right(lone, 1)
    none = scored_record([[None, None, None]])
    assert not majority_right(none, 1)
    numeric = scored_record([["42.0", "42", "7"]])
    assert majority_right(numeric, 1)


def test_baselines_debate_flips_and_agreement() -> None:
    records = [
        # round 1: two right, majority right; round 2: one flips right -> wrong
        scored_record([["42", "42", "7"], ["42", "7", "7"]], run_id="a-s1"),
        # round 1: all wrong, split; round 2: two flip wrong -> right
        scored_record([["1", "2", "3"], ["42", "42", "3"]], run_id="b-s1"),
        # unparsed answers: never right, counted
        scored_record([[None, "42", "5"], ["42", None, "5"]], run_id="c-s1"),
    ]
    s = score(records)
    assert s.debates == 3 and s.panelists == ["A1", "B2", "C3"] and s.rounds == 2
    single = {r.label: r for r in s.rows}
    a1 = single["Single panelist: A1 (round 1)"]
    assert (a1.accuracy.correct, a1.accuracy.total, a1.unparsed, a1.calls) == (1, 3, 1, 1)
    b2 = single["Single panelist: B2 (round 1)"]
    assert (b2.accuracy.correct, b2.unparsed) == (2, 0)
    vote = single["Majority of independent answers (round 1)"]
    # a: 42 wins; b: three-way tie (wrong); c: 42 vs 5 tie (wrong)
    assert (vote.accuracy.correct, vote.calls) == (1, 3)
    debate = single["Debate: majority after round 2"]
    # a: 7 wins (wrong); b: 42 wins; c: 42 vs 5 tie (wrong)
    assert (debate.accuracy.correct, debate.calls, debate.unparsed) == (1, 6, 1)
    r1, r2 = s.per_round
    assert r1.individual.correct == 3 and r1.individual.total == 9 and r1.unparsed == 1
    assert r2.individual.correct == 4 and r2.unparsed == 1
    # round 2 flips: a/B2 right->wrong; b/A1, b/B2 wrong->right; c/A1 wrong->right,
    # c/B2 right -> unparsed counts as right->wrong
    assert (r2.right_to_wrong, r2.wrong_to_right) == (2, 3)
    assert r1.right_to_wrong == 0 and r1.wrong_to_right == 0
    assert r1.all_agree.correct == 0 and r2.all_agree.correct == 0
    # pairs with the same valid answer: round 1 a:(A1,B2) -> 1; round 2 a:(B2,C3), b:(A1,B2) -> 2
    assert (r1.pairs_agree.correct, r1.pairs_agree.total) == (1, 9)
    assert r2.pairs_agree.correct == 2


def test_open_and_unfinished_runs_are_not_scored() -> None:
    records = [
        scored_record([["42", "42", "42"]], run_id="a-s1"),
        scored_record([["yes", "no", "yes"]], kind="open", key=None, run_id="o-s1"),
        scored_record([["42", "42", "42"]], run_id="b-s1", status="interrupted"),
    ]
    s = score(records)
    assert s.debates == 1 and s.not_scored == 1 and s.unfinished == 1
    text = render_score(s, "text", builtin(), "Accuracy: test")
    assert "1 finished runs have no answer key" in text and "1 runs are unfinished" in text
    assert "ties and debates with no valid answer count as wrong" in text


def test_nothing_to_score_and_mixed_panels_are_errors() -> None:
    with pytest.raises(LocaltableError, match="nothing to score"):
        score([scored_record([["a", "b", "c"]], kind="open", key=None)])
    with pytest.raises(LocaltableError, match="another panel or round count"):
        score([scored_record([["1", "2", "3"]]), scored_record([["1", "2", "3"], ["1", "2", "3"]])])


def test_score_renders_in_every_format() -> None:
    s = score([scored_record([["42", "41", "42"], ["42", "42", "42"]])])
    text = render_score(s, "text", builtin(), "Accuracy: b")
    assert "Majority of independent answers (round 1)" in text
    assert "Debate: majority after round 2" in text and "100.0%" in text
    md = render_score(s, "md", builtin(), "Accuracy: b")
    assert "| Debate: majority after round 2 | 6 | 100.0% |" in md
    csv_text = render_score(s, "csv", builtin(), "Accuracy: b")
    assert csv_text.splitlines()[0].startswith("table,label,round,calls,correct,total")
    assert "round,round 2,2,6,1,1,1.0000,0.0000,0,0,1,1,3,3" in csv_text
