"""Pre-LayerNorm residual MLP: ``h_{l+1} = h_l + W2 gelu(W1 LN(h_l))``, terminal LayerNorm, head.

The second matrix of every block starts at std 0.01 so the residual stream starts near identity;
``residual=False`` turns it into a plain stack ``h_{l+1} = f_l(h_l)``; ``num_blocks=0`` is the
shallow baseline.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import BlockModel, flat_features


class ResidualBranch(nn.Module):
    """``W2 gelu(W1 LN(h))``: the branch only, the skip is added by the model."""

    def __init__(self, d_hidden: int, w2_std: float = 0.01) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_hidden)
        self.w1 = nn.Linear(d_hidden, d_hidden)
        self.w2 = nn.Linear(d_hidden, d_hidden)
        nn.init.normal_(self.w2.weight, std=w2_std)
        nn.init.zeros_(self.w2.bias)

    def forward(self, h: Tensor) -> Tensor:
        return self.w2(F.gelu(self.w1(self.ln(h))))


class ResMLP(BlockModel):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        d_hidden: int = 256,
        num_blocks: int = 4,
        residual: bool = True,
        w2_std: float = 0.01,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.embed_layer = nn.Linear(flat_features(input_shape), d_hidden)
        self.blocks = nn.ModuleList(ResidualBranch(d_hidden, w2_std) for _ in range(num_blocks))
        self.out_ln = nn.LayerNorm(d_hidden)
        self.out_head = nn.Linear(d_hidden, num_classes)
        self.d_hidden = d_hidden
        self.hidden_shape = (d_hidden,)

    def embed(self, x: Tensor) -> Tensor:
        return self.embed_layer(x.reshape(x.shape[0], -1))

    def step(self, l: int, h: Tensor) -> Tensor:
        f = self.blocks[l](h)
        return h + f if self.residual else f

    def branch(self, l: int, h: Tensor) -> Tensor:
        return self.blocks[l](h)

    def readout(self, h: Tensor) -> Tensor:
        return self.out_head(self.out_ln(h))
