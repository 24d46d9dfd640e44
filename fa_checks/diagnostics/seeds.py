"""The across-seeds D3 gate: a one-sided bound on the mean margin over seeds.

Apart from :mod:`.protocol` because it needs only numbers (and scipy's t quantile), no torch:
a rerun whose reports are all cached gates its seeds without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..report import DEFAULT_MIN_MARGIN_PP, MARGIN_DECIMALS, AcrossSeeds, minimum_fires


def gate_across_seeds(
    margins_pp: Sequence[float],
    *,
    method: str,
    min_margin_pp: float = DEFAULT_MIN_MARGIN_PP,
    confidence: float = 0.95,
    label: str = "",
) -> AcrossSeeds:
    """Gate the mean D3 margin over seeds: fires when ``mean - t * std / sqrt(n) < min_margin``.

    With one seed there is no spread to bound the mean by: the bound is ``-inf`` and the gate
    fires, and the explanation says that more seeds are needed.
    """
    margins = [float(m) for m in margins_pp]
    if not margins:
        raise ValueError("the across-seeds gate needs at least one D3 margin")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    n = len(margins)
    mean = math.fsum(margins) / n
    if n == 1:
        std, bound = 0.0, -math.inf
        explanation = (
            f"one seed, D3 margin {mean:.1f} pp; a single seed cannot bound the mean margin, "
            f"so the {confidence:.0%} gate against {min_margin_pp:g} pp cannot pass. "
            "Run two or more seeds."
        )
    else:
        from scipy.special import stdtrit  # t.ppf's own kernel, without scipy.stats' import

        std = math.sqrt(math.fsum((m - mean) ** 2 for m in margins) / (n - 1))
        t = float(stdtrit(n - 1, confidence))
        # rounded as D3 rounds one margin: a bound of exactly the threshold must pass
        bound = round(mean - t * std / math.sqrt(n), MARGIN_DECIMALS)
        relation = "below" if minimum_fires(bound, min_margin_pp) else "at or above"
        explanation = (
            f"mean D3 margin over {n} seeds is {mean:.1f} pp (std {std:.1f}); its one-sided "
            f"{confidence:.0%} lower bound {bound:.1f} pp is {relation} the "
            f"{min_margin_pp:g} pp threshold."
        )
    return AcrossSeeds(
        method=method,
        n=n,
        margins_pp=margins,
        mean_margin_pp=mean,
        std_margin_pp=std,
        lower_bound_pp=bound,
        confidence=confidence,
        threshold_pp=float(min_margin_pp),
        fires=bool(minimum_fires(bound, min_margin_pp)),
        explanation=explanation,
        label=label or method,
    )



__all__ = ["gate_across_seeds"]
