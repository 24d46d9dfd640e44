"""Backpropagation (``bp``): the reference every other rule is measured against.

Rule.  One forward pass through the anatomy, the mean cross-entropy, ``backward``, one optimizer
step.  Its credit is the true gradient: each sample's own loss gradient at every hidden state
(:func:`fa_checks.models.anatomy.per_sample_gradients`, eval mode).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..models.anatomy import Anatomy, eval_mode, per_sample_gradients
from .base import Figures, Method, MethodError, register


@register
class BP(Method):
    name = "bp"

    def __init__(self) -> None:  # no options: a misspelt one must be an error, not ignored
        super().__init__()

    def _attached(self) -> Anatomy:
        if self.anatomy is None or self.optimizer is None:
            raise MethodError(f"method {self.name!r} is not set up: call setup(model, ...) first")
        return self.anatomy

    def step(self, x: Tensor, y: Tensor) -> Figures:
        anatomy = self._attached()
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(anatomy.logits(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor] | None:
        anatomy = self._attached()
        with eval_mode(anatomy.model):
            _, grads, _ = per_sample_gradients(anatomy, x, y)
        return grads
