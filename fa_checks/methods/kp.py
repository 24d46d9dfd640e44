"""Kolen-Pollack (Kolen & Pollack 1994; Akrout et al. 2019): feedback that learns W's update.

Rule, per training step t and per weight layer (B stored like W, so B = W is backpropagation):
``W <- (1 - lr_t * decay) W - update``, ``B <- (1 - lr_t * decay) B - update``, with the same
``update`` (W's gradient through W's optimizer) and ``lr_t`` the learning rate of W's parameter
group at that step; so ``B - W <- (1 - lr_t * decay) (B - W)`` and, at a constant rate, after k
steps ``B_k - W_k = (1 - lr * decay)^k (B_0 - W_0)``: B converges to W geometrically.

As in feedback alignment, each layer sends the error to its input through its own B, which
starts random.  B's gradient is W's gradient and B sits in W's optimizer with the same settings
(learning rate, schedule, moments, decoupled weight decay ``wd``), so both get the same update,
and the optimizer's own decay multiplies the gap by a further ``(1 - lr_t * wd)`` a step.

``decay`` is Akrout et al.'s lambda, the rule's own, in the units of a decoupled weight decay
(scaled by the learning rate, so it follows the schedule and stops when learning stops), applied
to the layers' weight matrices and their B only (biases and normalisation parameters have no
feedback twin).  It is what makes B align: under the default AdamW (lr 1e-3, wd 0.01) alone,
``B - W`` kept 99.3% of its size over 20 epochs of MNIST-1D on the ``mlp`` and B stayed 77-86
degrees from W.  With the default ``decay=5`` the gap shrinks by ``exp(-5 * sum_t lr_t)``,
about ``exp(-3.3)`` over those 20 cosine-scheduled epochs (1,260 steps, ``sum_t lr_t = 0.66``),
and B ends 31-52 degrees from W (``decay=10``: 2-6 degrees, at a cost in accuracy on
``resmlp``).  ``decay=0`` is the rule without its own decay.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .base import MethodError, register
from .feedback import LayerwiseFeedbackMethod

#: B - W shrinks by exp(-decay * sum of the learning rates): 5 takes 20 MNIST-1D epochs at lr
#: 1e-3 (cosine) to about 4% of the initial gap (measured angles in the module docstring)
DEFAULT_DECAY = 5.0


@register
class KolenPollack(LayerwiseFeedbackMethod):
    """kp: B random at first, then W's update; W and B both decay by ``lr * decay`` a step."""

    name = "kp"

    def __init__(self, *, decay: float = DEFAULT_DECAY, gain: float | None = None) -> None:
        if (isinstance(decay, bool) or not isinstance(decay, int | float)
                or not math.isfinite(decay) or decay < 0):
            raise MethodError(
                f"option decay must be a finite number >= 0 (W and B each lose lr * decay of "
                f"themselves a step), got {decay!r}"
            )
        super().__init__(gain=gain)
        self.options["decay"] = float(decay)

    def trainable_parameters(self) -> list[Any]:
        return [*super().trainable_parameters(), *self.feedback]

    def after_backward(self) -> dict[str, float]:
        with torch.no_grad():
            for b, w in zip(self.feedback, self.weights(), strict=True):
                b.grad = None if w.grad is None else w.grad.detach().clone()
                keep = self.keep_fraction(w)
                if keep != 1.0:
                    w.mul_(keep)
                    b.mul_(keep)
        return {}

    def keep_fraction(self, weight: Tensor) -> float:
        """``1 - lr * decay`` for ``weight`` at this step (lr of its optimizer group)."""
        decay = self.options["decay"]
        if not decay:
            return 1.0
        assert self.optimizer is not None
        groups = self.__dict__.setdefault("_groups", {})  # weight -> its group, found once
        if id(weight) not in groups:
            groups[id(weight)] = next((g for g in self.optimizer.param_groups
                                       if any(p is weight for p in g["params"])), None)
        group = groups[id(weight)]
        try:
            lr = float(group["lr"]) if group is not None else math.nan
        except (KeyError, TypeError, ValueError, RuntimeError):
            lr = math.nan
        if not math.isfinite(lr):
            raise MethodError(
                "method 'kp' with decay > 0 needs an optimizer with a learning rate 'lr' in the "
                "parameter group of every weight; give decay=0 for another optimizer"
            )
        keep = 1.0 - lr * decay
        if keep <= 0.0:
            raise MethodError(
                f"method 'kp': lr * decay = {lr * decay:g} would remove all of W and B in one "
                f"step; choose decay below {1.0 / lr:g}"
            )
        return keep
