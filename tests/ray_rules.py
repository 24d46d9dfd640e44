"""Training rules for the Ray and error tests, named ``ray_rules:Class``: slow, failing, endless.

They live in a plain module beside the tests, as a user's rule would: a Ray worker can import
them only if the module travels to it (``py_modules``).
"""

from __future__ import annotations

import operator
import time
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from fa_checks import Method
from fa_checks.methods.bp import BP

STEP_MESSAGE = "this rule's step fails on purpose"


def line_of(text: str) -> int:
    """The line of this module on which ``text`` stands: where a rule here raises."""
    [number] = [n for n, line in enumerate(Path(__file__).read_text().splitlines(), start=1)
                if text in line]
    return number


class RaisesInStep(Method):
    """Backpropagation for one step, then a RuntimeError: a bug in a user's rule."""

    name = "raises-in-step"

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        self.steps += 1
        if self.steps > 1:
            raise RuntimeError(STEP_MESSAGE)
        self.optimizer.zero_grad()
        loss = F.cross_entropy(self.anatomy.logits(x), y)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}


class FaultInStep(Method):
    """A stand-in for a bug of fa-checks: ``step`` is a standard-library function that the
    trainer calls with arguments it does not take, so the exception passes through no frame of
    this module (a rule's own exception does: that one is the user's to fix)."""

    name = "fault-in-step"
    step = staticmethod(operator.neg)  # type: ignore[assignment]


class SleepsInStep(Method):
    """A step that takes ``seconds``: a run long enough to be interrupted."""

    name = "sleeps-in-step"

    def __init__(self, seconds: float = 60.0) -> None:
        super().__init__(seconds=float(seconds))

    def step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        time.sleep(self.options["seconds"])
        return {"loss": 0.0}


class SlowBackprop(BP):
    """Backpropagation that sleeps ``seconds`` after each step: the same figures as ``bp``,
    in a run long enough for a node to die in the middle of it."""

    name = "slow-bp"

    def __init__(self, seconds: float = 0.5) -> None:
        super().__init__()
        self.options["seconds"] = float(seconds)

    def step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        out = super().step(x, y)
        time.sleep(self.options["seconds"])
        return out
