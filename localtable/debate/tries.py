"""The attempts at a step that is retried with other seeds until one is usable.

Small models sometimes cut off the labels or the summary, restate the question,
or parrot their instructions; such an attempt is refused (ParseFailure) and the
next, derived and recorded seed tried. The record keeps every attempt: the one
kept, the refused ones, and why each was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from localtable.debate.parsing import ParseFailure
from localtable.record import Generation

Reading = TypeVar("Reading")


class Tries:
    """The attempts at one step, as its record keeps them."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.generation: Generation | None = None  # the latest attempt's
        self.thrown: list[Generation] = []  # the attempts before it (each one refused)
        self.rejected: list[str] = []  # why each refused attempt was, with its seed
        self.refusals: list[ParseFailure] = []

    def first_usable(
        self,
        generate: Callable[[int], Generation],
        read: Callable[[Generation], Reading],
    ) -> Reading:
        """`read`'s reading of the first of `attempts` generations (generate(attempt))
        that it does not refuse with a ParseFailure; the last refusal is raised when it
        refuses them all (that attempt stays `generation`, the earlier ones `thrown`).
        Anything else `generate` raises ends the tries at once, with every attempt so
        far among `thrown` and no `generation`: each generation is counted once."""
        for attempt in range(self.attempts):
            self.generation = generate(attempt)
            try:
                return read(self.generation)
            except ParseFailure as exc:
                self.rejected.append(f"seed {self.generation.seed}: {exc}")
                self.refusals.append(exc)
                if attempt + 1 == self.attempts:
                    raise
                self.thrown.append(self.generation)
                self.generation = None
        raise ValueError("a step is tried at least once")

    def give_up(self) -> None:
        """No attempt is kept (a fallback replaces them): every generation is a thrown one."""
        if self.generation is not None:
            self.thrown.append(self.generation)
        self.generation = None
