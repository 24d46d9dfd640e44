"""Built-in models and the registry ``build_model(arch, **kwargs)``."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..errors import UserError
from .base import BlockModel
from .mlp import MLP
from .resmlp import ResMLP
from .resnet import ResNet
from .vit import ViT

MODELS: dict[str, type[BlockModel]] = {"resmlp": ResMLP, "mlp": MLP, "vit": ViT, "resnet": ResNet}


class ModelError(UserError):
    """An unknown architecture or a keyword it does not take."""


def model_keywords(arch: str) -> list[str]:
    """The size keywords ``arch`` accepts (besides input_shape and num_classes)."""
    params = inspect.signature(_model_class(arch).__init__).parameters
    return [name for name in params if name not in ("self", "input_shape", "num_classes")]


def _model_class(arch: str) -> type[BlockModel]:
    try:
        return MODELS[arch]
    except KeyError:
        raise ModelError(
            f"unknown architecture {arch!r}; choose one of {', '.join(sorted(MODELS))}"
        ) from None


def build_model(
    arch: str, *, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any
) -> nn.Module:
    """Build a built-in model; ``kwargs`` are its size keywords (see :func:`model_keywords`).

    The returned model carries ``model.spec`` (arch and every keyword) so it can be rebuilt.
    """
    cls = _model_class(arch)
    unknown = sorted(set(kwargs) - set(model_keywords(arch)))
    if unknown:
        raise ModelError(
            f"{arch} takes no keyword {', '.join(unknown)}; it takes "
            f"{', '.join(model_keywords(arch))}"
        )
    input_shape = tuple(int(s) for s in input_shape)
    model = cls(input_shape=input_shape, num_classes=int(num_classes), **kwargs)
    model.spec = {
        "arch": arch,
        "kwargs": {"input_shape": list(input_shape), "num_classes": int(num_classes), **kwargs},
    }
    return model


__all__ = ["MODELS", "MLP", "BlockModel", "ModelError", "ResMLP", "ResNet", "ViT", "build_model",
           "model_keywords"]
