"""What each diagnostic finds, judged and worded from its figures alone: D1 from the median
hidden norms, D2 from the gradient norms, D3 from the accuracies, the credit sentence from the
credit figures.

One wording for a report computed here (:mod:`fa_checks.diagnostics`, which measures the
figures from tensors) and one read back from a file (:mod:`fa_checks.claims`, which judges them
against the thresholds in force), so the two cannot drift apart.  Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .judgements import (
    depth_margin,
    floor_fires,
    format_number,
    format_percent,
    format_signed,
    growth_fires,
    is_finite,
    margin_fires,
)
from .report import (
    DEFAULT_MIN_MARGIN_PP,
    CreditMetrics,
    DepthUtility,
    ReferenceValidity,
    ScaleStability,
)


def growth_of(before: float, after: float) -> float:
    """D1's growth across one block from the median norms either side (as measured)."""
    if before == 0 and after == 0:
        return 1.0  # a stream that stays at zero does not grow
    return after / before if before != 0 else math.inf


def max_growth_of(norms: Sequence[float], growth: Sequence[float]) -> float:
    """D1's figure from the norms and growths: the largest growth; Inf or NaN when a norm is
    not finite (as :func:`fa_checks.diagnostics.protocol.scale_stability` reports it)."""
    if not all(is_finite(n) for n in norms):
        return math.inf if growth and not any(math.isnan(g) for g in growth) else math.nan
    return max(growth) if growth else 1.0


def deep_mean(values: Sequence[float | None]) -> float | None:
    """The mean over layers h_1..h_L of a per-layer credit figure (None where unmeasured)."""
    deep = [v for v in values[1:] if v is not None]
    return math.fsum(deep) / len(deep) if deep else None


def scale_from_norms(norms: Sequence[float], limit: float, *, stream: str = "residual stream",
                     layer_norm: bool = False, bad_samples: str = "") -> ScaleStability:
    """D1 worded and judged from the median hidden norms ``[h_0..h_L]`` (``stream``: what
    the model's hidden state is called; ``layer_norm``: it ends in a LayerNorm;
    ``bad_samples``: how many samples were non-finite, where the tensors were there to count).
    The one wording of D1, for a report computed here and one read back alike."""
    growth = [growth_of(norms[i], norms[i + 1]) for i in range(len(norms) - 1)]
    top = max_growth_of(norms, growth)
    bad = next((i for i, n in enumerate(norms) if not is_finite(n)), None)
    if bad is not None:
        return ScaleStability(top, growth, list(norms), limit, True,
                              f"the hidden state became non-finite at h_{bad}{bad_samples}: the "
                              "model has diverged", worst_block=bad - 1 if bad > 0 else None)
    if not growth:
        return ScaleStability(1.0, [], list(norms), limit, False, "no blocks: nothing can grow")
    worst = max(range(len(growth)), key=lambda i: growth[i])
    fires = growth_fires(top, limit)
    detail = (f"across block {worst} (median per-sample norm {format_number(norms[worst])} -> "
              f"{format_number(norms[worst + 1])})")
    sentence = (f"the {stream} grew {format_number(top)}x {detail} against a limit of "
                f"{format_number(limit)}x" if fires else
                f"the largest growth of the {stream} is {format_number(top)}x {detail}, "
                f"within the limit of {format_number(limit)}x")
    if fires and layer_norm:
        sentence += "; a terminal LayerNorm would hide this from the loss"
    return ScaleStability(top, growth, list(norms), limit, fires, sentence, worst)


def reference_from_norms(grads: Sequence[float], floor: float, *,
                         bad_samples: str = "") -> ReferenceValidity:
    """D2 worded and judged from the per-sample BP gradient norms ``[g_0..g_L]``
    (``bad_samples`` as for :func:`scale_from_norms`): the one wording of D2."""
    last = len(grads) - 1
    g_last = grads[-1]
    bad = next((i for i, g in enumerate(grads) if not is_finite(g)), None)
    if bad is not None:
        return ReferenceValidity(g_last, list(grads), floor, True,
                                 f"the per-sample BP gradient is non-finite at h_{bad}"
                                 f"{bad_samples}: there is no BP reference to compare a credit "
                                 "signal with")
    fires = floor_fires(g_last, floor)
    sentence = (f"the per-sample BP gradient at h_{last} is {format_number(g_last)}, "
                + (f"below the floor {format_number(floor)}: gradient-based comparisons "
                   "(cosine against BP) are meaningless at this scale" if fires else
                   f"above the floor {format_number(floor)}"))
    below = [i for i, g in enumerate(grads) if floor_fires(g, floor)]
    if not below:
        sentence += "; the floor holds at every h_l, so every layer's credit figures count"
    elif len(below) < len(grads):
        sentence += ("; below it at " + ", ".join(f"h_{i}" for i in below)
                     + ", whose credit figures measure numerical noise")
    return ReferenceValidity(g_last, list(grads), floor, fires, sentence)


