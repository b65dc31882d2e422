"""Scoring: baselines, SC@k from samples, tie rules, paired tests, flips, tokens, layouts."""

from __future__ import annotations

import json
import math

import pytest

from localtable.errors import LocaltableError
from localtable.record import SummaryRecord
from localtable.research.scoreview import render_score
from localtable.research.scoring import Accuracy, BatchScore, majority_right, score
from localtable.templates import builtin
from tests.conftest import REPO
from tests.scored import generation, scored_record


def test_accuracy_and_standard_error() -> None:
    acc = Accuracy(correct=1, total=3)
    assert acc.rate == pytest.approx(1 / 3)
    assert acc.stderr == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 3))
    assert Accuracy(correct=0, total=0).stderr == 0.0
    assert Accuracy(correct=1, total=3, item_stderr=0.5).stderr == 0.5


def test_majority_under_each_tie_rule() -> None:
    tie = scored_record([["41", "42", None]])  # 41 (seat 1) vs 42 (seat 2), one failed
    assert not majority_right(tie, 1, "first") and not majority_right(tie, 1, "wrong")
    tie_first_right = scored_record([["42", "41", None]])
    assert majority_right(tie_first_right, 1, "first")
    assert not majority_right(tie_first_right, 1, "wrong")
    late_first_vote = scored_record([[None, "41", "42"]])  # the first *vote* wins, not seat 1
    assert not majority_right(late_first_vote, 1, "first")
    numeric = scored_record([["42.0", "7", "42"]])  # 42.0 and 42 are one position
    assert all(majority_right(numeric, 1, rule) for rule in ("first", "random", "wrong"))
    lone = scored_record([["42", None, None]])  # one valid vote is the plurality
    assert all(majority_right(lone, 1, rule) for rule in ("first", "random", "wrong"))
    none = scored_record([[None, None, None]])  # no valid answer: wrong under every rule
    assert not any(majority_right(none, 1, rule) for rule in ("first", "random", "wrong"))


def test_the_random_tie_rule_is_seeded_and_draws_among_the_tied() -> None:
    records = [
        scored_record([["41", "42", "7"]], run_id=f"q{i}-s1") for i in range(40)
    ]  # three-way ties: right only when the draw picks 42
    outcomes = {}
    for seed in (0, 1, 2):
        first = score(records, tie_seed=seed)
        again = score(records, tie_seed=seed)
        assert first == again and first.tie_seed == seed  # fixed: the same every time
        vote = first.rows[4]
        assert vote.label == "SC@3: majority of the round-1 answers" and vote.ties == 40
        outcomes[seed] = vote.accuracy["random"].correct
        assert vote.accuracy["first"].correct == 0 and vote.accuracy["wrong"].correct == 0
    # each of 40 draws is 42 one time in three: 0 or 40 right would mean no draw at all
    assert all(5 <= n <= 25 for n in outcomes.values()), outcomes
    assert len(set(outcomes.values())) > 1, outcomes  # the seed changes the draws


