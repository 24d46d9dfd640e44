"""A model written the way a user would, outside the library: the attribute convention (embed,
blocks of residual branches, out_ln, out_head), no ``forward``, no ``d_hidden``; named
``user_models:make_net`` (a model factory)."""

from __future__ import annotations

import math

from torch import nn


class TanhBranch(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, h):
        return self.linear(self.norm(h).tanh())


class UserNet(nn.Module):
    def __init__(self, features: int, classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(features, width))
        self.blocks = nn.ModuleList(TanhBranch(width) for _ in range(depth))
        self.out_ln = nn.LayerNorm(width)
        self.out_head = nn.Linear(width, classes)


def make_net(input_shape, num_classes, width=12, depth=2):
    return UserNet(math.prod(input_shape), num_classes, width, depth)


def make_anything(input_shape, num_classes, **sizes):
    """A factory that takes any keyword (``**sizes``)."""
    return make_net(input_shape, num_classes, width=int(sizes.get("width", 12)))


def not_a_model(input_shape, num_classes):
    return "a string"


def no_num_classes(input_shape):
    return make_net(input_shape, 2)


def raises(input_shape, num_classes, width=12):
    raise ValueError("the user's factory fails on purpose")


class ConvNet(nn.Module):
    """Feature maps (N, C, H, W) with the features on axis 1, told by ``feature_axis``."""

    feature_axis = 1

    def __init__(self, channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
            for _ in range(2))
        self.out_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(width, classes))


def make_convnet(input_shape, num_classes, width=4):
    return ConvNet(input_shape[0], num_classes, width)
