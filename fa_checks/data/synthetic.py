"""A tiny, learnable classification task for tests: Gaussian class clusters.

Each class has a centre drawn from N(0, SPREAD^2 I) in ``dim`` dimensions; a sample is its
class centre plus N(0, I) noise. With the default 20 dimensions two centres lie about
``SPREAD * sqrt(40) ~ 4.4`` noise standard deviations apart, so a linear read-out already
separates most samples and a small network reaches high accuracy in a couple of epochs.
Classes are balanced (sample i has class ``i % num_classes`` before shuffling); 80% train.
Everything is drawn from one CPU ``torch.Generator`` seeded with ``seed``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fa_checks.data.dataset import DataError, Dataset
from fa_checks.limits import check_count, check_total, default_limits

NAME = "synthetic"
DEFAULTS: dict[str, Any] = {"num_samples": 512, "dim": 20, "num_classes": 4, "seed": 0}
SPREAD = 0.7
TRAIN_FRACTION = 0.8


def check_params(num_samples: int, dim: int, num_classes: int, seed: int) -> int:
    """The number of training samples, or a ``DataError`` saying which parameter is out of range."""
    if num_classes < 2:
        raise DataError(f"synthetic: num_classes must be at least 2, got {num_classes}")
    if dim < 1:
        raise DataError(f"synthetic: dim must be at least 1, got {dim}")
    num_train = int(num_samples * TRAIN_FRACTION)
    if num_train < 1 or num_train >= num_samples:
        raise DataError(
            f"synthetic: num_samples={num_samples} leaves {num_train} training and "
            f"{num_samples - num_train} test samples (80/20 split); use num_samples >= 2"
        )
    if not 0 <= seed < 2**63:
        raise DataError(f"synthetic: seed must lie in [0, 2**63), got {seed}")
    # upper bounds (fa_checks.limits): a file's data spec must not ask for unbounded work
    limits = default_limits()
    for name, value, limit in (("num_samples", num_samples, "max_samples"),
                               ("dim", dim, "max_input_features"),
                               ("num_classes", num_classes, "max_classes")):
        check_count(name, value, limit, limits, where="synthetic: ", error=DataError)
    check_total("num_samples x dim", num_samples * dim, "max_data_elements", limits,
                detail="input elements", where="synthetic: ", error=DataError)
    return num_train


def load(root: str | os.PathLike[str] | None = None, *, download: bool = False,
         num_samples: int, dim: int, num_classes: int, seed: int) -> Dataset:
    """Generate the task in memory (``root`` and ``download`` are ignored: nothing is stored)."""
    del root, download
    num_train = check_params(num_samples, dim, num_classes, seed)
    generator = torch.Generator().manual_seed(seed)
    centres = SPREAD * torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=generator)]
    inputs = centres[labels] + torch.randn(num_samples, dim, generator=generator)
    return Dataset(
        name=NAME,
        x_train=inputs[:num_train],
        y_train=labels[:num_train],
        x_test=inputs[num_train:],
        y_test=labels[num_train:],
        num_classes=num_classes,
        input_shape=(dim,),
        spec={"name": NAME, "num_samples": num_samples, "dim": dim,
              "num_classes": num_classes, "seed": seed},
    )
