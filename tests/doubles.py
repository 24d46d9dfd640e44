"""Test doubles shared by several test modules."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fa_checks.methods import Method


class ToyDFA(Method):
    """A direct-feedback credit ``e @ B_l^T`` with redrawable B (not registered)."""

    name = "toy_dfa"

    def init_state(self, generator: torch.Generator) -> None:
        self.layer = self.model.blocks[0]  # rules that reroute a layer keep references like this
        self.redraw_feedback(generator)

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        d, c = self.model.d_hidden, self.num_classes
        self.feedback = [
            torch.randn(d, c, generator=generator) / math.sqrt(c)
            for _ in range(self.anatomy.num_blocks + 1)
        ]
        return True

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor]:
        with torch.no_grad():
            e = self.model(x).softmax(-1) - F.one_hot(y, self.num_classes)
        return [e @ b.T for b in self.feedback]


def loss_before_and_after(method: Method, x: Tensor, y: Tensor, steps: int) -> tuple[float, float]:
    """The mean loss on ``(x, y)`` before and after ``steps`` updates on batches of 64 from it."""
    model = method.model
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    batches = max(1, x.shape[0] // 64)
    for step in range(steps):
        rows = torch.arange(step % batches * 64, step % batches * 64 + 64)
        method.step(x[rows], y[rows])
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    return before, after


def embed_parameters(anatomy: Any) -> list[torch.nn.Parameter]:
    """Every parameter of the anatomy's model that is neither in a block nor in the readout."""
    taken = {id(p) for p in anatomy.readout_parameters()}
    for l in range(anatomy.num_blocks):
        taken.update(id(p) for p in anatomy.block_parameters(l))
    return [p for p in anatomy.model.parameters() if id(p) not in taken]
