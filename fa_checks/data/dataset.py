"""The in-memory dataset: train and test tensors on one device, sliced into batches.

No DataLoader and no per-sample Python: a batch is a slice of a permuted index, and image
augmentation (random crop from a zero-padded image, then a horizontal flip, as torchvision's
``RandomCrop(size, padding=4)`` + ``RandomHorizontalFlip()``) is one gather over the whole batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UserError


class DataError(UserError):
    """A dataset that cannot be loaded or used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation of an image dataset: random crop after zero padding, and flip."""

    crop_padding: int = 4
    horizontal_flip: bool = True


@dataclass(eq=False, repr=False)
class Dataset:
    """Train and test tensors plus what a model needs to know about them.

    ``spec`` is the root-independent recipe (``{"name": ..., **params}``), so
    ``load_data(**spec, root=root)`` rebuilds the same data; it travels in checkpoints.
    ``augmentation`` is None for data that must not be cropped or flipped (1-D signals, digits).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    spec: dict[str, Any] = field(default_factory=dict)
    augmentation: Augmentation | None = None

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.num_classes = int(self.num_classes)
        if not self.spec:
            self.spec = {"name": self.name}
        splits = (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test))
        for split, x, y in splits:
            if x.shape[0] != y.shape[0]:
                raise DataError(
                    f"dataset {self.name!r}: {split} inputs have {x.shape[0]} samples but "
                    f"{split} labels have {y.shape[0]}"
                )
            if tuple(x.shape[1:]) != self.input_shape:
                raise DataError(
                    f"dataset {self.name!r}: {split} inputs are shaped {tuple(x.shape[1:])} per "
                    f"sample, but input_shape says {self.input_shape}"
                )
            if y.dtype != torch.int64:
                raise DataError(
                    f"dataset {self.name!r}: {split} labels must be int64 class indices, got "
                    f"{y.dtype}"
                )
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise DataError(
                    f"dataset {self.name!r}: {split} labels span {int(y.min())}..{int(y.max())}, "
                    f"outside 0..{self.num_classes - 1} for num_classes={self.num_classes}"
                )
        if self.augmentation is not None and len(self.input_shape) != 3:
            raise DataError(
                f"dataset {self.name!r}: crop/flip augmentation needs (C, H, W) inputs, got "
                f"input_shape {self.input_shape}"
            )

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> Dataset:
        """A copy whose tensors live on ``device`` (tensors already there are shared)."""
        device = torch.device(device)
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            spec=dict(self.spec),
        )

    def batches(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None,
        shuffle: bool = True,
        augment: bool = True,
    ) -> Batches:
        """One epoch of training batches ``(x, y)``, every training sample exactly once.

        The permutation and every augmentation draw are taken from ``generator`` here, up front,
        in that order (permutation; crop top, crop left and flip per sample, in permuted order),
        so the epoch is fixed by the generator's state at this call, whatever else consumes the
        generator while the epoch runs. The last, smaller batch is kept. ``augment`` applies only
        to datasets that have an augmentation (images); elsewhere it is ignored.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        augmentation = self.augmentation if augment else None
        if (shuffle or augmentation is not None) and generator is None:
            raise DataError(
                "Dataset.batches needs a torch.Generator to shuffle or augment deterministically: "
                "pass generator=torch.Generator().manual_seed(seed) (or shuffle=False, "
                "augment=False)"
            )
        n = self.num_train
        order = _draw(lambda dev: torch.randperm(n, generator=generator, device=dev),
                      generator, self.device) if shuffle else None
        plan = None
        if augmentation is not None:
            plan = CropFlipPlan.draw(n, augmentation, generator=generator, device=self.device)
        return Batches(self.x_train, self.y_train, batch_size, order=order, plan=plan)

    def eval_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test samples (all of them when ``n`` is larger): deterministic."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"eval_batch needs a positive number of samples, got {n!r}")
        return self.x_test[:n], self.y_test[:n]

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"device={self.device}, spec={self.spec!r})"
        )


def _draw(sample: Any, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Draw with ``generator`` on its own device, then move the result to the data's device."""
    return sample(generator.device).to(device)


@dataclass(frozen=True)
class CropFlipPlan:
    """Per-sample crop offsets (into the padded image, each in ``[0, 2 * padding]``) and flips."""

    padding: int
    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor

    @classmethod
    def draw(
        cls,
        n: int,
        augmentation: Augmentation,
        *,
        generator: torch.Generator,
        device: torch.device | str,
    ) -> CropFlipPlan:
        device = torch.device(device)
        span = 2 * augmentation.crop_padding + 1
        top = _draw(lambda dev: torch.randint(0, span, (n,), generator=generator, device=dev),
                    generator, device)
        left = _draw(lambda dev: torch.randint(0, span, (n,), generator=generator, device=dev),
                     generator, device)
        if augmentation.horizontal_flip:
            flip = _draw(lambda dev: torch.randint(0, 2, (n,), generator=generator, device=dev),
                         generator, device).bool()
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=device)
        return cls(augmentation.crop_padding, top, left, flip)

    def select(self, index: torch.Tensor | slice) -> CropFlipPlan:
        return CropFlipPlan(self.padding, self.top[index], self.left[index], self.flip[index])


def crop_flip(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    *,
    padding: int,
) -> torch.Tensor:
    """Crop each image of ``x`` (N, C, H, W) at ``(top, left)`` of its zero-padded copy, then flip.

    ``top``/``left`` index the image padded by ``padding`` on every side, so ``top == padding``
    is no shift; ``flip`` mirrors the cropped image left-right. Two gathers for the whole batch
    (rows, then columns with the flip folded into the column index): measured 2.4x faster on a
    CPU than one four-index advanced-indexing gather.
    """
    if x.dim() != 4:
        raise DataError(f"crop_flip needs images shaped (N, C, H, W), got {tuple(x.shape)}")
    n, channels, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = top.to(x.device).view(n, 1) + torch.arange(height, device=x.device)
    band = padded.gather(2, rows.view(n, 1, height, 1).expand(n, channels, height, padded.shape[3]))
    columns = torch.arange(width, device=x.device).expand(n, width)
    columns = torch.where(flip.to(x.device).view(n, 1), columns.flip(-1), columns)
    columns = columns + left.to(x.device).view(n, 1)
    return band.gather(3, columns.view(n, 1, 1, width).expand(n, channels, height, width))


class Batches:
    """An epoch of ``(x, y)`` batches; ``len()`` is the number of batches; re-iterable."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        order: torch.Tensor | None = None,
        plan: CropFlipPlan | None = None,
    ) -> None:
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.order = order
        self.plan = plan

    def __len__(self) -> int:
        return math.ceil(self.x.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        for start in range(0, n, self.batch_size):
            window = slice(start, min(start + self.batch_size, n))
            if self.order is None:
                xb, yb = self.x[window], self.y[window]
            else:
                index = self.order[window]
                xb, yb = self.x[index], self.y[index]
            if self.plan is not None:
                part = self.plan.select(window)
                xb = crop_flip(xb, part.top, part.left, part.flip, padding=part.padding)
            yield xb, yb
