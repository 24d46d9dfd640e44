"""Numbers in sentences and tables, and the judgements every diagnostic shares.

Whether a figure fails its threshold is decided here, once, for the diagnostics that compute
the figures and for :mod:`fa_checks.report` that recomputes verdicts from a file: NaN always
fails.  The across-seeds gate's record lives here too.  Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .files import decode_non_finite, json_safe

#: D3's margin in pp is rounded to this many decimals before it is compared
MARGIN_DECIMALS = 9


# -- numbers in sentences and tables -------------------------------------------------------------
def format_number(x: float | None) -> str:
    """A compact number for a sentence or a table: 1.293, 8433, 1.02e+04, 3.60e-09, NaN, Inf."""
    if x is None:
        return "n/a"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.2e}"


def format_percent(fraction: float | None) -> str:
    """An accuracy: 0.9625 -> 96.2%; None -> n/a; NaN -> NaN."""
    if fraction is None:
        return "n/a"
    return f"{100 * fraction:.1f}%" if math.isfinite(fraction) else format_number(fraction)


def format_signed(x: float | None) -> str:
    """A figure in [-1, 1] (a cosine, a correlation): +0.031."""
    return f"{x:+.3f}" if is_finite(x) else format_number(x)


def is_finite(x: Any) -> bool:
    try:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    except OverflowError:  # an integer too large for a float, read from a file
        return False


# -- judgements: whether a figure fails its threshold (NaN always fails) -------------------------
def growth_fires(max_growth: float, limit: float) -> bool:
    """D1: the largest growth is above the limit, or not a number."""
    return not max_growth <= limit


def floor_fires(g_last: float, floor: float) -> bool:
    """D2: the per-sample BP gradient at h_L is below the floor, or not a number."""
    return not g_last >= floor


def depth_margin(test_acc: float, baseline_acc: float) -> float:
    """D3's margin in percentage points, rounded to 1e-9 pp (far below any accuracy's
    resolution): accuracies are fractions k/n, and unrounded ``100 * (0.03 - 0.01)`` is
    1.9999999999999998, which would fail a 2 pp margin."""
    return round(100.0 * (test_acc - baseline_acc), MARGIN_DECIMALS)


def margin_fires(margin_pp: float | None, threshold_pp: float) -> bool | None:
    """D3: None when there is no margin (no baseline), else below the threshold or NaN."""
    return None if margin_pp is None else not margin_pp >= threshold_pp


def minimum_fires(value: float | None, minimum: float | None) -> bool | None:
    """An opt-in gate (credit cosine, rho, the across-seeds bound): None when off or unknown."""
    if minimum is None or value is None:
        return None
    return not value >= minimum


@dataclass
class AcrossSeeds:
    """D3 over seeds: a one-sided Student-t lower confidence bound on the mean margin."""

    method: str
    n: int
    margins_pp: list[float]
    mean_margin_pp: float
    std_margin_pp: float
    lower_bound_pp: float
    confidence: float
    threshold_pp: float
    fires: bool
    explanation: str
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcrossSeeds:
        known = {f.name for f in fields(cls)}
        values = decode_non_finite({k: v for k, v in data.items() if k in known})
        try:
            gate = cls(**values)
        except TypeError as exc:
            raise ValueError(f"not an across-seeds record: {exc}") from None
        if minimum_fires(gate.lower_bound_pp, gate.threshold_pp) is not gate.fires:
            raise ValueError(f"across-seeds record {gate.label or gate.method!r}: its verdict "
                             "disagrees with its bound and threshold")
        return gate


__all__ = [
    "MARGIN_DECIMALS",
    "AcrossSeeds",
    "depth_margin",
    "floor_fires",
    "format_number",
    "format_percent",
    "format_signed",
    "growth_fires",
    "is_finite",
    "margin_fires",
    "minimum_fires",
]
