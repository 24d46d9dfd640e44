"""The credit section of a report: runs the figures of :mod:`.metrics` over a model's layers
and judges them, into one :class:`~fa_checks.report.CreditMetrics` with its sentence.

For every hidden state h_l where a method gives a credit signal a_l: the mean per-sample cosine
with the BP gradient, the pooled cosine, the perturbation correlation rho, nudging, and (given
the method) the fresh-feedback null; see :mod:`.metrics` for each figure.  The opt-in
gates (``--min-cosine``, ``--min-rho``) compare the means over the deep layers h_1..h_L.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..findings import credit_sentence, deep_mean
from ..models.anatomy import Anatomy, anatomy_of
from ..report import CreditMetrics, Thresholds
from . import metrics
from .direction import DirectionProbe, feedback_null, spread


def credit_metrics(
    model: nn.Module | Anatomy,
    hidden: Sequence[Tensor],
    grads: Sequence[Tensor],
    credit: Sequence[Tensor | None],
    y: Tensor,
    *,
    thresholds: Thresholds | None = None,
    method: Any = None,
    x: Tensor | None = None,
    directions: int = 32,
    epsilon: float = 1e-3,
    eta: float = 0.01,
    null_draws: int = 10,
    seed: int = 0,
    reference_valid: bool = True,
) -> CreditMetrics:
    """Per-layer cosine, pooled cosine, rho, nudging and (given a method) the fresh-feedback null.

    ``hidden`` / ``grads``: the hidden states and each sample's own gradient at them;
    ``credit``: ``[a_0..a_L]`` shaped like ``hidden``.  The random directions of rho come from
    a generator seeded ``seed + l`` for layer l, so a report is reproducible; the null's
    redrawn signals are taken along the same directions (D4's null of rho).
    """
    thresholds = thresholds or Thresholds()
    anatomy = anatomy_of(model)
    if len(credit) != len(hidden):
        raise ValueError(
            f"got {len(credit)} credit signals for {len(hidden)} hidden states h_0..h_"
            f"{len(hidden) - 1}; a method's credit is one tensor per hidden state [a_0..a_L]"
        )
    signals: list[Tensor | None] = []
    for l, (a, h) in enumerate(zip(credit, hidden, strict=True)):
        if a is not None and tuple(a.shape) != tuple(h.shape):
            raise ValueError(
                f"credit signal a_{l} has shape {tuple(a.shape)}, but h_{l} has shape "
                f"{tuple(h.shape)}"
            )
        signals.append(None if a is None else a.detach().to(h.device))
    cos, pooled, rho, nudge = [], [], [], []
    bad_layers = []
    probes: list[DirectionProbe | None] = []
    for l, a in enumerate(signals):
        if a is None:
            for column in (cos, pooled, rho, nudge):
                column.append(None)
            probes.append(None)
            continue
        if not bool(torch.isfinite(a).all()):
            bad_layers.append(l)
        loss_fn = metrics.layer_loss(anatomy, l, y)
        cos.append(float(metrics.cosine(a, grads[l]).mean()))
        pooled.append(metrics.pooled_cosine(a, grads[l]))
        # the same directions as metrics.perturbation_correlation with a generator seeded
        # seed + l; D4 judges only the blocks' layers h_1..h_L, so h_0's probe is not kept
        probe = DirectionProbe(hidden[l], loss_fn, epsilon=epsilon, M=directions, seed=seed + l)
        rho.append(probe.rho(a))
        probes.append(probe if l > 0 else None)
        nudge.append(metrics.nudging(hidden[l], a, loss_fn, eta=eta))
    null, rho_null = None, None
    if method is not None and x is not None and null_draws >= 2:
        found = feedback_null(method, x, y, grads, probes, draws=null_draws, seed=seed)
        if found is not None:
            null, rho_draws = found
            rho_null = spread(rho_draws, len(hidden))
    credit = CreditMetrics(
        cosine=cos,
        pooled_cosine=pooled,
        rho=rho,
        nudging=nudge,
        null_mean=None if null is None else null.mean,
        null_std=None if null is None else null.std,
        null_draws=0 if null is None else null.draws,
        deep_cosine=deep_mean(cos),
        deep_rho=deep_mean(rho),
        null_deep_mean=None if null is None else null.deep_mean,
        null_deep_std=None if null is None else null.deep_std,
        min_cosine=thresholds.min_cosine,
        min_rho=thresholds.min_rho,
        null_rho_mean=None if rho_null is None else rho_null[0],
        null_rho_std=None if rho_null is None else rho_null[1],
    )
    credit.judge()
    credit.explanation = credit_sentence(credit, len(hidden) - 1, reference_valid=reference_valid,
                                         non_finite_layers=bad_layers)
    return credit


__all__ = ["credit_metrics"]
