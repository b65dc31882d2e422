"""Checks on model output that the grammar cannot make."""

from __future__ import annotations

from localtable.debate.parsing import repeats_instructions


def test_repeating_the_prompt_needs_three_words_copied_in_order() -> None:
    instructions = 'Summarize this debate. "Headline:" the roundtable\'s answer in one sentence.'
    assert repeats_instructions("The roundtable's answer in one sentence.", instructions)
    assert repeats_instructions("  summarize THIS debate ", instructions)
    assert not repeats_instructions("One sentence.", instructions)  # too short to tell
    assert not repeats_instructions("The answer in one sentence.", instructions)  # not in order
    assert not repeats_instructions("Open weights help science.", instructions)
