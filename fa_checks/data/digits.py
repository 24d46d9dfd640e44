"""The UCI handwritten digits, 8x8 images, as shipped inside scikit-learn: offline image data.

``sklearn.datasets.load_digits`` reads them from a file inside the scikit-learn wheel (1,797
images of 10 digit classes, pixel values 0..16), so nothing is downloaded and no folder has to be
named: this is the image dataset on which ``vit`` and ``resnet`` run on any machine. The split is
a permutation drawn from one CPU ``torch.Generator`` seeded with ``seed``; the first
``int(1797 * train_split)`` samples train. Pixels are scaled to [0, 1], then standardised with
the training split's mean and standard deviation (one of each, as MNIST has one channel), so
inputs are float32 ``(N, 1, 8, 8)``, labels int64. No augmentation: a flipped or shifted digit is
another digit or off the 8x8 grid.

Loading takes about a second (scikit-learn's import), so nothing is cached on disk.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from fa_checks.data.dataset import DataError, Dataset

NAME = "digits"
DEFAULTS: dict[str, Any] = {"train_split": 0.8, "seed": 0}
NUM_SAMPLES = 1797
NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)
MAX_PIXEL = 16.0


def check_params(train_split: float, seed: int) -> dict[str, Any]:
    """The parameters as a dict, or a ``DataError`` saying which one is out of range."""
    num_train = int(NUM_SAMPLES * train_split)
    if not 0.0 < train_split < 1.0 or num_train < 1 or num_train >= NUM_SAMPLES:
        raise DataError(
            f"digits: train_split must lie strictly in (0, 1) and leave at least one of the "
            f"{NUM_SAMPLES} images for training and one for testing, got {train_split}"
        )
    if not 0 <= seed < 2**63:
        raise DataError(f"digits: seed must lie in [0, 2**63), got {seed}")
    return {"train_split": train_split, "seed": seed}


def load(root: str | os.PathLike[str] | None = None, *, download: bool = False,
         train_split: float, seed: int) -> Dataset:
    """The digits split by ``seed``; ``root`` and ``download`` are ignored (nothing is fetched)."""
    del root, download
    params = check_params(train_split, seed)
    pixels, labels = _read()
    num_train = int(NUM_SAMPLES * train_split)
    order = torch.randperm(NUM_SAMPLES, generator=torch.Generator().manual_seed(seed))
    images = torch.from_numpy(pixels).view(NUM_SAMPLES, *INPUT_SHAPE) / MAX_PIXEL
    targets = torch.from_numpy(labels)
    x_train, x_test = images[order[:num_train]], images[order[num_train:]]
    mean, std = x_train.mean(), x_train.std()
    return Dataset(
        name=NAME,
        x_train=(x_train - mean) / std,
        y_train=targets[order[:num_train]],
        x_test=(x_test - mean) / std,
        y_test=targets[order[num_train:]],
        num_classes=NUM_CLASSES,
        input_shape=INPUT_SHAPE,
        spec={"name": NAME, **params},
    )


def _read() -> tuple[np.ndarray, np.ndarray]:
    """The pixels (1797, 64) float32 and labels (1797,) int64, in scikit-learn's order."""
    try:
        from sklearn.datasets import load_digits  # about 1 s to import: only when asked
    except ImportError:
        raise DataError(
            "dataset 'digits' is read from scikit-learn, which is not installed: run "
            "`pip install scikit-learn` (or `pip install 'fa-checks[digits]'`)"
        ) from None
    raw = load_digits()
    pixels = np.ascontiguousarray(raw.data, dtype=np.float32)
    labels = np.ascontiguousarray(raw.target, dtype=np.int64)
    if pixels.shape != (NUM_SAMPLES, 64) or labels.shape != (NUM_SAMPLES,):
        raise DataError(
            f"digits: this scikit-learn's load_digits gave {pixels.shape} pixels and "
            f"{labels.shape} labels, not the UCI set's ({NUM_SAMPLES}, 64) and ({NUM_SAMPLES},); "
            f"install a scikit-learn release that ships the standard set"
        )
    return pixels, labels
