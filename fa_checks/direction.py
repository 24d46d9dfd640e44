"""D4, direction quality: does the signal that trains each block beat chance?  And mode 2.

The research code's second failure mode (its direction-quality test and perturbation-correlation
audit): the scale is contained (D1 passes) and the BP reference is valid (D2 passes), yet the
credit that trains the deep blocks is no better aligned with the BP gradient than freshly drawn
random feedback.  D4 names it.

Which blocks.  Block l is trained by ``a_{l+1}`` (README: the credit convention), so D4 judges
the hidden states h_1..h_L; the embedding's h_0 is left out, as in the research code.  A block
is judged only where its reference is valid, ``||g_{l+1}|| >= `` D2's floor (D2 itself looks at
h_L alone): below it a comparison with the gradient measures numerical noise.

The test, per judged block, for the cosine and for rho.  With a fresh-feedback null (the rule's
random feedback redrawn K times, each draw giving the same figure): under the null hypothesis
that the rule's feedback is no better than a fresh draw, the observed figure and the K draws are
exchangeable draws of one distribution, and for a normal one
``t = (observed - mean) / (std * sqrt(1 + 1/K))`` follows Student's t with K-1 degrees of freedom
(the prediction interval of one new draw).  The one-sided p-value ``P(T >= t)`` accounts for the
number of draws; an empirical rank could not go below ``1/(K+1)``, 0.09 at K=10.  A rule with no
random feedback to redraw (BP, a learned credit network) is held to an absolute floor instead,
the research code's 0.05: the figure must exceed it.

A block beats chance only when *both* figures do: the cosine says the signal points along the
gradient, rho that it predicts the loss (the audit's check that an alignment is useful).  The
burden of proof is on the rule, as in D3's across-seeds gate.  D4 fires when at least
:data:`DEFAULT_D4_SHARE` of the judged blocks are at chance.

Why the eval batch size does not flip it: both the observed figure and each null draw are means
over the same N samples, and the null's spread comes from the feedback draw, not from sampling,
so as N grows every figure converges and the statistic with them (a per-sample test against 0
would instead grow like sqrt(N) and declare any small bias significant).

D4 is always reported; it joins the verdict only when gated (``--gate-d4``).  Nothing here
imports torch; scipy's t kernel (scipy.special, not scipy.stats) is imported when a p-value is
computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: the one-sided level of each block's test against the null
DEFAULT_D4_ALPHA = 0.05
#: D4 fires when at least this share of the judged blocks are at chance
DEFAULT_D4_SHARE = 0.5
#: the absolute floor for a rule with no random feedback to redraw (the research code's |cos|
#: below which direction quality is "poor")
DEFAULT_D4_FLOOR = 0.05
#: the research code's bands for a cosine at a layer with a valid reference
POOR, MEDIOCRE = 0.05, 0.20
MODE2_SENTENCE = ("mode 2: the scale is contained (D1) and the BP reference valid (D2), yet the "
                  "credit that trains the deep blocks is no better than freshly drawn feedback "
                  "(D4)")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def null_p_value(observed: float | None, mean: float | None, std: float | None,
                 draws: int) -> float | None:
    """One-sided p-value of ``observed`` against ``draws`` null draws of mean and std (ddof 1):
    ``P(T_{K-1} >= (observed - mean) / (std sqrt(1 + 1/K)))``.  None without a figure or a null;
    NaN when a figure is not finite (nothing non-finite beats chance)."""
    if observed is None or mean is None or std is None or draws < 2:
        return None
    if not (_finite(observed) and _finite(mean) and _finite(std)) or std < 0:
        return math.nan
    if std == 0:  # every draw gave the same figure: above it or not
        return 0.0 if observed > mean else 1.0
    from scipy.special import stdtr  # t.sf's own kernel, without scipy.stats' 0.6-0.9 s import

    t = (observed - mean) / (std * math.sqrt(1.0 + 1.0 / draws))
    return float(stdtr(draws - 1, -t))


def band(cosine: float | None) -> str:
    """The research code's words for a cosine: poor (|cos| < 0.05), mediocre (< 0.20), else
    reasonable."""
    if not _finite(cosine):
        return "n/a"
    assert cosine is not None
    size = abs(cosine)
    return "poor" if size < POOR else ("mediocre" if size < MEDIOCRE else "reasonable")


@dataclass
class DirectionQuality:
    """D4 per hidden state h_l (index l; h_0 and unjudged blocks hold None).

    ``p_cosine`` / ``p_rho``: the one-sided p-values against the fresh-feedback null (``test``
    ``"null"``), None under the absolute floor (``test`` ``"floor"``).  ``at_chance``: the
    block's signal does not beat chance by both figures; None where it is not judged (no
    signal, or the reference is below D2's floor).  ``fires``: None when no block is judged
    (no credit signal, no blocks, no valid reference).  ``gated``: whether it joins the verdict.
    """

    test: str
    p_cosine: list[float | None]
    p_rho: list[float | None]
    at_chance: list[bool | None]
    judged: int
    chance_count: int
    share: float | None
    alpha: float
    max_share: float
    floor: float
    gated: bool
    fires: bool | None
    null_draws: int = 0
    explanation: str = ""

    @property
    def chance_layers(self) -> list[int]:
        return [l for l, c in enumerate(self.at_chance) if c]

    def agrees_with(self, credit: Any, valid: Sequence[bool]) -> bool:
        """Whether this record is what its own settings make of ``credit`` and ``valid`` (a
        record read from a file is checked so: a flag edited by hand is refused)."""
        again = direction_from(credit, valid, alpha=self.alpha, max_share=self.max_share,
                               floor=self.floor, gated=self.gated)
        return again is not None and self.same_judgement(again)

    def same_judgement(self, other: DirectionQuality) -> bool:
        """Whether two records judge alike (a stored one against one recomputed)."""
        def p_equal(a: Sequence[float | None], b: Sequence[float | None]) -> bool:
            return len(a) == len(b) and all(
                (x is None and y is None) or (x is not None and y is not None and (
                    (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9,
                                                                      abs_tol=1e-15)))
                for x, y in zip(a, b, strict=True))
        return (self.test == other.test and self.at_chance == other.at_chance
                and self.fires == other.fires and self.gated == other.gated
                and self.judged == other.judged and self.null_draws == other.null_draws
                and self.chance_count == other.chance_count
                and p_equal(self.p_cosine, other.p_cosine) and p_equal(self.p_rho, other.p_rho))


def _beats(p: float | None, value: float | None, alpha: float, floor: float) -> bool:
    """One figure beats chance: its p-value is at most alpha, or (no null) it exceeds the floor."""
    if p is not None:
        return p <= alpha  # NaN: False
    return _finite(value) and value is not None and value > floor


def judge_direction(
    *,
    cosine: Sequence[float | None],
    rho: Sequence[float | None],
    cosine_null: tuple[Sequence[float | None], Sequence[float | None]] | None,
    rho_null: tuple[Sequence[float | None], Sequence[float | None]] | None,
    draws: int,
    valid: Sequence[bool],
    alpha: float = DEFAULT_D4_ALPHA,
    max_share: float = DEFAULT_D4_SHARE,
    floor: float = DEFAULT_D4_FLOOR,
    gated: bool = False,
) -> DirectionQuality:
    """D4 from the per-layer figures: ``cosine`` / ``rho`` (observed), each null as ``(mean,
    std)`` over ``draws`` draws (None: the rule has no random feedback), ``valid`` the per-layer
    reference validity."""
    layers = len(cosine)
    test = "null" if cosine_null is not None and draws >= 2 else "floor"
    p_cos: list[float | None] = [None] * layers
    p_rho: list[float | None] = [None] * layers
    at_chance: list[bool | None] = [None] * layers
    for l in range(1, layers):
        if cosine[l] is None or not (l < len(valid) and valid[l]):
            continue
        r = rho[l] if l < len(rho) else None
        if test == "null":
            assert cosine_null is not None
            p_cos[l] = _p_at(cosine[l], cosine_null, l, draws)
            p_rho[l] = _p_at(r, rho_null, l, draws) if rho_null is not None else None
            if p_rho[l] is None:  # no rho null: rho cannot show the block beats chance
                p_rho[l] = math.nan
        beats = (_beats(p_cos[l], cosine[l], alpha, floor)
                 and _beats(p_rho[l], r, alpha, floor))
        at_chance[l] = not beats
    judged = sum(c is not None for c in at_chance)
    count = sum(bool(c) for c in at_chance)
    share = count / judged if judged else None
    fires = None if share is None else share >= max_share
    record = DirectionQuality(test, p_cos, p_rho, at_chance, judged, count, share, alpha,
                              max_share, floor, gated, fires, draws if test == "null" else 0)
    record.explanation = _sentence(record, cosine, valid)
    return record


def _p_at(value: float | None, null: tuple[Sequence[float | None], Sequence[float | None]],
          l: int, draws: int) -> float | None:
    mean, std = null
    m = mean[l] if l < len(mean) else None
    s = std[l] if l < len(std) else None
    if value is None:
        return math.nan
    return null_p_value(value, m, s, draws) if m is not None else math.nan


def _sentence(d: DirectionQuality, cosine: Sequence[float | None], valid: Sequence[bool]) -> str:
    blocks = len(cosine) - 1
    invalid = [l for l in range(1, len(cosine)) if not (l < len(valid) and valid[l])]
    if d.share is None:
        if blocks < 1:
            return "not applicable: the model has no blocks"
        if all(c is None for c in cosine[1:]):
            return "not applicable: the method gives no credit signal for its blocks"
        return ("not evaluated: the BP reference is below D2's floor at every block "
                f"(h_1..h_{blocks}), so no direction can be compared with it")
    against = (f"the fresh-feedback null ({d.null_draws} draws), one-sided at {d.alpha:g}"
               if d.test == "null" else
               f"the absolute floor {d.floor:g} (the rule has no random feedback to redraw)")
    chance = ", ".join(f"h_{l}" for l in d.chance_layers)
    head = (f"{d.chance_count} of {d.judged} blocks with a valid reference learn from a signal "
            f"at chance ({chance})" if d.chance_count else
            f"every one of the {d.judged} blocks with a valid reference learns from a signal "
            "better than chance")
    sentence = f"{head}, judged by cosine and rho against {against}"
    sentence += (f"; at least {d.max_share:.0%} of them at chance fires D4" if d.fires
                 else f"; below the {d.max_share:.0%} at chance that fires D4")
    if invalid:
        sentence += ("; not judged (reference below D2's floor): "
                     + ", ".join(f"h_{l}" for l in invalid))
    if not d.gated:
        sentence += " (reported, not gated; the gate-d4 flag gates it)"
    return sentence


__all__ = [
    "DEFAULT_D4_ALPHA",
    "DEFAULT_D4_FLOOR",
    "DEFAULT_D4_SHARE",
    "MEDIOCRE",
    "MODE2_SENTENCE",
    "POOR",
    "DirectionQuality",
    "band",
    "direction_from",
    "judge_direction",
    "null_p_value",
]


def direction_from(credit: Any, valid: Sequence[bool], *, alpha: float, max_share: float,
                   floor: float, gated: bool) -> DirectionQuality | None:
    """D4 from a report's credit section (a :class:`~fa_checks.report.CreditMetrics`) and the
    per-layer reference validity; None without credit metrics (the rule gives no signal)."""
    if credit is None:
        return None
    cosine_null = None
    if credit.null_mean is not None and credit.null_std is not None:
        cosine_null = (credit.null_mean, credit.null_std)
    rho_null = None
    if credit.null_rho_mean is not None and credit.null_rho_std is not None:
        rho_null = (credit.null_rho_mean, credit.null_rho_std)
    return judge_direction(cosine=credit.cosine, rho=credit.rho, cosine_null=cosine_null,
                           rho_null=rho_null, draws=int(credit.null_draws), valid=valid,
                           alpha=alpha, max_share=max_share, floor=floor, gated=gated)
