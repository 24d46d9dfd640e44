"""The figures D4 judges: rho along shared directions, the fresh-feedback null of cosine and rho.

D4 asks whether the signal that trains each block beats what freshly drawn random feedback
would give (:mod:`fa_checks.direction` judges it).  That needs the null of *both* figures the
research code used, the cosine and the perturbation correlation rho.  A rho of a redrawn
signal is cheap when it is taken along the same random directions as the rule's own: the true
loss changes along them (the forward passes, rho's whole cost) are computed once per layer by a
:class:`DirectionProbe`, and each further signal only regenerates the directions from their
seed and projects itself onto them.  Sharing the directions also pairs the comparison: the
noise of a finite M falls on the rule and on the null alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from . import metrics
from .metrics import FeedbackNull, LossFn


class DirectionProbe:
    """rho at one hidden state for any number of signals, along one set of random directions.

    ``rho(a)`` equals :func:`~.metrics.perturbation_correlation` ``(h, a, loss_fn, epsilon, M,
    generator seeded seed)``: the same directions in the same order (one draw per direction,
    so chunking changes no number), the same true loss changes, computed here once.
    """

    def __init__(self, h: Tensor, loss_fn: LossFn, *, epsilon: float = 1e-3, M: int = 32,  # noqa: N803
                 seed: int = 0, chunk_size: int | None = None) -> None:
        if M < 2:
            raise ValueError(f"perturbation correlation needs at least 2 directions, got M={M}")
        self.h = h.detach()
        self.epsilon, self.M, self.seed = float(epsilon), int(M), int(seed)
        self.chunk = metrics._chunk_size(self.h, self.M, chunk_size)
        actual = []
        with torch.no_grad():
            base = loss_fn(self.h)
            for steps in self._directions():
                actual.append(metrics._losses_along(loss_fn, steps.add_(self.h)) - base)
        self.actual = torch.cat(actual)  # (M, N): small, kept for every later signal

    def _directions(self) -> Iterator[Tensor]:
        """``epsilon`` x unit directions, ``(k, *h.shape)`` per chunk, from the probe's seed."""
        h = self.h
        n = h.shape[0]
        generator = torch.Generator(device=h.device).manual_seed(self.seed)
        for start in range(0, self.M, self.chunk):
            count = min(self.chunk, self.M - start)
            steps = torch.empty((count, *h.shape), dtype=h.dtype, device=h.device)
            for j in range(count):
                steps[j].normal_(generator=generator)
            flat = steps.view(count, n, -1)
            flat.mul_((self.epsilon / flat.norm(dim=2)).unsqueeze(2))
            yield steps

    def rho(self, a: Tensor) -> float:
        """Pearson correlation of ``<a_i, epsilon v>`` with the true loss change."""
        return self.rhos([a])[0]

    def rhos(self, signals: Sequence[Tensor]) -> list[float]:
        """:meth:`rho` of each signal, the directions drawn once for all of them."""
        n = self.h.shape[0]
        flat = []
        for a in signals:
            metrics._check_pair(self.h, a, "perturbation_correlation")
            flat.append(a.detach().reshape(n, -1).to(self.h.dtype))
        predicted: list[list[Tensor]] = [[] for _ in flat]
        with torch.no_grad():
            for steps in self._directions():
                view = steps.view(steps.shape[0], n, -1)
                for out, a_flat in zip(predicted, flat, strict=True):
                    out.append(torch.einsum("knd,nd->kn", view, a_flat))
        return [metrics.pearson(torch.cat(p), self.actual) for p in predicted]


#: the most elements of redrawn signals :func:`feedback_null` keeps at once (float32: 256 MB)
NULL_SIGNAL_ELEMENTS = 2**26