def test_baselines_debate_flips_and_agreement() -> None:
    records = [
        # round 1: two right, majority right; round 2: one flips right -> wrong
        scored_record([["42", "42", "7"], ["42", "7", "7"]], run_id="a-s1"),
        # round 1: all wrong, split; round 2: two flip wrong -> right
        scored_record([["1", "2", "3"], ["42", "42", "3"]], run_id="b-s1"),
        # unparsed answers: never right, counted; 42 vs 5 is a tie in both rounds
        scored_record([[None, "42", "5"], ["42", None, "5"]], run_id="c-s1"),
    ]
    s = score(records)
    assert s.debates == 3 and s.panelists == ["A1", "B2", "C3"] and s.rounds == 2
    assert s.sc_k == 6
    rows = {r.label: r for r in s.rows}
    a1 = rows["Single: A1 (seat 1, round 1)"]
    assert (a1.accuracy["first"].correct, a1.accuracy["first"].total) == (1, 3)
    assert (a1.unparsed, a1.calls, a1.ties) == (1, 1, None)
    assert a1.accuracy["first"] == a1.accuracy["random"] == a1.accuracy["wrong"]
    b2 = rows["Single: B2 (seat 2, round 1)"]
    assert (b2.accuracy["wrong"].correct, b2.unparsed) == (2, 0)
    mean = rows["Single: mean of the 3 seats (round 1)"]
    # shares right per debate: 2/3, 0, 1/3 -> mean 1/3, SE = pstdev / sqrt(3)
    assert mean.accuracy["wrong"].rate == pytest.approx(1 / 3)
    assert mean.accuracy["wrong"].stderr == pytest.approx(math.sqrt(2 / 27) / math.sqrt(3))
    vote = rows["SC@3: majority of the round-1 answers"]
    # a: 42 wins; b: three-way tie, 1 first; c: 42 vs 5 tie, 42 (seat 2's vote) first
    assert (vote.accuracy["wrong"].correct, vote.accuracy["first"].correct) == (1, 2)
    assert (vote.calls, vote.ties) == (3, 2)
    sc6 = rows["SC@6: majority of 6 independent answers"]
    assert sc6.not_run == "not run (no samples in these records: run with --vote 6)"
    assert sc6.accuracy == {} and sc6.calls == 6
    debate = rows["Debate: majority after round 2"]
    # a: 7 wins (wrong); b: 42 wins; c: 42 (seat 1) vs 5 tie
    assert (debate.accuracy["wrong"].correct, debate.accuracy["first"].correct) == (1, 2)
    assert (debate.calls, debate.unparsed, debate.ties) == (6, 1, 1)
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
    flips = {f.seat: f for f in s.flips}
    assert (flips["A1"].right_to_wrong, flips["A1"].wrong_to_right) == (0, 2)
    assert (flips["B2"].right_to_wrong, flips["B2"].wrong_to_right) == (2, 1)
    assert (flips["all seats"].right_to_wrong, flips["all seats"].wrong_to_right) == (2, 3)
    assert flips["A1"].p_value == 0.5  # 2 of 2 one way: 2 * (1/2)**2
    # the debate against single seat 1 and SC@3, under each rule: 6 tests
    baselines = ("single, seat 1 (A1)", "SC@3")
    rules = ("first", "random", "wrong")
    assert [(t.rule, t.baseline) for t in s.tests] == [(r, b) for r in rules for b in baselines]
    wrong_vs_single = s.tests[4]
    # debate right: b; single A1 right: a -> one discordant pair each way
    assert (wrong_vs_single.debate_only, wrong_vs_single.baseline_only) == (1, 1)
    assert (wrong_vs_single.both_right, wrong_vs_single.both_wrong) == (0, 1)
    assert wrong_vs_single.p_value == 1.0 and wrong_vs_single.difference == 0.0


def test_the_paired_test_of_a_published_table() -> None:
    """161 one-seat debates laid out as Cavo et al.'s table [[59, 6], [16, 80]]: the
    debate (round 2) against the seat's own round 1 gives the book's numbers."""
    layout = [(["42"], ["42"])] * 59 + [(["1"], ["42"])] * 6 + [(["42"], ["1"])] * 16
    layout += [(["1"], ["1"])] * 80
    records = [scored_record([r1, r2], run_id=f"q{i}-s1") for i, (r1, r2) in enumerate(layout)]
    s = score(records)
    test = s.tests[0]
    assert (test.both_right, test.debate_only, test.baseline_only, test.both_wrong) == (
        59, 6, 16, 80,
    )  # fmt: skip
    # Fagerland, Lydersen and Laake (2017), chapter 8 (see tests/test_stats.py)
    assert test.p_value == pytest.approx(0.052479, abs=5e-7)
    assert test.ci_low == pytest.approx(-0.1186, abs=5e-5)
    assert test.ci_high == pytest.approx(-0.0046, abs=5e-5)
    assert test.difference == pytest.approx(-10 / 161)
    assert s.flips[0].right_to_wrong == 16 and s.flips[0].wrong_to_right == 6
    assert s.flips[0].p_value == pytest.approx(0.052479, abs=5e-7)


