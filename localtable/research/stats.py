"""Paired tests for accuracy tables, in pure Python: exact binomial, McNemar, Newcombe.

The p-values are exact: the binomial tail is a sum of integers (math.comb) over
2**n, divided once (Python's int / int is correctly rounded), so nothing
underflows or loses precision for the n of a study (thousands of items). No
numpy or scipy: reading records must not need them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054


def binomial_two_sided(k: int, n: int) -> float:
    """The exact two-sided binomial test of k successes in n trials against p = 1/2.

    The p-value is the probability, under p = 1/2, of a count at least as far from
    n/2 as k: 2 * P(X <= min(k, n - k)), at most 1. At p = 1/2 the distribution is
    symmetric, so this equals the "as likely or less likely" rule of R's binom.test
    and scipy.stats.binomtest. n = 0 gives 1.
    """
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    low = min(k, n - k)
    tail, term = 0, 1  # term: comb(n, i), updated exactly
    for i in range(low + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, (2 * tail) / (1 << n))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """The exact McNemar test of two methods scored on the same items (two-sided).

    Only the discordant items count: those where exactly one of the two was right
    (only_first, only_second). With no difference between the methods each is
    equally likely to be either, so the test is the exact binomial test of
    only_first in only_first + only_second at p = 1/2 (McNemar 1947; the
    "exact conditional" McNemar test of Fagerland, Lydersen and Laake 2013).
    """
    return binomial_two_sided(only_first, only_first + only_second)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (Wilson 1927)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(
    both: int, only_first: int, only_second: int, neither: int, z: float = Z95
) -> tuple[float, float]:
    """The confidence interval of p1 - p2 for two proportions measured on the same items.

    p1 = (both + only_first) / n and p2 = (both + only_second) / n. Newcombe's
    hybrid score interval, method 10 of R. G. Newcombe, "Improved confidence
    intervals for the difference between binomial proportions based on paired
    data", Statistics in Medicine 17 (1998) 2635-2650: the Wilson intervals of p1
    and p2 combined by "square and add", with the correlation of the two
    estimates, phi, from the 2x2 table (its numerator reduced by n/2 towards 0
    when positive, as in the paper). Unlike the Wald interval it stays inside
    [-1, 1] and does not collapse to a point when no item is discordant.
    """
    n = both + only_first + only_second + neither
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    l1, u1 = wilson(both + only_first, n, z)
    l2, u2 = wilson(both + only_second, n, z)
    margins = (
        (both + only_first)
        * (only_second + neither)
        * (both + only_second)
        * (only_first + neither)
    )
    cross = both * neither - only_first * only_second
    if margins == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / math.sqrt(margins)
    down = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    up = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    diff = p1 - p2
    return max(-1.0, diff - math.sqrt(max(0.0, down))), min(1.0, diff + math.sqrt(max(0.0, up)))
