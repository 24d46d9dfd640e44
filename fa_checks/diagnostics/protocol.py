"""The evaluation protocol: three diagnostics, the across-seeds gate, and ``evaluate``.

===  =====================  ===========================================================  ======
id   name                   quantity                                                     fires
===  =====================  ===========================================================  ======
D1   scale stability        max over blocks of (median per-sample ||h_{l+1}||) /         > 50
                            (median per-sample ||h_l||)
D2   reference validity     median per-sample norm of each sample's own loss gradient    < floor
                            at the deepest hidden state h_L
D3   depth utility          test accuracy minus the frozen-blocks baseline, in pp        < 2 pp
D4   direction quality      share of the blocks with a valid reference whose credit      >= 1/2
     (gated when asked)     does not beat the fresh-feedback null (cosine and rho)
COS  credit cosine (opt-in) mean over layers 1..L of the mean per-sample cosine          < min
RHO  credit rho (opt-in)    mean over layers 1..L of the perturbation correlation        < min
===  =====================  ===========================================================  ======

The verdict is ``PASS`` or ``FAIL(`` + the firing ids joined by ``+`` + ``)``, in the order of
the table; ``mode1`` (the silent failure: the stream explodes behind a terminal LayerNorm and
the BP reference collapses) is D1 and D2 together; ``mode2`` (the second, separable failure of
the research code: the scale contained, the reference valid, the deep blocks learning from a
signal at chance) is D1 and D2 passing while D4 fires (:mod:`fa_checks.direction`).  Across
seeds, D3 is gated by a one-sided Student-t lower confidence bound on the mean margin
(:func:`gate_across_seeds`).

D2 is batch-size independent: it is the gradient of each sample's *own* loss (the gradient of
the summed per-sample losses), where the research code took the mean loss, whose per-sample
gradients shrink as 1/N.  The default floor 1.28e-5 is the research code's floor at its eval
batch of 128 (``10 * 1e-8 * 128``).

Everything non-finite (a diverged model) makes every diagnostic fire, with a sentence saying
where; nothing here raises on NaN or Inf, and nothing non-finite passes.  The results are the
data classes of :mod:`fa_checks.report`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..direction import direction_from

# torch-free: one wording of D1-D3 for computed and read-back reports
from ..findings import depth_utility, reference_from_norms, scale_from_norms
from ..models.anatomy import Anatomy, anatomy_of, eval_mode, per_sample_gradients
from ..report import (
    DEFAULT_GRAD_FLOOR,
    DEFAULT_MAX_GROWTH,
    ReferenceValidity,
    Report,
    ScaleStability,
    Thresholds,
    divergence_of,
)
from . import metrics
from .credit import credit_metrics
from .seeds import gate_across_seeds  # torch-free; kept importable from here


# -- the diagnostics ---------------------------------------------------------------------------
def _layer_norms(tensors: Sequence[Tensor]) -> tuple[list[float], int | None, int]:
    """Median per-sample norm of each tensor, the first non-finite layer, and its bad samples.

    Norms are taken in float64 (a float32 square overflows above 1.8e19).  A layer where any
    sample is non-finite reports NaN (or Inf when no sample is NaN).
    """
    medians: list[float] = []
    first_bad, bad_count = None, 0
    for l, t in enumerate(tensors):
        norms = metrics.as_float64(t.reshape(t.shape[0], -1)).norm(dim=1)
        bad = ~torch.isfinite(norms)
        if bool(bad.any()):
            if first_bad is None:
                first_bad, bad_count = l, int(bad.sum())
            medians.append(math.nan if bool(torch.isnan(norms).any()) else math.inf)
        else:
            medians.append(float(norms.median()))
    return medians, first_bad, bad_count


def _non_finite_count(first_bad: int | None, bad_count: int, samples: int) -> str:
    return "" if first_bad is None else f" ({bad_count} of {samples} samples have NaN or Inf)"


def scale_stability(
    hidden: Sequence[Tensor],
    threshold: float = DEFAULT_MAX_GROWTH,
    *,
    residual: bool = True,
    terminal_layer_norm: bool = False,
) -> ScaleStability:
    """D1 from the hidden states ``[h_0..h_L]`` of one eval batch (worded by
    :func:`~fa_checks.findings.scale_from_norms`, as a report read back is)."""
    norms, first_bad, bad_count = _layer_norms(hidden)
    return scale_from_norms(norms, threshold,
                            stream="residual stream" if residual else "hidden state",
                            layer_norm=terminal_layer_norm,
                            bad_samples=_non_finite_count(first_bad, bad_count,
                                                          hidden[0].shape[0]))


def reference_validity(
    grads: Sequence[Tensor], floor: float = DEFAULT_GRAD_FLOOR
) -> ReferenceValidity:
    """D2 from each sample's own loss gradient at every hidden state ``[g_0..g_L]`` (worded
    by :func:`~fa_checks.findings.reference_from_norms`)."""
    norms, first_bad, bad_count = _layer_norms(grads)
    return reference_from_norms(norms, floor, bad_samples=_non_finite_count(
        first_bad, bad_count, grads[0].shape[0]))


def accuracy(model: nn.Module | Anatomy, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of ``x`` the model classifies as ``y``; a sample with any non-finite logit
    counts as wrong (a diverged model earns nothing).  Eval mode, no gradients, in batches."""
    anatomy = anatomy_of(model)  # its logits: a user's model may define no forward
    module = anatomy.model
    correct = 0
    with eval_mode(module), torch.no_grad():
        for start in range(0, int(x.shape[0]), batch_size):
            correct += correct_count(anatomy.logits(x[start:start + batch_size]),
                                     y[start:start + batch_size])
    return correct / max(int(x.shape[0]), 1)


