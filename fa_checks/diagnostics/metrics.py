"""The figures themselves, one tensor computation each: how well a credit signal ``a_l``
stands in for the gradient, and how a model's weights drift and align (no report, no verdict:
:mod:`.credit` gathers these per layer into a report's section).

Every figure compares a credit signal ``a_l`` (shaped like the hidden state ``h_l``) with the
true per-sample loss gradient ``g_l`` (:func:`~..anatomy.per_sample_gradients`), either
directly (cosines) or through the loss itself (perturbation correlation, nudging):

* :func:`cosine` -- per-sample cosine in float64 with a true epsilon (no 1e-8 clamp, which would
  report 0 for every sample once ``||g||`` falls below it).
* :func:`perturbation_correlation` -- Pearson correlation of the predicted loss change
  ``<a_i, eps v>`` with the true change ``loss(h + eps v) - loss(h)`` over M random unit
  directions per sample; the directions are batched in memory-bounded chunks.
* :func:`pooled_cosine` -- the limit of the above for many directions and small epsilon,
  ``sum_i <a_i, g_i> / sqrt(sum_i ||a_i||^2 sum_i ||g_i||^2)``, from one backward pass
  (:func:`perturbation_correlation_limit`).
* :func:`nudging` -- mean loss change after ``h <- h - eta a / rms(a)`` (negative is useful).
* :func:`fresh_feedback_null` -- the cosine a rule reaches with freshly drawn random feedback
  (chance level).
* :func:`feature_drift` and :func:`alignment` -- how far weights moved, how close feedback is to
  the forward weights' transpose.

Per-sample quantities are taken over every non-batch dimension, as in the anatomy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..models.anatomy import Anatomy, anatomy_of, eval_mode, per_sample_gradients, per_sample_loss

#: smallest positive float64: the denominator guard of the cosines.  It only matters when a
#: norm is exactly zero (the cosine is then 0), never for a small but nonzero gradient.
TINY = torch.finfo(torch.float64).tiny

#: elements of one chunk of perturbed hidden states.  On a CPU a chunk that stays near the
#: cache is fastest (measured at N=1024, d=256: 1-2 directions per chunk beat both the loop and
#: 32 at once); on an accelerator, large chunks fill the device while bounding memory.
CPU_CHUNK_ELEMENTS = 2**19
DEVICE_CHUNK_ELEMENTS = 2**25

LossFn = Callable[[Tensor], Tensor]


def as_float64(t: Tensor) -> Tensor:
    """``t`` detached in float64, on its device (on the CPU for MPS, which has no float64)."""
    device = torch.device("cpu") if t.device.type == "mps" else t.device
    return t.detach().to(device=device, dtype=torch.float64)


def _flat64(t: Tensor) -> Tensor:
    return as_float64(t.reshape(t.shape[0], -1))


def _check_pair(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


# -- cosines ---------------------------------------------------------------------------------
def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample cosine between ``a`` and ``b`` over all non-batch dims, float64, shape ``(N,)``.

    Accumulated in float64 with the smallest positive float64 as the only guard, so a gradient
    of norm 1e-12 still gives its true cosine; a sample where either side is exactly zero gets 0.
    NaN or Inf in the inputs gives NaN for that sample.
    """
    _check_pair(a, b, "cosine")
    a64, b64 = _flat64(a), _flat64(b)
    dot = (a64 * b64).sum(dim=1)
    return dot / (a64.norm(dim=1) * b64.norm(dim=1) + TINY)


def pooled_cosine(a: Tensor, g: Tensor) -> float:
    """``sum_i <a_i, g_i> / sqrt(sum_i ||a_i||^2 * sum_i ||g_i||^2)`` in float64.

    With ``g_i`` each sample's own loss gradient this is the limit of
    :func:`perturbation_correlation` for many directions and small epsilon: for a unit
    direction ``v`` uniform on the sphere, ``E[<a, v><g, v>] = <a, g> / D``, so the Pearson
    correlation over samples and directions tends to this ratio.
    """
    _check_pair(a, g, "pooled_cosine")
    a64, g64 = _flat64(a), _flat64(g)
    dot = (a64 * g64).sum()
    denominator = torch.sqrt(a64.pow(2).sum() * g64.pow(2).sum())
    return float(dot / (denominator + TINY))