def depth_utility(test_acc: float, baseline_acc: float | None,
                  min_margin_pp: float = DEFAULT_MIN_MARGIN_PP, *,
                  divergence: str | None = None) -> DepthUtility:
    """D3: ``100 * (test_acc - baseline_acc)`` against ``min_margin_pp`` (None: no baseline, not
    evaluated), for a report computed here and one read back alike.  ``divergence``: why the
    model diverged; D3 then fails whatever the margin (its accuracy credits nothing learned)."""
    if baseline_acc is None:
        return DepthUtility(None, None, min_margin_pp, None,
                            "not evaluated: no frozen-blocks baseline accuracy was given")
    margin = depth_margin(test_acc, baseline_acc)
    if divergence is not None or not math.isfinite(margin):
        cause = divergence or (f"the accuracy margin is not a number (test accuracy "
                               f"{format_percent(test_acc)}, baseline "
                               f"{format_percent(baseline_acc)}): the model has diverged")
        return DepthUtility(margin, baseline_acc, min_margin_pp, True,
                            f"{cause}; a diverged model shows no depth utility, whatever its "
                            "accuracy", diverged=divergence is not None)
    fires = bool(margin_fires(margin, min_margin_pp))
    side = "above" if margin >= 0 else "below"
    return DepthUtility(
        margin, baseline_acc, min_margin_pp, fires,
        f"test accuracy {format_percent(test_acc)} is {abs(margin):.1f} pp {side} the "
        f"frozen-blocks baseline {format_percent(baseline_acc)}; the trained blocks must add at "
        f"least {min_margin_pp:.1f} pp")


def credit_sentence(credit: CreditMetrics, num_blocks: int, *, reference_valid: bool,
                    non_finite_layers: Sequence[int] | None = None) -> str:
    """The credit metrics' sentence, worded from their figures and the gates in force.
    ``non_finite_layers``: where the signal itself held NaN or Inf (None: where its cosine is
    not finite, all a report read back can tell)."""
    if credit.deep_cosine is None:
        scope = "h_0 only (no deep layers)"
        cos = credit.cosine[0] if credit.cosine else None
        rho = credit.rho[0] if credit.rho else None
    else:
        scope, cos, rho = f"deep layers h_1..h_{num_blocks}", credit.deep_cosine, credit.deep_rho
    sentence = f"over {scope}: mean cosine with the per-sample BP gradient {format_signed(cos)}"
    if credit.null_deep_mean is not None:
        sentence += (f" (fresh-feedback null {format_signed(credit.null_deep_mean)} +- "
                     f"{format_number(credit.null_deep_std)} over {credit.null_draws} draws)")
    sentence += f", perturbation correlation {format_signed(rho)}"
    for label, value, minimum, fires in (  # the gates' flags: judge() set them
            ("cosine", cos, credit.min_cosine, credit.cosine_fires),
            ("perturbation correlation", rho, credit.min_rho, credit.rho_fires)):
        if fires is not None:
            verb = "is below" if fires else "meets"
            sentence += f"; the {label} {format_signed(value)} {verb} the minimum " + \
                format_number(minimum)
    bad = non_finite_layers
    if bad is None:
        bad = [i for i, v in enumerate(credit.cosine) if v is not None and not is_finite(v)]
    if bad:
        sentence += "; the credit signal is non-finite at " + ", ".join(f"h_{i}" for i in bad)
    if not reference_valid:
        sentence += "; the BP reference failed D2, so these comparisons measure numerical noise"
    return sentence


__all__ = ["credit_sentence", "deep_mean", "depth_utility", "growth_of", "max_growth_of",
           "reference_from_norms", "scale_from_norms"]
