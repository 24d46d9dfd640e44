"""Sign-concordant feedback (Liao, Leibo & Poggio 2016), as in the BioTorch benchmark.

Rule: every weight layer sends the error to its input through ``B = M * sign(W)`` (B stored
like W; see :mod:`fa_checks.methods.feedback`), with ``sign(W)`` taken from the *current*
weights at every step and the magnitude M

* ``usf``  (uniform):              ``M = gain / sqrt(fan_out)``, the same for every entry;
* ``brsf`` (batchwise random):     ``M = |R|``, ``R ~ N(0, (gain / sqrt(fan_out))^2)`` redrawn
  before every training batch;
* ``frsf`` (fixed random):         ``M = |R|`` drawn once.

Scale: ``gain / sqrt(fan_out)`` is the std of classic FA's random B (the research code's
``init_mats``; gain sqrt(2) for ReLU networks, else 1), so the whole family shares one backward
scale.  BioTorch 0.0.16 (``layers/fa_constructor``) always scales uSF's ``sign(W)`` by the std of
its layer initialisation, ``sqrt(2 / (fan_in + fan_out))`` under its default Xavier init
(``1 / sqrt(3 fan_in)`` under PyTorch's default init), and draws the brsf/frsf magnitudes from
that uniform init; we take ``|R|`` of a normal R so B stays sign-concordant by construction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import register
from .feedback import LayerwiseFeedbackMethod, fan_out


class SignConcordantFeedback(LayerwiseFeedbackMethod):
    """``B = magnitude * sign(W)``; subclasses say what the magnitude is."""

    name = "sign_concordant"
    state_prefix = "magnitude"

    def current_feedback(self) -> list[Tensor]:
        with torch.no_grad():
            return [
                m * torch.sign(w.detach())
                for m, w in zip(self.magnitudes(), self.weights(), strict=True)
            ]

    def magnitudes(self) -> list[Tensor]:
        return self.feedback

    def draw_state(self, weight: Tensor, generator: torch.Generator) -> Tensor:
        return self.draw_random(weight, generator).abs()


@register
class UniformSignFeedback(SignConcordantFeedback):
    """usf: ``B = gain / sqrt(fan_out) * sign(W)``; nothing random, nothing stored."""

    name = "usf"

    def init_state(self, generator: torch.Generator) -> None:
        super().init_state(generator)
        self.feedback = []  # B is a function of W alone

    def magnitudes(self) -> list[Tensor]:
        return [
            torch.tensor(self.gain / math.sqrt(fan_out(w)), dtype=w.dtype, device=w.device)
            for w in self.weights()
        ]


@register
class BatchwiseRandomSignFeedback(SignConcordantFeedback):
    """brsf: ``B = |R| * sign(W)`` with R redrawn before every batch from the rule's own stream.

    The stream is seeded from the setup generator, so training is deterministic.  The last draw
    is stored (``magnitude.<i>``) so ``credit`` is reproducible from a checkpoint.  There is no
    fixed draw to compare against, so ``redraw_feedback`` declines (the fresh-feedback null of
    this rule would be the rule itself).
    """

    name = "brsf"

    def init_state(self, generator: torch.Generator) -> None:
        assert self.model is not None
        device = next(self.model.parameters()).device
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        self.stream = torch.Generator(device=device).manual_seed(seed)
        super().init_state(generator)

    def prepare_step(self) -> None:
        with torch.no_grad():
            for m, w in zip(self.feedback, self.weights(), strict=True):
                m.copy_(self.draw_state(w, self.stream))

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        return False


@register
class FixedRandomSignFeedback(SignConcordantFeedback):
    """frsf: ``B = |R| * sign(W)`` with R drawn once; ``redraw_feedback`` draws a fresh |R|."""

    name = "frsf"