def correct_count(logits: Tensor, y: Tensor) -> int:
    """How many samples' largest logit is the label, counting non-finite rows as wrong."""
    finite = torch.isfinite(logits).all(dim=1)
    return int(((logits.argmax(dim=1) == y) & finite).sum())


# -- the protocol ------------------------------------------------------------------------------
def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return None


def evaluate(
    model: nn.Module | Anatomy,
    x: Tensor,
    y: Tensor,
    *,
    baseline_acc: float | None = None,
    thresholds: Thresholds | None = None,
    method: Any = None,
    credit: Sequence[Tensor | None] | None = None,
    test_acc: float | None = None,
    directions: int = 32,
    epsilon: float = 1e-3,
    eta: float = 0.01,
    null_draws: int = 10,
    seed: int = 0,
) -> Report:
    """Run the protocol on ``model`` with the eval batch ``(x, y)``.

    ``baseline_acc``: the frozen-blocks baseline's test accuracy (a fraction); D3 is skipped
    when None.  ``test_acc``: the model's full test accuracy; accuracy on ``(x, y)`` when None.
    ``method``: a set-up :class:`fa_checks.methods.Method` whose ``credit(x, y)`` gives the
    credit signals (and whose feedback is redrawn ``null_draws`` times for the null);
    ``credit``: the signals ``[a_0..a_L]`` directly.  ``directions`` / ``epsilon``: rho's M and
    step; ``eta``: nudging's step; ``seed``: the random directions and redrawn feedback.

    The model is evaluated in eval mode (its mode is restored after) and gets no ``.grad``.
    """
    thresholds = thresholds or Thresholds()
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"evaluate needs a non-empty eval batch with one label per sample; got "
            f"{x.shape[0]} inputs and {y.shape[0]} labels"
        )
    for name, value in (("baseline_acc", baseline_acc), ("test_acc", test_acc)):
        if value is not None and math.isfinite(value) and not 0 <= value <= 1:
            raise ValueError(f"{name} is a fraction in [0, 1], got {value!r}")
    anatomy = anatomy_of(model)
    module = anatomy.model
    device = _device_of(module)
    if device is not None:
        x, y = x.to(device), y.to(device)
    with eval_mode(module):  # restores each submodule's own mode (e.g. a frozen BN's eval)
        hidden, grads, logits = per_sample_gradients(anatomy, x, y)
        d1 = scale_stability(
            hidden,
            thresholds.max_growth,
            residual=anatomy.residual,
            terminal_layer_norm=isinstance(getattr(module, "out_ln", None), nn.LayerNorm),
        )
        d2 = reference_validity(grads, thresholds.grad_floor)
        acc = correct_count(logits, y) / int(y.shape[0]) if test_acc is None else float(test_acc)
        d3 = depth_utility(acc, baseline_acc, thresholds.min_margin_pp,
                           divergence=divergence_of(d1, d2))
        if credit is None and method is not None:
            credit = method.credit(x, y)
            module.eval()  # a rule's credit() may restore the mode it found; keep eval here
        if credit is not None:  # per-sample (N, d) signals are spread over positions
            from ..methods.contract import fit_signals

            credit = fit_signals(method, credit, hidden, anatomy)
        summary = None
        if credit is not None:
            summary = credit_metrics(
                anatomy, hidden, grads, credit, y,
                thresholds=thresholds, method=method, x=x, directions=directions,
                epsilon=epsilon, eta=eta, null_draws=null_draws, seed=seed,
                reference_valid=not d2.fires,
            )
    d4 = direction_from(summary, d2.valid or [], alpha=thresholds.d4_alpha,
                        max_share=thresholds.d4_share, floor=thresholds.d4_floor,
                        gated=thresholds.gate_d4)
    return Report(test_acc=acc, d1=d1, d2=d2, d3=d3, credit=summary,
                  num_samples=int(x.shape[0]), d4=d4)


__all__ = [
    "DEFAULT_GRAD_FLOOR",
    "accuracy",
    "correct_count",
    "credit_metrics",
    "depth_utility",
    "evaluate",
    "gate_across_seeds",
    "reference_validity",
    "scale_stability",
]
