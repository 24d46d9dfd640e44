"""Built-in models and the registry ``build_model(arch, **kwargs)``.

``check_input_shape(arch, input_shape, dataset)`` says, before anything is built or loaded,
whether an architecture can take a dataset's inputs (``vit`` and ``resnet`` need images; a vit's
patches must tile them); ``build_model`` calls it too, so every path refuses in one sentence.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..limits import check_arch_options, check_total, default_limits
from .base import BlockModel, ModelError
from .factory import build_from_factory, factory_keywords, model_factory
from .mlp import MLP
from .resmlp import ResMLP
from .resnet import ResNet
from .size import build_on_meta, check_model_size, state_elements
from .vit import ViT, check_patch_size

MODELS: dict[str, type[BlockModel]] = {"resmlp": ResMLP, "mlp": MLP, "vit": ViT, "resnet": ResNet}


def model_keywords(arch: str) -> list[str]:
    """The size keywords ``arch`` accepts (besides input_shape and num_classes); for a model
    factory that takes ``**kwargs``, the ones it names (:func:`takes_any_keyword`)."""
    if arch not in MODELS:
        return factory_keywords(model_factory(arch, builtins=list(MODELS)))[0]
    params = inspect.signature(_model_class(arch).__init__).parameters
    return [name for name in params if name not in ("self", "input_shape", "num_classes")]


def takes_any_keyword(arch: str) -> bool:
    """Whether ``arch`` is a model factory with ``**kwargs`` (any keyword is passed on)."""
    return arch not in MODELS and factory_keywords(model_factory(arch, builtins=list(MODELS)))[1]


def is_builtin(arch: str) -> bool:
    return arch in MODELS


def _model_class(arch: str) -> type[BlockModel]:
    try:
        return MODELS[arch]
    except KeyError:
        raise ModelError(
            f"unknown architecture {arch!r}; choose one of {', '.join(sorted(MODELS))}"
        ) from None


def check_input_shape(
    arch: str,
    input_shape: Sequence[int],
    dataset: str | None = None,
    *,
    sizes: Mapping[str, Any] | None = None,
    flag_prefix: str | None = None,
) -> tuple[int, ...]:
    """``input_shape`` as a tuple if ``arch`` (with its size keywords ``sizes``) can take it.

    Otherwise a one-sentence :class:`ModelError` naming ``dataset`` (when given) and a fitting
    dataset: the offline image set, or the image sets read from a local folder. Flags in the
    message are spelt with ``flag_prefix`` (``"--"`` for the command line, ``"--fa-"`` for
    pytest); without one the advice names datasets only. Loads nothing.
    """
    source = f"dataset {dataset!r}" if dataset else "the data"
    if arch not in MODELS:  # a user's factory: its own code says what it can take
        model_factory(arch, builtins=list(MODELS))
        return _as_shape(input_shape, source)
    cls = _model_class(arch)
    shape = _as_shape(input_shape, source)
    if not cls.needs_image:
        return shape
    if len(shape) != 3:
        raise ModelError(
            f"architecture {arch!r} needs image inputs (channels, height, width), but {source} "
            f"gives inputs shaped {shape}: {_image_data_advice(flag_prefix)}"
        )
    if cls is ViT:
        patch_size = dict(sizes or {}).get("patch_size", _default_size(arch, "patch_size"))
        check_patch_size(patch_size, shape[1], shape[2], source)
    return shape


def _as_shape(input_shape: Sequence[int], source: str) -> tuple[int, ...]:
    try:
        if any(isinstance(s, bool) for s in input_shape):
            raise TypeError("a bool is no size")
        shape = tuple(operator.index(s) for s in input_shape)
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ModelError(
            f"{source} gives inputs shaped {input_shape!r}, but a model needs a non-empty shape "
            "of positive integers"
        )
    return shape


def _image_data_advice(flag_prefix: str | None) -> str:
    from ..data import available_datasets, data_shape, needs_root

    images = [n for n in available_datasets() if len(data_shape(n).input_shape) == 3]
    offline = [n for n in images if not needs_root(n)]
    from_folder = " / ".join(n for n in images if needs_root(n))
    flat = "or a flat-input architecture (resmlp, mlp)"
    if flag_prefix is None:
        return (f"use the offline image dataset {' or '.join(map(repr, offline))}, or "
                f"{from_folder} read from a local folder (data root), {flat}")
    data = f"{flag_prefix}data"
    return (f"use {data} {' or '.join(offline)} (offline), or {data} {from_folder} with "
            f"{flag_prefix}data-root DIR, {flat}")


def _default_size(arch: str, keyword: str) -> Any:
    return inspect.signature(_model_class(arch).__init__).parameters[keyword].default


def build_model(
    arch: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    dataset: str | None = None,
    allow_import: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a built-in model or a user's (a model factory, :mod:`.factory`); ``kwargs`` are
    its keywords (see :func:`model_keywords`).

    ``input_shape`` is checked first (:func:`check_input_shape`; ``dataset``, the data's name,
    only words the error). The returned model carries ``model.spec`` (arch and every keyword)
    so it can be rebuilt.  ``allow_import``: whether a ``module:callable`` may import its
    module (False for a name read from an untrusted file).
    """
    if arch not in MODELS:
        factory = model_factory(arch, allow_import=allow_import, builtins=list(MODELS))
        shape = check_input_shape(arch, input_shape, dataset)
        model = build_from_factory(arch, factory, input_shape=shape, num_classes=num_classes,
                                   kwargs=kwargs)
        check_total(arch, state_elements(model), "max_params", default_limits(),
                    detail="elements of model state (parameters and buffers)", error=ModelError)
        model.spec = {"arch": arch, "kwargs": {"input_shape": list(shape),
                                               "num_classes": int(num_classes), **kwargs}}
        return model
    cls = _model_class(arch)
    unknown = sorted(set(kwargs) - set(model_keywords(arch)))
    if unknown:
        raise ModelError(
            f"{arch} takes no keyword {', '.join(unknown)}; it takes "
            f"{', '.join(model_keywords(arch))}"
        )
    # sizes by type and range before anything else reads them (fa_checks.limits) ...
    kwargs = check_arch_options(arch, kwargs, prefix=f"{arch} ", error=ModelError)
    input_shape = check_input_shape(arch, input_shape, dataset, sizes=kwargs)
    kwargs = check_arch_options(
        arch, {"input_shape": input_shape, "num_classes": num_classes, **kwargs},
        prefix=f"{arch} ", error=ModelError)
    input_shape, num_classes = tuple(kwargs.pop("input_shape")), int(kwargs.pop("num_classes"))

    def build() -> BlockModel:
        return cls(input_shape=input_shape, num_classes=num_classes, **kwargs)

    # ... and the whole model against the limits, measured on the meta device (no storage)
    check_model_size(build_on_meta(build), label=arch, error=ModelError)
    model = build()
    model.spec = {
        "arch": arch,
        "kwargs": {"input_shape": list(input_shape), "num_classes": num_classes, **kwargs},
    }
    return model


__all__ = ["MODELS", "MLP", "BlockModel", "ModelError", "ResMLP", "ResNet", "ViT", "build_model",
           "check_input_shape", "is_builtin", "model_factory", "model_keywords",
           "takes_any_keyword"]
