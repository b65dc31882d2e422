"""Checks on model output that the grammar cannot make."""

from __future__ import annotations

import pytest

from localtable.debate.parsing import ParseFailure, parse_turn, repeats_instructions


def test_repeating_the_prompt_needs_three_words_copied_in_order() -> None:
    instructions = 'Summarize this debate. "Headline:" the roundtable\'s answer in one sentence.'
    assert repeats_instructions("The roundtable's answer in one sentence.", instructions)
    assert repeats_instructions("  summarize THIS debate ", instructions)
    assert not repeats_instructions("One sentence.", instructions)  # too short to tell
    assert not repeats_instructions("The answer in one sentence.", instructions)  # not in order
    assert not repeats_instructions("Open weights help science.", instructions)


@pytest.mark.parametrize("answer", ["4", "2+1", "A", "-3.5", "42%", "Да", "是"])
def test_a_short_answer_is_an_answer(answer: str) -> None:
    parsed = parse_turn(f"Answer: {answer}\nReasoning: 2+2 is 4.", later_round=False, peers={})
    assert parsed.answer == answer


@pytest.mark.parametrize("answer", ["...", "-", "?!", "_"])
def test_an_answer_without_a_letter_or_digit_is_not(answer: str) -> None:
    with pytest.raises(ParseFailure, match="answer has no letter or digit"):
        parse_turn(f"Answer: {answer}\nReasoning: r", later_round=False, peers={})