def feedback_null(
    method: Any,
    x: Tensor,
    y: Tensor,
    reference: Sequence[Tensor],
    probes: Sequence[DirectionProbe | None],
    *,
    draws: int = 10,
    seed: int = 0,
) -> tuple[FeedbackNull, list[list[float | None]]] | None:
    """The fresh-feedback null of the cosine (as :func:`~.metrics.fresh_feedback_null`, the same
    draws from the same seed) and of rho at every layer with a probe: ``(null, rho_draws)``,
    ``rho_draws[k][l]`` None where layer l has no probe.  None when the rule has no random
    feedback to redraw or no credit signal."""
    if draws < 2:
        raise ValueError(f"the fresh-feedback null needs at least 2 draws for a spread, got "
                         f"{draws}")
    device = next(iter(method.model.parameters()), torch.empty(0)).device
    generator = torch.Generator(device=device).manual_seed(seed)
    clone = metrics._shared_copy(method)
    cosines: list[list[float]] = []
    # each layer's redrawn signals are kept (up to a budget) so its directions are drawn once
    # for every draw: regenerating them costs more than the projections (measured: 3.1 s of
    # 6.8 s CPU for a d=256 L=4 ResMLP at N=1024 when drawn again per draw)
    kept: list[list[Tensor | None]] = []
    budget = NULL_SIGNAL_ELEMENTS
    for _ in range(draws):
        if not clone.redraw_feedback(generator):
            return None
        credit = clone.credit(x, y)
        if credit is None:
            return None
        cosines.append([math.nan if c is None else c
                        for c in metrics.mean_cosines(credit, reference)])
        signals: list[Tensor | None] = []
        for p, a in zip(probes, credit, strict=True):
            if p is None or a is None:
                signals.append(None)
            elif budget >= a.numel():
                budget -= a.numel()
                signals.append(a)
            else:  # over the budget: this draw's rho now, along directions drawn again
                signals.append(torch.tensor(p.rho(a), dtype=torch.float64))
        kept.append(signals)
    rhos: list[list[float | None]] = [[None] * len(probes) for _ in range(draws)]
    for l, probe in enumerate(probes):
        if probe is None:
            continue
        held = [k for k in range(draws) if kept[k][l] is not None and kept[k][l].dim() > 0]
        for k, value in zip(held, probe.rhos([kept[k][l] for k in held]), strict=True):
            rhos[k][l] = value
        for k in range(draws):
            signal = kept[k][l]
            if signal is not None and signal.dim() == 0:
                rhos[k][l] = float(signal)
    per_layer = torch.tensor(cosines, dtype=torch.float64)  # (draws, L+1)
    deep = per_layer[:, 1:].mean(dim=1) if per_layer.shape[1] > 1 else None
    null = FeedbackNull(
        cosines=cosines,
        mean=per_layer.mean(dim=0).tolist(),
        std=per_layer.std(dim=0).tolist(),
        deep_mean=None if deep is None else float(deep.mean()),
        deep_std=None if deep is None else float(deep.std()),
    )
    return null, rhos


#: the training history's direction figures: a slice of the eval batch and a few null draws
#: (the cosine means converge with N and the null's spread comes from the draw, so a slice
#: tells the trend; the verdict uses the whole batch and 10 draws).  Cost: benchmarks/README.md
HISTORY_SAMPLES = 128
HISTORY_NULL_DRAWS = 3


def credit_history(method: Any, x: Tensor, y: Tensor, grads: Sequence[Tensor], *,
                   samples: int = HISTORY_SAMPLES, draws: int = HISTORY_NULL_DRAWS,
                   seed: int = 0) -> dict[str, Any]:
    """One epoch's direction figures: the mean cosine of the rule's credit with each sample's
    gradient per layer, and the fresh-feedback null (mean, std over ``draws``) where the rule
    has feedback to redraw; on the first ``samples`` of the eval batch.  Empty for a rule with
    no credit signal.  The global random state is left as found, so recording this changes no
    training run."""
    n = min(int(samples), int(x.shape[0]))
    x, y = x[:n], y[:n]
    reference = [g[:n] for g in grads]
    with torch.random.fork_rng(devices=[]):
        credit = method.credit(x, y)
        if credit is None:
            return {}
        figures: dict[str, Any] = {"credit_cosine": metrics.mean_cosines(credit, reference)}
        null = metrics.fresh_feedback_null(method, x, y, draws=draws, seed=seed,
                                           reference=reference)
    if null is not None:
        figures.update(credit_null_mean=null.mean, credit_null_std=null.std)
    return figures


def spread(draws: Sequence[Sequence[float | None]], layers: int
           ) -> tuple[list[float | None], list[float | None]]:
    """Mean and std (ddof 1) over draws of each layer's figure; None where a layer has none."""
    means: list[float | None] = []
    stds: list[float | None] = []
    for l in range(layers):
        column = [d[l] for d in draws if l < len(d) and d[l] is not None]
        if len(column) < 2:
            means.append(None)
            stds.append(None)
            continue
        values = torch.tensor(column, dtype=torch.float64)
        means.append(float(values.mean()))
        stds.append(float(values.std()))
    return means, stds


__all__ = ["HISTORY_NULL_DRAWS", "HISTORY_SAMPLES", "DirectionProbe", "credit_history",
           "feedback_null", "spread"]
