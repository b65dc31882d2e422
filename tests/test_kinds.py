"""Choice and number questions on the fake speaker: grammar, exact comparison, tally."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localtable.debate.answers import (
    canonical_number,
    is_correct,
    parse_number,
    plurality,
    position_of,
    same_position,
    tally_groups,
)
from localtable.debate.parsing import ParseFailure, parse_summary, parse_turn
from localtable.debate.protocol import Debate
from localtable.record import RunRecord, read_record, write_record
from localtable.templates import builtin
from tests.fakes import FakeSpeaker, Reply, make_record

R1 = "Reasoning: because.\nAnswer: {a}"
# choice and number questions compare answers exactly: no labels, no Position line
R2 = "Reasoning: I thought again.\nInfluenced by: {i}\nDecision: {d}\nAnswer: {a}"
SUMMARY = "Summary: short.\nCounterpoint: none.\nAnswer: They answered."


def scored(kind: str, options: list[str] | None = None, rounds: int = 2) -> RunRecord:
    record = make_record(["A1", "B2", "C3"], rounds=rounds, question="Which one?")
    record.question_kind = kind  # type: ignore[assignment]
    record.options = options or []
    return record


def run(speaker: FakeSpeaker, record: RunRecord) -> RunRecord:
    return Debate(record, speaker, builtin(), lambda r: None, lambda e: None).run()


def test_choice_grammar_allows_exactly_the_options_and_prompt_lists_them() -> None:
    options = ["Paris", "Lyon", 'Say "hi"']
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="Paris"), R2.format(d="maintained", a="Paris", i="nobody")],
            "B2": [R1.format(a="Lyon"), R2.format(d="changed", a="Paris", i="A1")],
            "C3": [R1.format(a='Say "hi"'), R2.format(d="maintained", a='Say "hi"', i="nobody")],
        }
    )
    speaker.replies["A1"].append(SUMMARY)
    record = run(speaker, scored("choice", options))
    assert len(speaker.calls) == 7  # six turns and the summary: no labels
    for call in speaker.calls[:-1]:  # every turn, not the summary
        assert 'answer ::= "Paris" | "Lyon" | "Say \\"hi\\""\n' in call.grammar
        assert "Position" not in call.grammar
    first_prompt = speaker.calls[0].messages[-1].content
    assert 'Options: Paris | Lyon | Say "hi"' in first_prompt
    assert "gives exactly one of the options" in first_prompt
    b2 = record.turn(2, "B2")
    assert b2 and b2.answer_changed is True
    # the tally is computed in code from the final answers
    assert record.summary and record.summary.status == "ok"
    assert [(g.position, g.members) for g in record.summary.groups] == [
        ("Paris", ["A1", "B2"]),
        ('Say "hi"', ["C3"]),
    ]
    assert record.summary.consensus.line == "2 of 3 agreed"
    assert record.summary.headline == "They answered."  # the summarizer's text is kept


def test_number_grammar_and_numeric_equality() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="12"), R2.format(d="maintained", a="12.0", i="nobody")],
            "B2": [R1.format(a="-3"), R2.format(d="changed", a="12", i="A1")],
            "C3": [R1.format(a="12.50"), R2.format(d="maintained", a="12.5", i="nobody")],
        }
    )
    speaker.replies["A1"].append(SUMMARY)
    record = run(speaker, scored("number"))
    assert 'answer ::= "-"? [0-9]{1,15} ("." [0-9]{1,6})?' in speaker.calls[0].grammar
    assert "gives the number only" in speaker.calls[0].messages[-1].content
    assert "the number only" in speaker.calls[3].messages[-1].content  # round 2 prompt
    a1, b2, c3 = (record.turn(2, n) for n in ("A1", "B2", "C3"))
    assert a1 and a1.answer_changed is False  # 12 -> 12.0 is the same number
    assert b2 and b2.answer_changed is True
    assert c3 and c3.answer_changed is False  # 12.50 -> 12.5
    assert record.summary
    assert [(g.position, g.members) for g in record.summary.groups] == [
        ("12", ["A1", "B2"]),
        ("12.5", ["C3"]),
    ]
    assert record.summary.consensus.kind == "majority"


def test_open_grammar_is_free_text_and_its_groups_come_from_labels_not_exact_text() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="Yes, surely so."),
                "Position A: Yes\nPosition B: No\nA1: A\nB2: B\nC3: A",
                SUMMARY.replace("They answered.", "Yes, mostly."),  # "Yes": the largest position's
            ],
            "B2": [R1.format(a="No, never again.")],
            "C3": [R1.format(a="Maybe so.")],
        }
    )
    record = run(speaker, scored("open", rounds=1))
    assert "answer ::= answer-yes | answer-no | answer-other\n" in speaker.calls[0].grammar
    assert "Options:" not in speaker.calls[0].messages[-1].content
    # three different texts, two labelled positions: the labels decide, counted in code
    assert record.summary and record.summary.status == "ok"
    assert [(g.position, g.members) for g in record.summary.groups] == [
        ("Yes", ["A1", "C3"]),
        ("No", ["B2"]),
    ]
    assert record.summary.consensus.line == "2 of 3 agreed"


def test_summary_failure_still_tallies_choice_answers() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="Lyon"), "Summary: ?!", "Summary: ?!", "Summary: ?!"],
            "B2": [R1.format(a="Lyon")],
            "C3": ["Reasoning: grammar bypassed.\nAnswer: Nice"],
        }
    )
    record = run(speaker, scored("choice", ["Paris", "Lyon"], rounds=1))
    c3 = record.turn(1, "C3")
    assert c3 and c3.status == "failed" and c3.error
    assert "not one of the options" in c3.error
    summary = record.summary
    assert summary and summary.status == "failed" and len(summary.rejected) == 3
    assert [g.members for g in summary.groups] == [["A1", "B2"]]
    assert summary.consensus.line == "2 of 3 agreed"


def test_parse_turn_checks_kind() -> None:
    with pytest.raises(ParseFailure, match="not a number"):
        parse_turn("Reasoning: x\nAnswer: twelve", later_round=False, peers={}, kind="number")
    parsed = parse_turn("Reasoning: x\nAnswer: 7", later_round=False, peers={}, kind="number")
    assert parsed.answer == "7"
    parsed = parse_turn(
        "Reasoning: x\nAnswer: B", later_round=False, peers={}, kind="choice", options=["A", "B"]
    )
    assert parsed.answer == "B"
    with pytest.raises(ParseFailure, match="not one of the options"):
        parse_turn("Reasoning: x\nAnswer: C", later_round=False, peers={}, kind="choice",
                   options=["A", "B"])  # fmt: skip


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("3", "3.0", True), ("-0", "0", True), ("12.50", "12.5", True), ("3", "4", False)],
)
def test_number_positions(a: str, b: str, same: bool) -> None:
    assert same_position("number", a, b) is same


def test_positions_and_tally_helpers() -> None:
    assert parse_number("1e3") is None and parse_number("--1") is None
    assert canonical_number(parse_number("100") or 0) == "100"  # no exponent
    assert position_of("choice", "Paris") != position_of("choice", "paris")  # exact
    assert is_correct("number", "42.0", "42") and not is_correct("number", None, "42")
    assert not is_correct("choice", "paris", "Paris")
    assert plurality("number", ["1", "2"]) is None  # a tie has no majority
    assert plurality("number", ["1", "1.0", "2"]) == "1"
    assert plurality("number", []) is None
    groups = tally_groups("number", [("A", "2"), ("B", "1"), ("C", "1")])
    assert [(g.position, g.members) for g in groups] == [("1", ["B", "C"]), ("2", ["A"])]


def test_records_without_question_fields_still_read(tmp_path: Path) -> None:
    write_record(tmp_path, make_record(["A1", "B2"]))
    raw = json.loads((tmp_path / "record.json").read_text())
    for key in ("question_id", "question_kind", "options", "answer_key"):
        del raw[key]
    (tmp_path / "record.json").write_text(json.dumps(raw))
    record = read_record(tmp_path)
    assert record.question_kind == "open" and record.answer_key is None and record.options == []


def test_a_number_question_summary_may_headline_the_number_alone() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [
                R1.format(a="3.9"),
                "Summary: 3.9\nCounterpoint: 3\nAnswer: 3.9",
            ],
            "B2": [R1.format(a="3.9")],
            "C3": [R1.format(a="4")],
        }
    )
    record = run(speaker, scored("number", rounds=1))
    assert record.summary and record.summary.status == "ok"
    assert record.summary.headline == "3.9"
    assert record.summary.consensus.line == "2 of 3 agreed"
    # ... and it may repeat the question's words (an open headline may not)
    parsed = parse_summary(
        "Summary: s\nCounterpoint: c\nAnswer: 3.9", kind="number", question="3.9 or 4?"
    )
    assert parsed.headline == "3.9"
    with pytest.raises(ParseFailure, match="headline has no letter or digit"):
        parse_summary("Summary: s\nCounterpoint: c\nAnswer: ...")


# -- multi-line working for choice and number questions ------------------------------

WORKING = "Reasoning: First 15*21 = 315.\n3*27 = 81.\n\nSo 12+315+0-81 = 246.\nAnswer: {a}"
WORKING2 = (
    "Reasoning: A1 multiplied first:\n315 and 81.\nInfluenced by: {i}\nDecision: {d}\nAnswer: {a}"
)


def test_a_number_turn_may_work_over_several_lines_and_its_answer_is_the_last() -> None:
    speaker = FakeSpeaker(
        {
            "A1": [WORKING.format(a="246"), WORKING2.format(d="maintained", a="246", i="nobody")],
            "B2": [R1.format(a="249"), WORKING2.format(d="changed", a="246", i="A1")],
            "C3": [WORKING.format(a="600"), R2.format(d="maintained", a="600", i="nobody")],
        }
    )
    speaker.replies["A1"].append(SUMMARY)
    record = run(speaker, scored("number"))
    for call in speaker.calls[:-1]:  # every turn's reasoning may hold a line break
        assert "reasoning ::= [^\\x00-\\x20] [^\\x00-\\x09\\x0b-\\x1f]{0," in call.grammar
    assert "step by step, on as many lines as it needs" in speaker.calls[0].messages[-1].content
    assert "step by step, checking the others' answers" in speaker.calls[3].messages[-1].content
    a1 = record.turn(1, "A1")
    assert a1 and a1.parsed and a1.parsed.answer == "246"
    assert a1.parsed.reasoning == "First 15*21 = 315.\n3*27 = 81.\n\nSo 12+315+0-81 = 246."
    b2 = record.turn(2, "B2")
    assert b2 and b2.parsed and b2.parsed.reasoning == "A1 multiplied first:\n315 and 81."
    assert b2.parsed.influenced_by == ["A1"] and b2.parsed.stance == "change"
    assert record.summary and record.summary.consensus.line == "2 of 3 agreed"


def test_an_open_turn_keeps_its_reasoning_on_one_line() -> None:
    grammar = builtin().render(
        "turn.gbnf.j2", fields=["reasoning", "answer"], peers=[], letters=[],
        allow_new=False, own_position="", reasoning_max=300, answer_max=200, multiline=False,
        kind="open", options=[],
    )  # fmt: skip
    assert "reasoning ::= [^\\x00-\\x20] [^\\x00-\\x1f]{0,299}" in grammar
    with pytest.raises(ParseFailure, match="'Answer:' line"):
        parse_turn("Reasoning: one.\ntwo.\nAnswer: Yes, it helps.", later_round=False, peers={})
    with pytest.raises(ParseFailure, match="lines after the reasoning"):
        parse_turn("Reasoning: 1+1 is 2", later_round=False, peers={}, kind="number")


@pytest.mark.parametrize("kind", ["open", "number", "choice"])
def test_the_turn_grammar_of_every_kind_is_valid_gbnf(kind: str) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    later = ["reasoning", "influenced_by", "decision", "answer"]
    labelled = ["reasoning", "influenced_by", "decision", "position", "answer"]
    for fields, own in ((["reasoning", "answer"], ""), (later, ""), (labelled, "B")):
        if fields == labelled and kind != "open":
            continue  # only open questions have labelled positions
        grammar = builtin().render(
            "turn.gbnf.j2", fields=fields, peers=["B2", "C3"], letters=["A", "B"],
            allow_new=True, own_position=own, reasoning_max=600, answer_max=200,
            multiline=kind != "open", kind=kind, options=["Paris", "Lyon"],
        )  # fmt: skip
        llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)


def test_a_cut_number_turn_writes_every_field_after_its_working_again() -> None:
    # seen at 4c5c313: Qwen 0.5B wrote field-like lines inside its working until
    # max_tokens cut it, and those lines were kept as if they were its fields
    wandered = (
        "Reasoning: First the products: 9*3 = 27, 9*14 = 126.\n153 - 378 = -225\nAnswer: -225"
        "\n\nInfluenced by: A1 (it"
        " changed).\nDecision: Maintain or changed the view.\nAnswer: -225\n\nReasoning: To, "
    )
    rest = "Influenced by: A1\nDecision: maintained\nAnswer: -225"
    speaker = FakeSpeaker(
        {
            "A1": [R1.format(a="-225"), R2.format(d="maintained", a="-225", i="nobody")],
            "B2": [R1.format(a="-225"), Reply(wandered, finish_reason="length"), rest],
            "C3": [R1.format(a="600"), R2.format(d="maintained", a="600", i="nobody")],
        }
    )
    speaker.replies["A1"].append(SUMMARY)
    record = run(speaker, scored("number"))
    b2 = record.turn(2, "B2")
    assert b2 and b2.status == "ok" and b2.parsed and b2.parsed.answer == "-225"
    assert b2.continuation and b2.continuation.prefill == wandered.split("Influenced by: A1 (")[0]
    assert b2.parsed.stance == "maintain" and b2.parsed.influenced_by == ["A1"]
    # what it wrote inside its working is kept in the record, not shown twice
    assert b2.parsed.reasoning == "First the products: 9*3 = 27, 9*14 = 126.\n153 - 378 = -225"