# -- losses through the rest of the network --------------------------------------------------
class LayerLoss:
    """Per-sample loss of the network run on from hidden state ``h_l``: ``h -> (n,)``.

    It accepts any whole number of copies of the batch stacked along the first axis (row
    ``j * N + i`` is copy ``j`` of sample ``i``) and tiles the labels to match, so
    :func:`perturbation_correlation` can evaluate many directions in one forward pass.  That
    is what ``stackable = True`` announces.  Built-in models treat samples independently in
    eval mode, so stacking changes no figure.
    """

    stackable = True

    def __init__(self, model: nn.Module | Anatomy, layer: int, y: Tensor) -> None:
        self.anatomy = anatomy_of(model)
        if not 0 <= layer <= self.anatomy.num_blocks:
            raise ValueError(
                f"layer {layer} is outside h_0..h_{self.anatomy.num_blocks} of this model"
            )
        self.layer = layer
        self.y = y

    def __call__(self, h: Tensor) -> Tensor:
        copies, rest = divmod(h.shape[0], self.y.shape[0])
        if rest:
            raise ValueError(
                f"LayerLoss got {h.shape[0]} rows, not a multiple of the {self.y.shape[0]} labels"
            )
        y = self.y if copies == 1 else self.y.repeat(copies)
        return per_sample_loss(self.anatomy.forward_from(self.layer, h), y)


def layer_loss(model: nn.Module | Anatomy, layer: int, y: Tensor) -> LayerLoss:
    """The per-sample loss as a function of ``h_layer`` (see :class:`LayerLoss`)."""
    return LayerLoss(model, layer, y)


# -- perturbation correlation ---------------------------------------------------------------
def _losses_along(loss_fn: LossFn, perturbed: Tensor) -> Tensor:
    """``loss_fn`` of each of ``k`` perturbed copies ``(k, N, ...)`` of the batch: ``(k, N)``."""
    k, n = perturbed.shape[:2]
    if getattr(loss_fn, "stackable", False):
        return loss_fn(perturbed.reshape(k * n, *perturbed.shape[2:])).reshape(k, n)
    return torch.func.vmap(loss_fn)(perturbed)


