"""The reference points a credit rule must beat: ``frozen`` (depth utility) and ``shallow``.

``frozen``: every block stays at its random initialisation (``requires_grad`` off, and any
BatchNorm inside a block keeps its initial running statistics: it runs in eval mode while the
model trains); the embedding and readout are trained by backpropagation through the frozen
blocks.  D3 compares a method's accuracy with this one.

``shallow``: the same network with no blocks (``model_overrides``: ``num_blocks=0``, or
``depth=2`` for the plain MLP), trained by backpropagation.

Neither has a credit rule of its own to assess, so ``credit`` is None.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..models.anatomy import anatomy_of
from .base import Figures, MethodError, register
from .bp import BP

#: the model keyword that removes every block, per built-in architecture
NO_BLOCKS: dict[str, dict[str, Any]] = {
    "resmlp": {"num_blocks": 0},
    "vit": {"num_blocks": 0},
    "resnet": {"num_blocks": 0},
    "mlp": {"depth": 2},
}


@register
class Frozen(BP):
    name = "frozen"

    def init_state(self, generator: torch.Generator) -> None:
        assert self.anatomy is not None
        if self.anatomy.num_blocks == 0:
            raise MethodError("method 'frozen' freezes the blocks, and this model has none")
        for l in range(self.anatomy.num_blocks):
            for p in self.anatomy.block_parameters(l):
                p.requires_grad_(False)
        self._statistics = [
            m
            for block in self.anatomy.block_modules()
            for m in block.modules()
            if isinstance(getattr(m, "running_mean", None), Tensor)
        ]
        self._hold_statistics()

    def _hold_statistics(self) -> None:
        for module in self._statistics:
            module.eval()

    def epoch_start(self, epoch: int, epochs: int) -> None:
        self._hold_statistics()

    def step(self, x: Tensor, y: Tensor) -> Figures:
        self._hold_statistics()  # the trainer's model.train() would switch them back on
        return super().step(x, y)

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor] | None:
        return None


@register
class Shallow(BP):
    name = "shallow"

    @classmethod
    def model_overrides(cls, arch: str) -> dict[str, Any]:
        try:
            return dict(NO_BLOCKS[arch])
        except KeyError:
            raise MethodError(
                f"method 'shallow' knows how to remove the blocks of {', '.join(NO_BLOCKS)}, "
                f"not of {arch!r}; build that model without blocks and use 'bp'"
            ) from None

    def check_model(self, model: nn.Module) -> None:
        super().check_model(model)
        num_blocks = anatomy_of(model).num_blocks
        if num_blocks:
            arch = (getattr(model, "spec", None) or {}).get("arch", type(model).__name__)
            raise MethodError(
                f"method 'shallow' needs a model without blocks, got a {arch} with "
                f"{num_blocks}; build it with Shallow.model_overrides(arch) (the trainer does)"
            )

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor] | None:
        return None
