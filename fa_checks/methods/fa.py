"""Feedback alignment (``fa``): fixed random feedback carries the error down, layer by layer.

Rule on residual models (the seeds' residual form).  ``a_L`` is the true gradient of the head's
mean cross-entropy at ``h_L`` (through the readout), then ``a_l = a_{l+1} @ B_l`` along the
feature axis, top-down, with fixed ``B_l`` of shape ``(d_{l+1}, d_l)`` and std
``1/sqrt(d_{l+1})`` (the seeds: ``(d, d)``, ``1/sqrt(d)``).  Block ``l`` learns from ``a_{l+1}``,
the embedding from ``a_0``, through the RMS-normalised local loss of
:mod:`fa_checks.methods.local` (options ``penalty`` and ``clip``).

On a plain stack (``anatomy.residual`` is False, e.g. the ``mlp`` arch) ``fa`` is classic
layerwise feedback alignment instead: every Linear's input gradient goes through a fixed random
``B`` in place of ``W^T`` (:class:`fa_checks.methods.feedback.ClassicFA`).

Where the seeds differ: for vit they fed every token the class token's gradient; here ``a_L`` is
the gradient at the whole ``h_L`` (zero at tokens the readout ignores), so ``credit`` is the signal
each position really gets.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.anatomy import anatomy_of
from .base import Figures, Method, MethodError, OptimizerFactory, default_optimizer, register
from .local import LocalLossMethod, along_features


class ResidualFA(LocalLossMethod):
    """FA's residual form; registered through :class:`FA`, which picks it for residual models."""

    name = "fa"

    def feedback_specs(self) -> list[tuple[tuple[int, ...], float]]:
        dims = self.feature_dims()
        return [
            ((dims[l + 1], dims[l]), 1.0 / math.sqrt(dims[l + 1])) for l in range(len(dims) - 1)
        ]

    def local_credit(self, hidden: list[Tensor], logits: Tensor, y: Tensor) -> list[Tensor]:
        assert self.anatomy is not None
        with torch.enable_grad():
            h_last = hidden[-1].detach().requires_grad_(True)
            head_loss = F.cross_entropy(self.anatomy.readout(h_last), y)
            (a,) = torch.autograd.grad(head_loss, h_last)
        credits = [a]
        for b in reversed(self.feedback):
            a = along_features(a, b, self.anatomy.feature_axis)
            credits.append(a)
        return credits[::-1]


@register
class FA(Method):
    """``fa`` on any model: the residual form, or classic layerwise FA on a plain stack.

    The choice needs the model, so it is made in ``setup``: the chosen rule is set up on the
    model and this object hands every call to it (``self.rule``); attributes such as
    ``feedback`` are the rule's.
    """

    name = "fa"

    def __init__(self, penalty: float = 0.0, clip: float | None = None) -> None:
        checked = ResidualFA(penalty=penalty, clip=clip)  # validates the options
        super().__init__(**checked.options)
        self.rule: Method | None = None

    def setup(
        self,
        model: nn.Module,
        num_classes: int,
        generator: torch.Generator,
        optimizer: OptimizerFactory = default_optimizer,
    ) -> None:
        rule: Method
        if anatomy_of(model).residual:
            rule = ResidualFA(**self.options)
        else:
            if self.options["penalty"] or self.options["clip"] is not None:
                raise MethodError(
                    "method 'fa' on a non-residual model is classic layerwise feedback "
                    "alignment, which takes no penalty or clip option"
                )
            from .feedback import ClassicFA  # written alongside; imported only when needed

            rule = ClassicFA()
        rule.setup(model, num_classes, generator, optimizer)
        self.rule = rule
        self.model, self.anatomy = rule.model, rule.anatomy
        self.num_classes, self.optimizer = rule.num_classes, rule.optimizer

    def _rule(self) -> Method:
        if self.rule is None:
            raise MethodError("method 'fa' is not set up: call setup(model, ...) first")
        return self.rule

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes FA itself lacks (e.g. ``feedback``): the rule's.
        rule = self.__dict__.get("rule")
        if rule is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(rule, name)

    def trainable_parameters(self) -> list[Any]:
        return self._rule().trainable_parameters()

    def step(self, x: Tensor, y: Tensor) -> Figures:
        return self._rule().step(x, y)

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor] | None:
        return self._rule().credit(x, y)

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self._rule().epoch_start(epoch, epochs)

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        return self._rule().redraw_feedback(generator)

    def state_dict(self) -> dict[str, Tensor]:
        return self._rule().state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._rule().load_state_dict(state)