def _chunk_size(h: Tensor, directions: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        return min(chunk_size, directions)
    budget = CPU_CHUNK_ELEMENTS if h.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    return max(1, min(directions, budget // max(1, h.numel())))


def pearson(x: Tensor, y: Tensor) -> float:
    """Pearson correlation of two equally long tensors, in float64.

    NaN when either side has no spread (e.g. a loss that does not change at float resolution):
    a correlation is then undefined, and reporting 0 would pass it off as a measurement.
    """
    x64 = as_float64(x.reshape(-1))
    y64 = as_float64(y.reshape(-1))
    xc, yc = x64 - x64.mean(), y64 - y64.mean()
    sxx, syy = xc.pow(2).sum(), yc.pow(2).sum()
    if not (sxx > 0 and syy > 0):
        return math.nan
    return float((xc * yc).sum() / torch.sqrt(sxx * syy))


def perturbation_correlation(
    h: Tensor,
    a: Tensor,
    loss_fn: LossFn,
    epsilon: float = 1e-3,
    M: int = 32,  # noqa: N803 - the name used in the literature and the issue
    generator: torch.Generator | None = None,
    *,
    chunk_size: int | None = None,
) -> float:
    """Pearson correlation between predicted and true loss changes along random directions.

    For each of ``M`` directions ``v`` (standard normal, scaled to unit norm per sample; drawn
    one after another from ``generator``, or the global generator when None) and each sample
    ``i``: predicted change ``<a_i, epsilon v_i>``, true change
    ``loss_fn(h + epsilon v)_i - loss_fn(h)_i``.  The result is the correlation over all
    ``M * N`` pairs.

    ``loss_fn`` maps hidden states ``(N, ...)`` to per-sample losses ``(N,)``.  Directions are
    evaluated in chunks of ``chunk_size`` directions (default: as many as fit in
    :data:`CPU_CHUNK_ELEMENTS` or :data:`DEVICE_CHUNK_ELEMENTS` elements):
    stacked along the batch axis when ``loss_fn.stackable`` is true (see :class:`LayerLoss`),
    otherwise through ``torch.func.vmap``.  Chunking changes no figure; everything stays on the
    device until the one scalar at the end.  NaN when either side has no spread.
    """
    _check_pair(h, a, "perturbation_correlation")
    if M < 2:
        raise ValueError(f"perturbation_correlation needs at least 2 directions, got M={M}")
    h = h.detach()
    n = h.shape[0]
    a_flat = a.detach().reshape(n, -1).to(h.dtype)
    k = _chunk_size(h, M, chunk_size)
    predicted, actual = [], []
    with torch.no_grad():
        base = loss_fn(h)
        for start in range(0, M, k):
            count = min(k, M - start)
            steps = torch.empty((count, *h.shape), dtype=h.dtype, device=h.device)
            for j in range(count):  # one draw per direction, so chunking changes no number
                steps[j].normal_(generator=generator)
            flat = steps.view(count, n, -1)
            flat.mul_((epsilon / flat.norm(dim=2)).unsqueeze(2))  # epsilon * unit direction
            predicted.append(torch.einsum("knd,nd->kn", flat, a_flat))
            actual.append(_losses_along(loss_fn, steps.add_(h)) - base)
    return pearson(torch.cat(predicted), torch.cat(actual))


def loss_gradient(h: Tensor, loss_fn: LossFn) -> Tensor:
    """Each sample's own loss gradient at ``h`` (the gradient of the summed per-sample loss)."""
    with torch.enable_grad():
        leaf = h.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(leaf).sum(), leaf)
    return grad


def perturbation_correlation_limit(h: Tensor, a: Tensor, loss_fn: LossFn) -> float:
    """The closed-form limit of :func:`perturbation_correlation` (many M, small epsilon).

    One backward pass for ``g = loss_gradient(h, loss_fn)``, then :func:`pooled_cosine`.
    """
    _check_pair(h, a, "perturbation_correlation_limit")
    return pooled_cosine(a, loss_gradient(h, loss_fn))


# -- nudging -------------------------------------------------------------------------------
def nudging(h: Tensor, a: Tensor, loss_fn: LossFn, eta: float = 0.01) -> float:
    """Mean per-sample loss change after ``h <- h - eta * a / rms(a)``; negative is useful.

    ``rms(a)`` is taken per sample over all non-batch dims, so every sample moves by the same
    RMS step ``eta`` whatever the scale of its signal; a sample whose signal is zero stays put.
    """
    _check_pair(h, a, "nudging")
    h = h.detach()
    a = a.detach()
    rms = a.reshape(a.shape[0], -1).pow(2).mean(dim=1).sqrt()
    rms = rms.clamp_min(torch.finfo(a.dtype).tiny).reshape(-1, *([1] * (a.dim() - 1)))
    with torch.no_grad():
        change = loss_fn(h - eta * a / rms) - loss_fn(h)
    return float(as_float64(change).mean())


# -- the fresh-feedback null ----------------------------------------------------------------
@dataclass
class FeedbackNull:
    """Cosines reached with freshly drawn feedback: the chance level of a rule's cosine.

    ``cosines[k][l]`` is the mean per-sample cosine at ``h_l`` for draw ``k``; ``mean`` and
    ``std`` (ddof 1) are over draws per layer; ``deep_*`` first average layers ``1..L``.
    """

    cosines: list[list[float]]
    mean: list[float]
    std: list[float]
    deep_mean: float | None
    deep_std: float | None

    @property
    def draws(self) -> int:
        return len(self.cosines)


def mean_cosines(credit: Sequence[Tensor | None], grads: Sequence[Tensor]) -> list[float | None]:
    """Mean per-sample cosine of each layer's credit with its gradient (None where no credit)."""
    if len(credit) != len(grads):
        raise ValueError(
            f"got {len(credit)} credit signals for {len(grads)} hidden states; a method's "
            "credit is one tensor per hidden state [a_0..a_L]"
        )
    pairs = zip(credit, grads, strict=True)
    return [None if a is None else float(cosine(a, g).mean()) for a, g in pairs]


def _shared_copy(method: Any) -> Any:
    """A copy of ``method`` whose feedback can be redrawn without touching the original.

    The model (every submodule, parameter and buffer: a rule may keep references to the layers
    it reroutes) and the optimizer are shared rather than copied: only the rule's own state
    (feedback matrices) is duplicated.
    """
    memo: dict[int, Any] = {}
    model = getattr(method, "model", None)
    if isinstance(model, nn.Module):
        for item in [*model.modules(), *model.parameters(), *model.buffers()]:
            memo[id(item)] = item
    optimizer = getattr(method, "optimizer", None)
    if optimizer is not None:
        memo[id(optimizer)] = optimizer
    return copy.deepcopy(method, memo)


def fresh_feedback_null(
    method: Any,
    x: Tensor,
    y: Tensor,
    *,
    draws: int = 10,
    seed: int = 0,
    reference: Sequence[Tensor] | None = None,
) -> FeedbackNull | None:
    """The method's cosine with the BP gradient when its feedback is freshly redrawn.

    A copy of the (set-up) method redraws its random feedback ``draws`` times from a generator
    seeded ``seed`` on the model's device; each time the per-layer mean cosine of its credit
    with ``reference`` (each sample's own gradient at each hidden state; computed when None)
    is recorded.  None when the method has no feedback to redraw (``redraw_feedback`` returns
    False) or no credit signal.
    """
    if draws < 2:
        raise ValueError(f"fresh_feedback_null needs at least 2 draws for a spread, got {draws}")
    model = method.model
    if reference is None:
        with eval_mode(model):  # as the credit is taken; train mode would move BN statistics
            reference = per_sample_gradients(model, x, y)[1]
    device = next(iter(model.parameters()), torch.empty(0)).device
    generator = torch.Generator(device=device).manual_seed(seed)
    clone = _shared_copy(method)
    cosines: list[list[float]] = []
    for _ in range(draws):
        if not clone.redraw_feedback(generator):
            return None
        credit = clone.credit(x, y)
        if credit is None:
            return None
        cosines.append([math.nan if c is None else c for c in mean_cosines(credit, reference)])
    per_layer = torch.tensor(cosines, dtype=torch.float64)  # (draws, L+1)
    deep = per_layer[:, 1:].mean(dim=1) if per_layer.shape[1] > 1 else None
    return FeedbackNull(
        cosines=cosines,
        mean=per_layer.mean(dim=0).tolist(),
        std=per_layer.std(dim=0).tolist(),
        deep_mean=None if deep is None else float(deep.mean()),
        deep_std=None if deep is None else float(deep.std()),
    )


# -- weights -------------------------------------------------------------------------------
def _tensors(state: Mapping[str, Tensor] | nn.Module) -> Mapping[str, Tensor]:
    return state.state_dict() if isinstance(state, nn.Module) else state


def feature_drift(
    initial: Mapping[str, Tensor] | nn.Module, final: Mapping[str, Tensor] | nn.Module
) -> dict[str, float]:
    """Relative weight change ``||W_final - W_init||_F / ||W_init||_F`` per named tensor.

    Takes state dicts or modules.  Tensors that are not floating point (counters) or whose
    initial norm is zero (biases and LayerNorm shifts that start at 0: their relative drift is
    undefined) are left out.  A name missing from ``final`` or a changed shape is a ValueError.
    """
    before, after = _tensors(initial), _tensors(final)
    drift: dict[str, float] = {}
    for name, w0 in before.items():
        if not torch.is_floating_point(w0):
            continue
        if name not in after:
            raise ValueError(f"feature_drift: {name!r} is in the initial state but not the final")
        w1 = after[name]
        if w1.shape != w0.shape:
            raise ValueError(
                f"feature_drift: {name!r} changed shape {tuple(w0.shape)} -> {tuple(w1.shape)}"
            )
        w0_64, w1_64 = as_float64(w0), as_float64(w1.to(w0.device))
        norm = float(w0_64.norm())
        if norm > 0:
            drift[name] = float((w1_64 - w0_64).norm()) / norm
    return drift


class Alignment(NamedTuple):
    """How close feedback ``B`` is to the forward weights' transpose ``W^T``."""

    #: ``||B - W^T||_F / ||W||_F``: 0 when B equals W^T; sqrt(2) for an orthogonal B of W's norm
    ratio: float
    #: angle in degrees between ``vec(B)`` and ``vec(W^T)``: 0 when parallel, 90 when orthogonal
    angle_deg: float


def alignment(W: Tensor, B: Tensor) -> Alignment:  # noqa: N803 - matrix names
    """Alignment of feedback ``B`` with ``W^T``, for ``W`` shaped ``(out, in)`` (nn.Linear).

    Two definitions, both in float64 over the whole matrices: the relative distance
    ``||B - W^T||_F / ||W||_F`` (the research code's figure; sensitive to scale) and the angle
    ``arccos(<vec B, vec W^T> / (||B||_F ||W||_F))`` in degrees (scale-free).  A zero ``W``
    gives an infinite ratio (NaN if B is zero too); a zero matrix on either side gives a NaN
    angle.
    """
    if B.shape != W.T.shape:
        raise ValueError(
            f"alignment: B must be shaped like W^T {tuple(W.T.shape)}, got {tuple(B.shape)}"
        )
    wt = as_float64(W.T)
    b = as_float64(B).to(wt.device)
    w_norm, b_norm = float(wt.norm()), float(b.norm())
    diff = float((b - wt).norm())
    ratio = diff / w_norm if w_norm > 0 else (math.inf if diff > 0 else math.nan)
    if w_norm > 0 and b_norm > 0:
        # 2 atan2(|u - v|, |u + v|) for unit u, v: arccos of the cosine loses half the digits
        # near 0 and 180 degrees (an angle of 1e-6 degrees out of two parallel matrices)
        u, v = b / b_norm, wt / w_norm
        angle = math.degrees(2.0 * math.atan2(float((u - v).norm()), float((u + v).norm())))
    else:
        angle = math.nan
    return Alignment(ratio=ratio, angle_deg=angle)


__all__ = [
    "Alignment",
    "FeedbackNull",
    "LayerLoss",
    "alignment",
    "as_float64",
    "cosine",
    "feature_drift",
    "fresh_feedback_null",
    "layer_loss",
    "loss_gradient",
    "mean_cosines",
    "nudging",
    "pearson",
    "perturbation_correlation",
    "perturbation_correlation_limit",
    "pooled_cosine",
]
