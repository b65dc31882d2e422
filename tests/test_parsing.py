"""Checks on model output that the grammar cannot make."""

from __future__ import annotations

import pytest

from localtable.debate.parsing import (
    ParseFailure,
    completed_part,
    parse_labels,
    parse_summary,
    parse_turn,
    repeats_instructions,
    restates_question,
    turn_fields,
    word_overlap,
)

LATER = ["reasoning", "influenced_by", "decision", "answer"]
LABELLED = ["reasoning", "influenced_by", "decision", "position", "answer"]


def later_turn(position: str | None = None, answer: str = "Yes, it helps.") -> str:
    lines = ["Reasoning: B2 was right.", "Influenced by: B2", "Decision: changed"]
    if position is not None:
        lines.append(f"Position: {position}")
    return "\n".join([*lines, f"Answer: {answer}"])


def test_repeating_the_prompt_needs_three_words_copied_in_order() -> None:
    instructions = 'Summarize this debate. "Headline:" the roundtable\'s answer in one sentence.'
    assert repeats_instructions("The roundtable's answer in one sentence.", instructions)
    assert repeats_instructions("  summarize THIS debate ", instructions)
    assert not repeats_instructions("One sentence.", instructions)  # too short to tell
    assert not repeats_instructions("The answer in one sentence.", instructions)  # not in order
    assert not repeats_instructions("Open weights help science.", instructions)


@pytest.mark.parametrize("answer", ["4", "2+1", "A", "-3.5", "42%", "Да", "是"])
def test_a_short_answer_is_an_answer(answer: str) -> None:
    parsed = parse_turn(f"Reasoning: 2+2 is 4.\nAnswer: {answer}", later_round=False, peers={})
    assert parsed.answer == answer


@pytest.mark.parametrize("answer", ["...", "-", "?!", "_"])
def test_an_answer_without_a_letter_or_digit_is_not(answer: str) -> None:
    with pytest.raises(ParseFailure, match="answer has no letter or digit"):
        parse_turn(f"Reasoning: r\nAnswer: {answer}", later_round=False, peers={})


def test_a_reasoning_without_a_letter_or_digit_is_not_one() -> None:
    with pytest.raises(ParseFailure, match="reasoning has no letter or digit"):
        parse_turn("Reasoning: ...\nAnswer: Yes, it helps.", later_round=False, peers={})


# -- the order of a turn's fields ---------------------------------------------------


def test_a_turn_is_read_reasoning_first_and_records_that_order() -> None:
    parsed = parse_turn("Reasoning: 2+2 is 4.\nAnswer: 4", later_round=False, peers={})
    assert (parsed.reasoning, parsed.answer) == ("2+2 is 4.", "4")
    assert parsed.order == ["reasoning", "answer"] == turn_fields(later_round=False, labelled=False)
    later = parse_turn(later_turn(), later_round=True, peers={"B2": "Bob"})
    assert later.order == LATER == turn_fields(later_round=True, labelled=False)
    assert later.stance == "change" and later.influenced_by == ["Bob"]
    assert later.answer == "Yes, it helps." and later.position_claim is None
    labelled = parse_turn(later_turn("A"), later_round=True, peers={"B2": "Bob"}, letters=["A"])
    assert labelled.order == LABELLED == turn_fields(later_round=True, labelled=True)


def test_the_old_answer_first_order_is_refused() -> None:
    with pytest.raises(ParseFailure, match="missing the 'Reasoning:' line"):
        parse_turn("Answer: 4\nReasoning: 2+2 is 4.", later_round=False, peers={})
    old = "Decision: maintained\nAnswer: Yes, it helps.\nInfluenced by: nobody\nReasoning: r"
    with pytest.raises(ParseFailure, match="missing the 'Reasoning:' line"):
        parse_turn(old, later_round=True, peers={})


