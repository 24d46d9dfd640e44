"""Whether a figure moved beyond seed noise: a one-sided Welch t-test.

Welch's test, not Student's: a change to a rule can change the spread over seeds as well as
the mean (a rule made unstable spreads its seeds), and Welch does not assume equal variances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def variance(values: Sequence[float]) -> float:
    """The sample variance (n - 1); 0 for one value."""
    if len(values) < 2:
        return 0.0
    centre = mean(values)
    return math.fsum((v - centre) ** 2 for v in values) / (len(values) - 1)


def welch_worse_p(before: Sequence[float], after: Sequence[float], *,
                  higher_is_better: bool) -> float:
    """The one-sided p-value of "``after`` is worse than ``before``" (two or more values each).

    Two groups without spread (deterministic runs) differ for certain: p is 0 when ``after``
    is worse, 1 otherwise.
    """
    if len(before) < 2 or len(after) < 2:
        raise ValueError("Welch's test needs two or more values on each side")
    worse = mean(before) - mean(after) if higher_is_better else mean(after) - mean(before)
    v_before, v_after = variance(before) / len(before), variance(after) / len(after)
    se2 = v_before + v_after
    if se2 == 0:
        return 0.0 if worse > 0 else 1.0
    # Welch-Satterthwaite, written in shares of se2 so tiny variances cannot underflow to 0/0
    share_before, share_after = v_before / se2, v_after / se2
    df = 1.0 / (share_before ** 2 / (len(before) - 1) + share_after ** 2 / (len(after) - 1))
    from scipy.special import stdtr  # t.sf's own kernel, without scipy.stats' import

    return float(stdtr(df, -worse / math.sqrt(se2)))


__all__ = ["mean", "variance", "welch_worse_p"]
