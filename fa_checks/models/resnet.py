"""A small ResNet: conv stem, BatchNorm basic blocks at one width and resolution, average pool.

No LayerNorm anywhere, so it is the architecture where a growing residual stream is not hidden.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import BlockModel, image_shape


class BasicBlock(nn.Module):
    """``relu(x + BN(conv(relu(BN(conv(x))))))``: the skip connection is inside."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class ResNet(BlockModel):
    feature_axis = 1
    needs_image = True

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int = 64,
        num_blocks: int = 4,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape("resnet", input_shape)
        self.image = (channels, height, width_px)
        self.stem_conv = nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.blocks = nn.ModuleList(BasicBlock(width) for _ in range(num_blocks))
        self.out_head = nn.Linear(width, num_classes)
        self.width = width
        self.hidden_shape = (width, height, width_px)

    def embed(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.image)
        return F.relu(self.stem_bn(self.stem_conv(x)))

    def step(self, l: int, h: Tensor) -> Tensor:
        return self.blocks[l](h)

    def readout(self, h: Tensor) -> Tensor:
        return self.out_head(h.mean(dim=(2, 3)))