def test_the_answer_line_is_last_and_runs_to_the_end() -> None:
    parsed = parse_turn("Reasoning: r\nAnswer: Yes, surely it helps. ", later_round=False, peers={})
    assert parsed.answer == "Yes, surely it helps."
    with pytest.raises(ParseFailure, match="'Reasoning:' line was cut off"):
        parse_turn("Reasoning: a reasoning that max_tokens cut", later_round=False, peers={})


# -- position letters ------------------------------------------------------------


def test_a_labelled_turn_names_one_of_the_letters_or_new() -> None:
    peers = {"B2": "Bob"}
    for claim in ("A", "B", "new"):
        parsed = parse_turn(later_turn(claim), later_round=True, peers=peers, letters=["A", "B"])
        assert parsed.position_claim == claim
    with pytest.raises(ParseFailure, match="position 'C' is not one of the labelled positions"):
        parse_turn(later_turn("C"), later_round=True, peers=peers, letters=["A", "B"])
    with pytest.raises(ParseFailure, match="position 'a' is not one of the labelled positions"):
        parse_turn(later_turn("a"), later_round=True, peers=peers, letters=["A", "B"])


def test_a_turn_without_labelled_positions_has_no_position_line() -> None:
    # choice and number questions (letters None): the Position line is not a field
    with pytest.raises(ParseFailure, match="missing the 'Answer:' line"):
        parse_turn(later_turn("A"), later_round=True, peers={"B2": "Bob"})
    # ... and one with labelled positions must have it
    with pytest.raises(ParseFailure, match="missing the 'Position:' line"):
        parse_turn(later_turn(), later_round=True, peers={"B2": "Bob"}, letters=["A"])


def test_influence_must_name_a_peer() -> None:
    text = later_turn().replace("Influenced by: B2", "Influenced by: B2, Zed")
    with pytest.raises(ParseFailure, match="influenced by 'Zed', who is not on the panel"):
        parse_turn(text, later_round=True, peers={"B2": "Bob"})


# -- a turn that max_tokens cut off ----------------------------------------------


def test_a_turn_cut_inside_its_reasoning_keeps_the_reasoning_closed_with_an_ellipsis() -> None:
    kept, rest = completed_part("Reasoning: Cars pollute and the centre is ", LATER)
    assert kept == "Reasoning: Cars pollute and the centre is…\n"
    assert rest == ["influenced_by", "decision", "answer"]
    kept, rest = completed_part("Reasoning: Two plus two", ["reasoning", "answer"])
    assert (kept, rest) == ("Reasoning: Two plus two…\n", ["answer"])


def test_a_turn_cut_later_keeps_its_whole_lines() -> None:
    text = "Reasoning: r.\nInfluenced by: nobody\nDecision: chan"
    kept, rest = completed_part(text, LABELLED)
    assert kept == "Reasoning: r.\nInfluenced by: nobody\n"
    assert rest == ["decision", "position", "answer"]
    # every field but the answer complete: only the answer is left to write
    text = "Reasoning: r.\nInfluenced by: nobody\nDecision: changed\nPosition: B\nAnswer: Ye"
    kept, rest = completed_part(text, LABELLED)
    assert kept == "Reasoning: r.\nInfluenced by: nobody\nDecision: changed\nPosition: B\n"
    assert rest == ["answer"]
    # the answer is the last field: even a whole-looking answer line is cut
    kept, rest = completed_part("Reasoning: r.\nAnswer: Yes, it helps.", ["reasoning", "answer"])
    assert (kept, rest) == ("Reasoning: r.\n", ["answer"])


