"""Datasets as device-resident tensors: ``load_data(name, root=None, *, download=False, **params)``.

=========  ===============================================  ====================================
name       params (defaults)                                 root
=========  ===============================================  ====================================
mnist1d    num_samples=10000, train_split=0.8, seed=42       cache folder (default
                                                             ``$FA_CHECKS_DATA_DIR`` or
                                                             ``~/.cache/fa-checks/data``)
synthetic  num_samples=512, dim=20, num_classes=4, seed=0    unused (generated in memory)
digits     train_split=0.8, seed=0                          unused (shipped with scikit-learn)
cifar10    none                                              folder holding cifar-10-batches-py
cifar100   none                                              folder holding cifar-100-python
mnist      none                                              folder holding MNIST/raw
=========  ===============================================  ====================================

``mnist1d`` is the default and needs no network; ``digits`` (8x8 images) is the image dataset
that needs no network either. ``data_shape(name, **params)`` gives a dataset's input shape and
class count without loading it. Parameter values may be given as strings (as a
command line passes them); they are converted to the parameter's type or refused with a
``DataError`` naming the parameter.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from fa_checks.data import digits, mnist1d, synthetic, vision
from fa_checks.data.dataset import (
    Augmentation,
    Batches,
    CropFlipPlan,
    DataError,
    Dataset,
    crop_flip,
)
from fa_checks.data.mnist1d import default_data_dir

__all__ = [
    "Augmentation",
    "Batches",
    "CropFlipPlan",
    "DataError",
    "Dataset",
    "available_datasets",
    "crop_flip",
    "DataShape",
    "data_shape",
    "dataset_defaults",
    "default_data_dir",
    "load_data",
    "needs_root",
    "resolve_spec",
]

DEFAULT_DATASET = "mnist1d"


class DataShape(NamedTuple):
    """What a model needs to know of a dataset: one sample's shape and the number of classes."""

    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class _Source:
    load: Callable[..., Dataset]
    defaults: dict[str, Any]
    description: str
    shape: Callable[..., DataShape]  # from the checked parameters, without loading
    check: Callable[..., Any] | None = None  # range checks on the parameters, without loading
    reads_files: bool = False  # read from a folder the user names (nothing to generate)


_SOURCES: dict[str, _Source] = {
    "mnist1d": _Source(mnist1d.load, mnist1d.DEFAULTS,
                       "MNIST-1D generated offline by the mnist1d package (the default)",
                       lambda **_: DataShape((mnist1d.SEQUENCE_LENGTH,), mnist1d.NUM_CLASSES),
                       mnist1d.check_params),
    "synthetic": _Source(synthetic.load, synthetic.DEFAULTS,
                         "Gaussian class clusters: a tiny learnable task for tests",
                         lambda dim, num_classes, **_: DataShape((dim,), num_classes),
                         synthetic.check_params),
    "digits": _Source(digits.load, digits.DEFAULTS,
                      "8x8 images of handwritten digits shipped with scikit-learn (offline)",
                      lambda **_: DataShape(digits.INPUT_SHAPE, digits.NUM_CLASSES),
                      digits.check_params),
    "cifar10": _Source(vision.load_cifar10, {}, "CIFAR-10 from a local root",
                       lambda: DataShape(vision.CIFAR_SHAPE,
                                         vision.CIFAR["cifar10"]["num_classes"]),
                       reads_files=True),
    "cifar100": _Source(vision.load_cifar100, {}, "CIFAR-100 (fine labels) from a local root",
                        lambda: DataShape(vision.CIFAR_SHAPE,
                                          vision.CIFAR["cifar100"]["num_classes"]),
                        reads_files=True),
    "mnist": _Source(vision.load_mnist, {}, "MNIST from a local root",
                     lambda: DataShape(vision.MNIST_SHAPE, 10), reads_files=True),
}


def available_datasets() -> list[str]:
    """The dataset names ``load_data`` accepts."""
    return sorted(_SOURCES)


def needs_root(name: str) -> bool:
    """Whether ``name`` is read from files in a folder the user names (``root``)."""
    return _source(name).reads_files


def dataset_defaults(name: str) -> dict[str, Any]:
    """The parameters ``name`` accepts, with their defaults."""
    return dict(_source(name).defaults)


def data_shape(name: str = DEFAULT_DATASET, **params: Any) -> DataShape:
    """The input shape and class count of ``load_data(name, **params)``, without loading it.

    Nothing is generated or read (a dataset read from files needs no root here); parameters
    are checked as :func:`resolve_spec` checks them.
    """
    spec = resolve_spec(name, **params)
    values = {key: value for key, value in spec.items() if key != "name"}
    shape = _SOURCES[spec["name"]].shape(**values)
    return DataShape(tuple(int(s) for s in shape.input_shape), int(shape.num_classes))


def load_data(
    name: str = DEFAULT_DATASET,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    **params: Any,
) -> Dataset:
    """Load a dataset by name; tensors on the CPU (``Dataset.to(device)`` moves them).

    ``root`` is where the files live (see the module table); it is not part of ``spec``, so
    ``load_data(**dataset.spec, root=root)`` rebuilds the same data from another folder.
    ``download=True`` lets torchvision fetch a missing CIFAR/MNIST; nothing else downloads.
    """
    spec = resolve_spec(name, **params)
    values = {key: value for key, value in spec.items() if key != "name"}
    return _SOURCES[spec["name"]].load(root, download=bool(download), **values)


def resolve_spec(name: str = DEFAULT_DATASET, **params: Any) -> dict[str, Any]:
    """The full spec ``load_data(name, **params)`` would produce, checked but without loading.

    Unknown names and parameters, values of the wrong type and out-of-range values raise
    ``DataError``, so a caller can refuse a bad request before any work starts.
    """
    source = _source(name)
    canonical = name.lower()
    values = dict(source.defaults)
    for key, value in params.items():
        if key not in source.defaults:
            raise DataError(
                f"dataset {canonical!r} has no parameter {key!r}; "
                + _describe_params(canonical, source.defaults)
            )
        values[key] = _coerce(canonical, key, value, source.defaults[key])
    if source.check is not None:
        source.check(**values)
    return {"name": canonical, **values}


def _source(name: str) -> _Source:
    if not isinstance(name, str) or name.lower() not in _SOURCES:
        listing = ", ".join(f"{key} ({source.description})" for key, source in _SOURCES.items())
        raise DataError(f"unknown dataset {name!r}; available: {listing}")
    return _SOURCES[name.lower()]


def _describe_params(name: str, defaults: dict[str, Any]) -> str:
    if not defaults:
        return f"{name!r} takes no parameters"
    listing = ", ".join(f"{key}={value!r}" for key, value in defaults.items())
    return f"valid parameters (defaults): {listing}"


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` to the type of ``default`` (int or float), refusing lossy conversions."""
    wanted = "an integer" if isinstance(default, int) else "a number"
    parsed = value
    if isinstance(value, str):
        try:
            parsed = int(value.strip())
        except ValueError:
            try:
                parsed = float(value.strip())
            except ValueError:
                parsed = None
    if isinstance(parsed, numbers.Real) and not isinstance(parsed, bool):
        if isinstance(default, int) and float(parsed).is_integer():
            return int(parsed)
        if isinstance(default, float) and math.isfinite(float(parsed)):
            return float(parsed)
    raise DataError(
        f"dataset {name!r}: parameter {key!r} must be {wanted} (default {default!r}), "
        f"got {value!r}"
    )
