"""Kolen-Pollack (Kolen & Pollack 1994; Akrout et al. 2019): feedback that learns W's update.

Rule: as feedback alignment, each weight layer sends the error to its input through its own B
(stored like W, so B = W is backpropagation), starting random.  B receives exactly the update
of W: its gradient is W's gradient and it sits in the same optimizer with the same settings
(learning rate, schedule, moments, decoupled weight decay).  The two updates then differ only by
the decay, so ``B_t - W_t = prod_s (1 - lr_s * wd) * (B_0 - W_0)``: B converges to W
geometrically at the weight-decay rate (with no weight decay the gap stays constant).
"""

from __future__ import annotations

from typing import Any

from .base import register
from .feedback import LayerwiseFeedbackMethod


@register
class KolenPollack(LayerwiseFeedbackMethod):
    """kp: B random at first, then updated with W's gradient by W's optimizer."""

    name = "kp"

    def trainable_parameters(self) -> list[Any]:
        return [*super().trainable_parameters(), *self.feedback]

    def after_backward(self) -> dict[str, float]:
        for b, w in zip(self.feedback, self.weights(), strict=True):
            b.grad = None if w.grad is None else w.grad.detach().clone()
        return {}