def test_a_cut_multi_line_reasoning_ends_where_the_next_field_begins() -> None:
    work = "Reasoning: 15*21 = 315.\n3*27 = "
    assert completed_part(work, LATER, multiline=True) == (
        "Reasoning: 15*21 = 315.\n3*27 =…\n",
        ["influenced_by", "decision", "answer"],
    )
    # the lines after it may have been written as reasoning: they are written again
    text = "Reasoning: 15*21 = 315.\nSo 246.\nInfluenced by: nobody\nDecision: mainta"
    kept, rest = completed_part(text, LATER, multiline=True)
    assert kept == "Reasoning: 15*21 = 315.\nSo 246.\n"
    assert rest == ["influenced_by", "decision", "answer"]
    seen = (
        "Reasoning: 27 + 126 = 153\nAnswer: -225\n\nInfluenced by: B2 (the answer was"
        " altered).\nDecision: Maintain or changed the view.\nAnswer: -225\n\nReasoning: To, "
    )
    kept, rest = completed_part(seen, LATER, multiline=True)
    assert kept == "Reasoning: 27 + 126 = 153\nAnswer: -225\n\n"
    assert rest == ["influenced_by", "decision", "answer"]
    text = "Reasoning: 15*21 = 315.\nSo 246.\nAnswer: 24"
    kept, rest = completed_part(text, ["reasoning", "answer"], multiline=True)
    assert (kept, rest) == ("Reasoning: 15*21 = 315.\nSo 246.\n", ["answer"])
    assert completed_part("Work: 1", ["reasoning", "answer"], multiline=True)[0] == ""


def test_a_cut_turn_with_nothing_usable_keeps_nothing() -> None:
    assert completed_part("", ["reasoning", "answer"]) == ("", ["reasoning", "answer"])
    assert completed_part("Reason", ["reasoning", "answer"]) == ("", ["reasoning", "answer"])


def test_a_kept_part_and_its_continuation_parse_as_one_turn() -> None:
    kept, rest = completed_part("Reasoning: Cars pollute and", LABELLED)
    assert rest == ["influenced_by", "decision", "position", "answer"]
    continuation = "Influenced by: nobody\nDecision: maintained\nPosition: A\nAnswer: Ban them."
    parsed = parse_turn(kept + continuation, later_round=True, peers={}, letters=["A"])
    assert parsed.reasoning == "Cars pollute and…" and parsed.answer == "Ban them."


# -- labels of positions ---------------------------------------------------------

MEMBERS = {"Panelist A": "Ada", "Panelist B": "Bob", "Panelist C": "Cy"}


def test_labels_assign_every_member_a_declared_letter() -> None:
    text = (
        "Position A: Ban cars\nPosition B: Keep them\nPanelist A: A\nPanelist B: B\nPanelist C: A"
    )
    labels = parse_labels(text, members=MEMBERS, existing=[])
    assert labels.new == {"A": "Ban cars", "B": "Keep them"}
    assert labels.assigned == {"Ada": "A", "Bob": "B", "Cy": "A"}


def test_a_declared_but_unused_letter_is_dropped_and_the_rest_compacted() -> None:
    text = (
        "Position A: Ban cars\nPosition B: Nobody holds this\nPosition C: Keep them\n"
        "Panelist A: C\nPanelist B: A\nPanelist C: C"
    )
    labels = parse_labels(text, members=MEMBERS, existing=[])
    assert labels.new == {"A": "Ban cars", "B": "Keep them"}  # C became B, no gap
    assert labels.assigned == {"Ada": "B", "Bob": "A", "Cy": "B"}


def test_later_labels_may_reuse_existing_letters_and_number_new_ones_after_them() -> None:
    text = "Position C: Tolls instead\nPosition D: Unused\nPanelist B: C\nPanelist C: A"
    labels = parse_labels(
        text, members={"Panelist B": "Bob", "Panelist C": "Cy"}, existing=["A", "B"]
    )
    assert labels.new == {"C": "Tolls instead"}
    assert labels.assigned == {"Bob": "C", "Cy": "A"}


