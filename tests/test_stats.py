"""The paired tests against published reference values (localtable/research/stats.py)."""

from __future__ import annotations

import math

import pytest

from localtable.research.stats import (
    binomial_two_sided,
    mcnemar_exact,
    newcombe_paired,
    wilson,
)


def test_exact_mcnemar_matches_the_published_example() -> None:
    # Cavo et al. 2012 (complete response before and after consolidation therapy, the
    # paired table [[59, 6], [16, 80]]), in Fagerland, Lydersen and Laake, "Statistical
    # Analysis of Contingency Tables" (2017), chapter 8: "The McNemar exact conditional
    # test: P = 0.052479" (their R package contingencytables, tests/testthat/test-ch8.R).
    assert mcnemar_exact(6, 16) == pytest.approx(0.052479, abs=5e-7)
    assert mcnemar_exact(16, 6) == mcnemar_exact(6, 16)
    # by hand: Bentur et al. 2009 [[1, 1], [7, 12]]: 2 * (C(8,0) + C(8,1)) / 2**8
    assert mcnemar_exact(1, 7) == 2 * (1 + 8) / 256
    assert mcnemar_exact(0, 0) == 1.0  # no discordant item: no evidence either way
    assert mcnemar_exact(5, 5) == 1.0


def test_binomial_test_is_exact_and_stable_for_thousands_of_trials() -> None:
    # by hand: 0 of 5 is 2 / 32; 2 of 4 is the centre, p = 1
    assert binomial_two_sided(0, 5) == 2 / 32
    assert binomial_two_sided(2, 4) == 1.0
    assert binomial_two_sided(5, 5) == binomial_two_sided(0, 5)

    # Against an independent computation in log space (lgamma), far into the tail
    # and for n in the thousands, where 2**n overflows a float and the terms underflow.
    def log_space(k: int, n: int) -> float:
        low = min(k, n - k)
        logs = [
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(low + 1)
        ]
        top = max(logs)
        return min(1.0, 2 * math.exp(top) * sum(math.exp(x - top) for x in logs))

    for k, n in [(900, 2000), (2400, 5000), (1490, 3000), (40, 100), (3, 20)]:
        assert binomial_two_sided(k, n) == pytest.approx(log_space(k, n), rel=1e-9), (k, n)
    assert 0 < binomial_two_sided(1200, 3000) < 1e-25  # tiny, yet not rounded to zero
    with pytest.raises(ValueError):
        binomial_two_sided(6, 5)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        # Newcombe 1998 (Statistics in Medicine 17:2635-2650), the paper's examples,
        # method 10, as the R package propint tests them (tests/testthat):
        ((36, 12, 2, 0), (0.0569, 0.3404)),
        ((18, 12, 2, 18), (0.0562, 0.3290)),
        ((53, 0, 0, 1), (-0.0729, 0.0729)),
        ((0, 30, 0, 0), (0.8395, 1.0)),
        # Cavo et al. 2012 in Fagerland, Lydersen and Laake (2017), chapter 8: "The
        # Newcombe square-and-add CI: estimate = -0.0621 (95% CI -0.1186 to -0.0046)"
        ((59, 6, 16, 80), (-0.1186, -0.0046)),
    ],
)
def test_newcombe_interval_matches_the_published_examples(
    table: tuple[int, int, int, int], expected: tuple[float, float]
) -> None:
    low, high = newcombe_paired(*table)
    assert low == pytest.approx(expected[0], abs=5e-5)
    assert high == pytest.approx(expected[1], abs=5e-5)
    both, first, second, neither = table
    assert low <= (first - second) / sum(table) <= high


def test_wilson_interval() -> None:
    # Newcombe 1998's example (d) rests on it: 30 of 30 is [0.8865, 1]
    low, high = wilson(30, 30)
    assert low == pytest.approx(0.8865, abs=5e-5) and high == 1.0
    assert wilson(0, 0) == (0.0, 1.0)
