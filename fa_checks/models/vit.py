"""A small Vision Transformer: 4x4 patches, a cls token, pre-LN blocks, terminal LayerNorm."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import BlockModel, ModelError, image_shape


def check_patch_size(patch_size: int, height: int, width: int, source: str = "the data") -> None:
    """Refuse a ``patch_size`` that does not tile ``height x width`` images, naming divisors."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ModelError(f"vit patch_size must be a positive integer, got {patch_size!r}")
    if height % patch_size or width % patch_size:
        common = math.gcd(height, width)
        fitting = [str(p) for p in range(1, common + 1) if common % p == 0]
        raise ModelError(
            f"vit patch_size {patch_size} does not tile the {height}x{width} images of {source}: "
            f"choose a patch_size that divides both sides ({', '.join(fitting)})"
        )


class TransformerBlock(nn.Module):
    """Pre-LN block; the skip connections are inside (``x + attn(LN x)``, ``x + mlp(LN x)``)."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        hidden = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(), nn.Linear(hidden, d_model))

    def forward(self, x: Tensor) -> Tensor:
        z = self.ln1(x)
        x = x + self.attn(z, z, z, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class ViT(BlockModel):
    needs_image = True

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        patch_size: int = 4,
        d_model: int = 128,
        n_heads: int = 4,
        num_blocks: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape("vit", input_shape)
        check_patch_size(patch_size, height, width)
        n_tokens = (height // patch_size) * (width // patch_size) + 1
        self.patch_embed = nn.Conv2d(channels, d_model, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, d_model))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_ratio) for _ in range(num_blocks)
        )
        self.out_ln = nn.LayerNorm(d_model)
        self.out_head = nn.Linear(d_model, num_classes)
        self.image = (channels, height, width)
        self.d_model = d_model
        self.hidden_shape = (n_tokens, d_model)

    def embed(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.image)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def step(self, l: int, h: Tensor) -> Tensor:
        return self.blocks[l](h)

    def readout(self, h: Tensor) -> Tensor:
        return self.out_head(self.out_ln(h[:, 0]))