def test_labels_refuse_what_the_grammar_cannot() -> None:
    with pytest.raises(ParseFailure, match="no position given for Panelist B"):
        parse_labels("Position A: Ban\nPanelist A: A", members=MEMBERS, existing=[])
    with pytest.raises(ParseFailure, match="given position 'B', which was not declared"):
        parse_labels(
            "Position A: Ban\nPanelist A: B\nPanelist B: A\nPanelist C: A",
            members=MEMBERS,
            existing=[],
        )
    with pytest.raises(ParseFailure, match="position label has no letter or digit"):
        parse_labels(
            "Position A: ...\nPanelist A: A\nPanelist B: A\nPanelist C: A",
            members=MEMBERS,
            existing=[],
        )
    echo = "Position A: a label that states the position itself\n" + "\n".join(
        f"{label}: A" for label in MEMBERS
    )
    with pytest.raises(ParseFailure, match="the label only repeats the prompt"):
        parse_labels(
            echo,
            members=MEMBERS,
            existing=[],
            instructions="Declare a label that states the position itself.",
        )


# -- the summary -----------------------------------------------------------------


def test_a_summary_has_three_lines_and_no_groups() -> None:
    parsed = parse_summary(
        "Summary: They agreed. Then more.\nCounterpoint: Shops lose.\nAnswer: Ban them.",
        question="Should cities ban cars?",
    )
    assert parsed.headline == "Ban them." and parsed.counterpoint == "Shops lose."
    assert parsed.summary == "They agreed. Then more."


@pytest.mark.parametrize(
    ("headline", "why"),
    [
        ("Should cities ban private cars?", "the headline asks a question"),
        ("Cities should ban private cars", "the headline restates the question"),
        ("Ban private cars from city centres", "the headline restates the question"),
    ],
)
def test_a_headline_that_restates_or_asks_the_question_is_refused(headline: str, why: str) -> None:
    question = "Should cities ban private cars from their centres?"
    text = f"Summary: s\nCounterpoint: c\nAnswer: {headline}"
    with pytest.raises(ParseFailure, match=why):
        parse_summary(text, question=question)


def test_a_headline_with_words_of_its_own_answers_the_question() -> None:
    question = "Should cities ban private cars from their centres?"
    headline = "Yes, but phase the ban in with exemptions for deliveries"
    assert word_overlap(headline, question) < 0.8
    assert parse_summary(f"Summary: s\nCounterpoint: c\nAnswer: {headline}", question=question)
    assert word_overlap("...", question) == 1.0  # no words: nothing of its own
    assert word_overlap("CITIES Ban cars", question) == 1.0  # casefolded


def test_a_headline_that_opens_with_the_question_restates_it() -> None:
    """Seen before schema 4 (Qwen 1.5B, car-free-centres seed 2): the question, then
    an answer after it. Word overlap alone (< 0.8) let it through."""
    question = "Should cities ban private cars from their centres?"
    headline = (
        "Should cities ban private cars from their centres? A. Cities should ban private "
        "cars from their centres to reduce traffic congestion, air pollution, a"
    )
    assert word_overlap(headline, question) < 0.8
    assert restates_question(headline, question)
    assert not restates_question(
        "Yes, with exemptions for deliveries and disabled drivers.", question
    )
    with pytest.raises(ParseFailure, match="restates the question"):
        parse_summary(f"Summary: s\nCounterpoint: c\nAnswer: {headline}", question=question)


def test_fields_a_small_model_writes_inside_a_summary_or_counterpoint_are_cut() -> None:
    text = (
        "Summary: Two panelists favour a ban and one opposes it. Counterpoint: none\n"
        "Counterpoint: Some argue a ban would hurt shops in the centre. Question: Should"
        " cities ban private cars? Answer: Yes, if\n"
        "Answer: Most favour a ban with exceptions for deliveries."
    )
    parsed = parse_summary(text, question="Should cities ban private cars?")
    assert parsed.summary == "Two panelists favour a ban and one opposes it."
    assert parsed.counterpoint == "Some argue a ban would hurt shops in the centre."
    # a short field is left alone: what precedes the label would not say anything
    short = parse_summary("Summary: s\nCounterpoint: Shops. Answer: x\nAnswer: Most favour it.")
    assert short.counterpoint == "Shops. Answer: x"
