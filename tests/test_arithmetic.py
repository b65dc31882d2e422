"""The arithmetic task of Du et al. 2023: the same 100 problems as their numpy generator."""

from __future__ import annotations

import pytest

from localtable.debate.answers import parse_number
from localtable.research.tasks import load_task
from localtable.research.tasks.arithmetic import MT19937, problems

# np.random.seed(0); a, b, c, d, e, f = np.random.randint(0, 30, size=6), three times
FIRST = [
    ((12, 15, 21, 0, 3, 27), 246),
    ((3, 7, 9, 19, 21, 18), -293),
    ((4, 23, 6, 24, 24, 12), -122),
]


def test_first_problems_and_answers_are_pinned() -> None:
    assert problems(3) == FIRST
    task = load_task("arithmetic")
    assert len(task.questions) == 100 and task.source == "task:arithmetic"
    first = task.questions[0]
    assert first.id == "arithmetic-001" and first.kind == "number" and first.answer == "246"
    assert first.question == (
        "What is the result of 12+15*21+0-3*27? Make sure to state your answer at the end of "
        "the response."
    )
    assert task.questions[1].answer == "-293"
    assert all(parse_number(q.answer or "") is not None for q in task.questions)
    assert [q.id for q in task.limited(2).questions] == ["arithmetic-001", "arithmetic-002"]


def test_mt19937_matches_the_reference_outputs() -> None:
    # init_genrand(5489) is the reference seed of Matsumoto and Nishimura's mt19937ar.c
    rng = MT19937(5489)
    assert [rng.next_uint32() for _ in range(3)] == [3499211612, 581869302, 3890346734]


def test_every_problem_matches_numpy_legacy_randint() -> None:
    np = pytest.importorskip("numpy")  # comes with llama-cpp-python; not a localtable dependency
    np.random.seed(0)
    expected = []
    for _ in range(100):
        a, b, c, d, e, f = (int(x) for x in np.random.randint(0, 30, size=6))
        expected.append(((a, b, c, d, e, f), a + b * c + d - e * f))
    assert problems() == expected
