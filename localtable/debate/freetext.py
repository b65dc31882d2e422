"""A free-text turn as an answer rule reads its reply (a protocol's `output = "free"`).

The debate records each reply so, under its protocol's rule; `localtable score
--answer-rule` reads the recorded replies again under another (research/rereading.py),
through this same function, so the two can never read a reply differently.
"""

from __future__ import annotations

from localtable.debate.answers import ANSWER_RULES
from localtable.record import Generation, ParsedTurn, TurnRecord


def free_turn(round_no: int, panelist: str, generation: Generation, rule: str) -> TurnRecord:
    """The turn of a reply: ok with the answer the rule reads, or failed when it reads
    none (the reply kept: later rounds still show it to peers)."""
    answer = ANSWER_RULES[rule](generation.raw_output)
    if answer is None:
        why = f"unusable answer: the answer rule {rule} reads no number in the reply"
        return TurnRecord(round=round_no, panelist=panelist, status="failed", error=why,
                          generation=generation)  # fmt: skip
    parsed = ParsedTurn(answer=answer, reasoning=generation.raw_output.strip())
    return TurnRecord(
        round=round_no, panelist=panelist, status="ok", generation=generation, parsed=parsed,
        reasoning_cut=generation.finish_reason == "length",  # max_tokens cut it off
    )  # fmt: skip