def test_sc_k_reads_the_samples_round_by_round() -> None:
    records = [
        # pool (seat 1, 2, 3, then samples): 41 42 7 42 41 42 -> 42 three times
        scored_record(
            [["41", "42", "7"], ["7", "7", "7"]], run_id="a-s1", samples=[["42", "41", "42"]]
        ),  # fmt: skip
        # pool: 41 42 7 42 41 5 -> 41 and 42 tied; 41 (seat 1's round 1) comes first
        scored_record(
            [["41", "42", "7"], ["42", "42", "7"]], run_id="b-s1", samples=[["42", "41", "5"]]
        ),  # fmt: skip
        # a second sample per seat is more than SC@6 needs: left out (with it, 1 would win)
        scored_record(
            [["42", "42", "1"], ["1", "1", "1"]],
            run_id="c-s1",
            samples=[["1", "1", "42"], ["1", "1", "1"]],
        ),  # fmt: skip
    ]
    s = score(records)
    sc6 = next(r for r in s.rows if r.label.startswith("SC@6"))
    assert sc6.not_run is None and sc6.calls == 6 and sc6.answers == 18
    # a right; b tie (first: 41 wrong; wrong: wrong); c: 42 42 1 1 1 42 -> 42 vs 1 tie, 42 first
    assert sc6.accuracy["first"].correct == 2 and sc6.accuracy["wrong"].correct == 1
    assert sc6.ties == 2
    assert [t.baseline for t in s.tests[:3]] == ["single, seat 1 (A1)", "SC@3", "SC@6"]
    sc6_first = s.tests[2]  # debate (a wrong, b right, c wrong) vs SC@6 (a, c right)
    assert (sc6_first.debate_only, sc6_first.baseline_only, sc6_first.both_right) == (1, 2, 0)


def test_sc_k_is_not_run_when_a_record_lacks_samples() -> None:
    with_samples = scored_record([["42", "42", "42"]] * 2, run_id="a-s1", samples=[["42"] * 3])
    without = scored_record([["42", "42", "42"]] * 2, run_id="b-s1")
    s = score([with_samples, without])
    sc6 = next(r for r in s.rows if r.label.startswith("SC@6"))
    assert sc6.not_run == "not run (only 1 of 2 records hold 2 answers a seat: run with --vote 6)"
    assert [t.baseline for t in s.tests[:2]] == ["single, seat 1 (A1)", "SC@3"]
    one_seat_short = scored_record([["42", "42", "42"]] * 2, samples=[["42", "42"]])
    assert next(r for r in score([one_seat_short]).rows if r.label.startswith("SC@6")).not_run


def test_one_round_has_no_debate_to_test() -> None:
    s = score([scored_record([["42", "41", "42"]])])
    assert [r.label for r in s.rows][-1] == "SC@3: majority of the round-1 answers"
    assert s.tests == [] and s.flips == []
    text = render_score(s, "text", builtin(), "Accuracy: one round")
    assert "One round: no debate" in text and "McNemar" not in text


def test_generated_tokens_per_question() -> None:
    records = [
        scored_record(
            [["42", "42", "7"], ["42", "7", "7"]],
            run_id="a-s1",
            tokens=10,
            samples=[["42", "1", "1"]],
        ),  # fmt: skip
        scored_record(
            [["1", "2", "3"], ["42", "42", "3"]],
            run_id="b-s1",
            tokens=20,
            samples=[["42", "1", "1"], ["9", "9", "9"]],
        ),  # fmt: skip
    ]
    records[0].turns[0] = records[0].turns[0].model_copy(update={"continuation": generation(5)})
    records[1].summary = SummaryRecord(
        status="ok", summarizer="A1", generation=generation(30),
        rejected_generations=[generation(12)],
        consensus={"kind": "none", "agreeing": 0, "total": 3, "line": "No consensus"},
    )  # fmt: skip
    s = score(records)
    tokens = {r.label.split(":")[0]: r.tokens for r in s.rows}
    assert s.rows[0].tokens == (10 + 5 + 20) / 2  # A1: a continuation counts
    assert s.rows[2].tokens == (10 + 20) / 2
    assert s.rows[3].tokens == ((10 + 5 + 10 + 10) / 3 + 20) / 2  # mean of the seats
    assert tokens["SC@3"] == (35 + 60) / 2
    assert tokens["SC@6"] == (65 + 120) / 2  # the samples SC@6 used, not the extra ones
    assert tokens["Debate"] == (65 + 120) / 2
    assert s.other_tokens == (0 + 42) / 2  # the summary and its rejected attempt


