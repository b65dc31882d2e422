"""Every generation's seed, derived from the run's by the scheme its record names.

A seed is the first 4 bytes of the sha256 of a path, mod 2^31-2, plus 1: never 0
or -1, which llama.cpp reads as "random". The record's `seed_scheme` says what
the path holds (docs/record.md, "Seeds"):

- "question" (records since version 5): "<run seed>/<question key>/<step>/<n>",
  where the question key is the sha256 of the question text (a choice question's
  options each on a line after it). Each question draws seeds of its own, so the
  debates of a batch are independent draws, and a batch's debate of a question
  is the debate `localtable debate` gives of it with the same seed.
- "run" (versions 1 to 4): "<run seed>/<step>/<n>", the same seeds on every
  question: a seat was one fixed random stream across a batch's items. Older
  records keep it, so resume and replay reproduce them.

The steps: a turn is (round, panelist index); the summary takes round N+1, its
retries N+2, N+3; a vote sample is ("sample<k>", panelist index); the labels after
round r are ("labels<r>", attempt); a judge's verdict ("judge<r>/<name>", 0).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from localtable.record import RunRecord

SEED_MODULUS = 2**31 - 2


def question_key(question: str, options: list[str]) -> str:
    """The sha256 of the question as the record keeps it (its options after it)."""
    return hashlib.sha256("\n".join([question, *options]).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Seeds:
    """The seeds of one run. question_key: "" under the "run" scheme (records up to
    version 4), else the question's (question_key)."""

    run_seed: int
    question_key: str

    @classmethod
    def of(cls, record: RunRecord) -> Seeds:
        """The seeds a record's generations were (or are to be) drawn with: by the
        scheme the record names, never by a default of the code."""
        if record.seed_scheme == "run":
            return cls(record.seed, "")
        return cls(record.seed, question_key(record.question, record.options))

    def _derive(self, step: str, n: int) -> int:
        key = f"{self.question_key}/" if self.question_key else ""
        digest = hashlib.sha256(f"{self.run_seed}/{key}{step}/{n}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % SEED_MODULUS + 1

    def turn(self, round_no: int, panelist_index: int) -> int:
        """A panelist's turn of a round (and the summary's rounds after the last)."""
        return self._derive(str(round_no), panelist_index)

    def sample(self, sample_no: int, panelist_index: int) -> int:
        """A seat's vote mode sample 1, 2, ... (its round-1 turn is sample 0)."""
        return self._derive(f"sample{sample_no}", panelist_index)

    def stage(self, stage: str, attempt: int) -> int:
        """A step that is not a panelist's turn (the labels after a round, a judge)."""
        return self._derive(stage, attempt)
