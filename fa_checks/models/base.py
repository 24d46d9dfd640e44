"""The base class of the built-in models: forward is defined once, from the anatomy's methods."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import UserError


class ModelError(UserError):
    """An unknown architecture, a keyword it does not take, or inputs it cannot take."""


class BlockModel(nn.Module):
    """A network ``readout(step(L-1, ... step(0, embed(x))))``.

    Subclasses define ``embed``, ``step`` and ``readout``, keep their blocks in ``self.blocks``
    and their readout in ``out_ln`` / ``out_head``; ``forward`` and the hidden states follow.
    """

    residual: bool = True
    feature_axis: int = -1
    #: whether the model takes images (channels, height, width) only, not flat inputs
    needs_image: bool = False
    #: set by :func:`fa_checks.models.build_model`, so a checkpoint can rebuild the model
    spec: dict[str, Any]
    #: the shape of one sample's hidden state ``h_l`` (every block keeps it), set by the
    #: constructor from the sizes it builds with: the limits read it off a meta-device model
    hidden_shape: tuple[int, ...]

    blocks: nn.ModuleList

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def embed(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, l: int, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def branch(self, l: int, h: Tensor) -> Tensor:
        out = self.step(l, h)
        return out - h if self.residual else out

    branch.derived_from_step = True  # type: ignore[attr-defined]  # read by Anatomy

    def readout(self, h: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for l in range(self.num_blocks):
            h = self.step(l, h)
        return self.readout(h)


def flat_features(input_shape: tuple[int, ...]) -> int:
    n = 1
    for s in input_shape:
        n *= int(s)
    return n


def image_shape(arch: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(C, H, W)`` for image models (``build_model`` checks first, naming the dataset)."""
    if len(input_shape) != 3:
        raise ModelError(
            f"architecture {arch!r} needs image inputs (channels, height, width), but the data "
            f"gives inputs shaped {tuple(input_shape)}; use 'resmlp' or 'mlp' for flat inputs"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w