def test_open_unfinished_and_repeated_questions() -> None:
    records = [
        scored_record([["42", "42", "42"]], run_id="a-s1"),
        scored_record([["42", "42", "42"]], run_id="a-s2"),
        scored_record([["yes", "no", "yes"]], kind="open", key=None, run_id="o-s1"),
        scored_record([["42", "42", "42"]], run_id="b-s1", status="interrupted"),
    ]
    s = score(records)
    assert s.debates == 2 and s.not_scored == 1 and s.unfinished == 1
    assert s.repeated_questions == 1
    text = render_score(s, "text", builtin(), "Accuracy: test")
    assert "1 finished runs have no answer key" in text and "1 runs are unfinished" in text
    assert "1 questions were scored in more than one debate" in text


def test_nothing_to_score_and_mixed_panels_are_errors() -> None:
    with pytest.raises(LocaltableError, match="nothing to score"):
        score([scored_record([["a", "b", "c"]], kind="open", key=None)])
    with pytest.raises(LocaltableError, match="another panel or round count"):
        score([scored_record([["1", "2", "3"]]), scored_record([["1", "2", "3"], ["1", "2", "3"]])])


def test_score_renders_in_every_format() -> None:
    s = score([scored_record([["42", "41", "42"], ["42", "42", "42"]])])
    text = render_score(s, "text", builtin(), "Accuracy: b")
    assert "SC@3: majority of the round-1 answers" in text
    assert "TIE: FIRST SEAT" in text and "TIE: RANDOM" in text and "TIE: WRONG" in text
    assert "Debate: majority after round 2" in text and "100.0% ± 0.0" in text
    assert "SC@6: not run (no samples in these records: run with --vote 6)." in text
    assert "P (MCNEMAR)" in text and "Flips from round 1 to round 2" in text
    md = render_score(s, "md", builtin(), "Accuracy: b")
    assert (
        "| Debate: majority after round 2 | 6 | 0 | 100.0% ± 0.0 | 100.0% ± 0.0 | 100.0% ± 0.0 "
        "| 0 of 1 | 0 of 3 |" in md
    )
    csv_text = render_score(s, "csv", builtin(), "Accuracy: b")
    lines = csv_text.splitlines()
    assert lines[0].startswith("table,label,tie_rule,round,calls,tokens,correct,total")
    assert "accuracy,Debate: majority after round 2,wrong,,6,0.0,1,1,1.0000,0.0000,0,0,3" in (
        csv_text
    )
    assert any(line.startswith("test,") and ",wrong,2," in line for line in lines)
    assert "round,round 2,,2,6,,3,3,1.0000,,,0,,0,1,1,3,3" in csv_text
    parsed = json.loads(render_score(s, "json", builtin(), "Accuracy: b"))
    assert parsed["rows"][-1]["accuracy"]["first"]["rate"] == 1.0
    assert parsed["tests"][0]["p_value"] == 1.0 and parsed["tie_seed"] == 0
    assert BatchScore.model_validate(parsed) == s  # typed and complete


# docs/research.md shows what `score` prints for these six debates (answers per round,
# tokens a turn).
DOC_DEBATES: list[tuple[list[list[str | None]], int]] = [
    ([["42", "42", "7"], ["42", "42", "42"]], 110),
    ([["41", "42", "7"], ["42", "42", "7"]], 95),
    ([["42", "41", "40"], ["41", "41", "40"]], 130),
    ([["1", "2", "42"], ["42", "2", "42"]], 120),
    ([["42", None, "7"], ["7", "7", "7"]], 150),
    ([["5", "5", "5"], ["5", "5", "5"]], 80),
]


def doc_example() -> str:
    records = [
        scored_record(grid, run_id=f"q{i}-s1", tokens=tokens)
        for i, (grid, tokens) in enumerate(DOC_DEBATES, start=1)
    ]
    return render_score(score(records), "text", builtin(), "Accuracy: example")


def test_the_docs_show_what_score_prints() -> None:
    docs = (REPO / "docs" / "research.md").read_text(encoding="utf-8")
    shown = docs.split("<!-- score-example -->\n```\n", 1)[1].split("```\n", 1)[0]
    assert shown == doc_example()
