"""The arithmetic task of Du et al. 2023, "Improving Factuality and Reasoning in
Language Models through Multiagent Debate" (arXiv:2305.14325).

Their generator (composable-models/llm_multiagent_debate, math/gen_math.py)
calls `np.random.seed(0)` once, then for each of 100 items draws
`a, b, c, d, e, f = np.random.randint(0, 30, size=6)`, asks "What is the
result of a+b*c+d-e*f? Make sure to state your answer at the end of the
response." and scores the answer `a + b * c + d - e * f` by exact match.

numpy is not a dependency of localtable, so this module reimplements the two
pieces of numpy's legacy RandomState that those calls use: MT19937 seeded
with an integer (init_genrand), and bounded integers by masked rejection
(numpy/random/src/distributions: buffered_bounded_masked_uint32). A test
checks every item against numpy itself when it is installed.
"""

from __future__ import annotations

from localtable.research.questions import Question, QuestionSet, questions_sha256

ITEMS = 100
SEED = 0
LOW, HIGH = 0, 30  # randint's half-open range [0, 30)
QUESTION = (
    "What is the result of {}+{}*{}+{}-{}*{}? Make sure to state your answer at the end of the "
    "response."
)

_N, _M = 624, 397
_UPPER, _LOWER, _MATRIX_A = 0x80000000, 0x7FFFFFFF, 0x9908B0DF


class MT19937:
    """The Mersenne Twister as numpy's legacy RandomState runs it (32-bit outputs)."""

    def __init__(self, seed: int) -> None:
        state = [seed & 0xFFFFFFFF]
        for i in range(1, _N):
            prev = state[-1]
            state.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
        self.state = state
        self.pos = _N

    def _twist(self) -> None:
        mt = self.state
        for i in range(_N):
            y = (mt[i] & _UPPER) | (mt[(i + 1) % _N] & _LOWER)
            mt[i] = mt[(i + _M) % _N] ^ (y >> 1) ^ (_MATRIX_A if y & 1 else 0)
        self.pos = 0

    def next_uint32(self) -> int:
        if self.pos >= _N:
            self._twist()
        y = self.state[self.pos]
        self.pos += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y

    def randint(self, low: int, high: int, size: int) -> list[int]:
        """numpy.random.randint(low, high, size) of the legacy RandomState."""
        span = high - 1 - low
        mask = (1 << span.bit_length()) - 1
        out = []
        for _ in range(size):
            value = self.next_uint32() & mask
            while value > span:
                value = self.next_uint32() & mask
            out.append(low + value)
        return out


def problems(count: int = ITEMS) -> list[tuple[tuple[int, ...], int]]:
    """The first `count` (operands, answer) pairs in the paper's draw order."""
    rng = MT19937(SEED)
    out: list[tuple[tuple[int, ...], int]] = []
    for _ in range(count):
        a, b, c, d, e, f = rng.randint(LOW, HIGH, 6)
        out.append(((a, b, c, d, e, f), a + b * c + d - e * f))
    return out


def question_set() -> QuestionSet:
    questions = [
        Question(
            id=f"arithmetic-{i:03d}",
            question=QUESTION.format(*operands),
            kind="number",
            answer=str(answer),
        )
        for i, (operands, answer) in enumerate(problems(), start=1)
    ]
    return QuestionSet(
        name="arithmetic",
        source="task:arithmetic",
        sha256=questions_sha256(questions),
        questions=questions,
    )
