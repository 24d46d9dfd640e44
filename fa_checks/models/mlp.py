"""Plain MLP with LayerNorm between layers, for the reciprocal-alignment experiments.

``depth`` weight matrices without biases, initialised as the research code did (std
``gain / sqrt(fan_in)``, gain sqrt(2) for relu).  Anatomy: the first matrix is the embedding,
every hidden matrix after it is a (non-residual) block ``LN(act(W_l h))``, the last matrix is the
readout.  LayerNorm carries no affine parameters, so the weights are exactly ``W_0 .. W_{D-1}``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import BlockModel, flat_features

ACTIVATIONS = ("linear", "relu", "tanh")


def activate(z: Tensor, activation: str) -> Tensor:
    if activation == "relu":
        return F.relu(z)
    if activation == "tanh":
        return torch.tanh(z)
    return z


class DenseLayer(nn.Module):
    """``LN(act(W h))`` (the LayerNorm optional)."""

    def __init__(
        self, d_in: int, d_out: int, activation: str, layer_norm: bool, gain: float
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        nn.init.normal_(self.linear.weight, std=gain / math.sqrt(d_in))
        self.activation = activation
        self.layer_norm = layer_norm

    def forward(self, h: Tensor) -> Tensor:
        z = activate(self.linear(h), self.activation)
        return F.layer_norm(z, z.shape[-1:]) if self.layer_norm else z


class MLP(BlockModel):
    residual = False

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        d_hidden: int = 256,
        depth: int = 4,
        activation: str = "linear",
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"mlp depth counts weight matrices and must be >= 2, got {depth}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"mlp activation must be one of {ACTIVATIONS}, got {activation!r}")
        gain = math.sqrt(2.0) if activation == "relu" else 1.0
        self.first = DenseLayer(flat_features(input_shape), d_hidden, activation, layer_norm, gain)
        self.blocks = nn.ModuleList(
            DenseLayer(d_hidden, d_hidden, activation, layer_norm, gain) for _ in range(depth - 2)
        )
        self.out_head = nn.Linear(d_hidden, num_classes, bias=False)
        nn.init.normal_(self.out_head.weight, std=gain / math.sqrt(d_hidden))
        self.d_hidden = d_hidden
        self.hidden_shape = (d_hidden,)

    def embed(self, x: Tensor) -> Tensor:
        return self.first(x.reshape(x.shape[0], -1))

    def step(self, l: int, h: Tensor) -> Tensor:
        return self.blocks[l](h)

    def branch(self, l: int, h: Tensor) -> Tensor:
        return self.blocks[l](h)

    def readout(self, h: Tensor) -> Tensor:
        return self.out_head(h)
