"""CIFAR-10, CIFAR-100 and MNIST from a local folder, as whole normalised tensors.

Nothing is fetched unless ``download=True``. Inputs are scaled to [0, 1] and normalised with the
seeds' per-channel means and standard deviations, exactly as torchvision's ``ToTensor()`` then
``Normalize(mean, std)``, once for the whole set, shaped (N, C, H, W). CIFAR training batches get
the seeds' augmentation (random crop with 4 pixels of zero padding, horizontal flip); MNIST, as in
the seeds, gets none.

CIFAR files are read here rather than through ``torchvision.datasets.CIFAR10``: torchvision's
constructor checks every file's MD5, and its unpickling would run any code a file names. The
standard python-version batches are read with an unpickler that builds nothing but numpy arrays,
lists and dicts. ``download=True`` still goes through torchvision, which verifies the archive.
MNIST's IDX files carry no code, so torchvision reads them (``MNIST(root).data``: one uint8 tensor,
no per-sample images).
"""

from __future__ import annotations

import codecs
import importlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fa_checks.data.dataset import Augmentation, DataError, Dataset

CIFAR_AUGMENTATION = Augmentation(crop_padding=4, horizontal_flip=True)
CIFAR_SHAPE = (3, 32, 32)
MNIST_SHAPE = (1, 28, 28)

CIFAR = {
    "cifar10": {
        "title": "CIFAR-10",
        "folder": "cifar-10-batches-py",
        "train_files": [f"data_batch_{i}" for i in range(1, 6)],
        "test_files": ["test_batch"],
        "label_key": "labels",
        "num_classes": 10,
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "torchvision": "CIFAR10",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "folder": "cifar-100-python",
        "train_files": ["train"],
        "test_files": ["test"],
        "label_key": "fine_labels",
        "num_classes": 100,
        "mean": (0.5071, 0.4867, 0.4408),
        "std": (0.2675, 0.2565, 0.2761),
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "torchvision": "CIFAR100",
    },
}

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def normalise(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float32 ``(x / 255 - mean) / std`` per channel."""
    shape = (1, len(mean), 1, 1)
    scaled = images.to(torch.float32).div_(255)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(shape)
    std_t = torch.tensor(std, dtype=torch.float32).view(shape)
    return scaled.sub_(mean_t).div_(std_t)


def _require_root(name: str, root: str | os.PathLike[str] | None) -> Path:
    if root is None:
        raise DataError(
            f"{name} is read from a local folder and no root was given: pass "
            f"load_data({name!r}, root='~/data') (command line: --data-root DIR; pytest: "
            f"--fa-data-root DIR). Add download=True on a machine with network to fetch it there."
        )
    return Path(root).expanduser()


def _how_to_get(name: str, root: Path, url: str, layout: str) -> str:
    return (
        f"To get it: run `python -c \"from fa_checks.data import load_data; "
        f"load_data({name!r}, root={str(root)!r}, download=True)\"` on a machine with network, "
        f"or fetch {url} and unpack it so that {layout} exists."
    )


def _download(name: str, torchvision_class: str, root: Path) -> None:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, torchvision_class)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            dataset_class(str(root), train=train, download=True)
    except Exception as error:  # network, disk or checksum trouble, in torchvision's words
        raise DataError(
            f"{name}: download into {root} failed: {type(error).__name__}: {error}"
        ) from error


# ---------------------------------------------------------------------------------------- CIFAR

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch format (dicts, lists, strings, numpy arrays) and nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        # Python 3 writes an array's bytes at protocol 2 as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists"
            )
        where, attribute = target
        if where == "numpy":
            return getattr(np, attribute)
        if where == "codecs":
            return codecs.encode
        return getattr(_numpy_core(where), attribute)


def _numpy_core(submodule: str) -> Any:
    try:  # numpy >= 2 keeps these under numpy._core; numpy 1 under numpy.core
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _read_cifar_file(path: Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    try:
        with open(path, "rb") as handle:
            entry = _ArrayOnlyUnpickler(handle, encoding="latin1").load()
        data = np.asarray(entry["data"])
        labels = list(entry[label_key])
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"cannot read CIFAR batch file {path}: {type(error).__name__}: {error}. Delete the "
            f"folder and fetch the dataset again."
        ) from error
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"CIFAR batch file {path}: expected 'data' as uint8 rows of 3072 pixels, got "
            f"{data.dtype} {data.shape}"
        )
    if len(labels) != data.shape[0]:
        raise DataError(
            f"CIFAR batch file {path}: {data.shape[0]} images but {len(labels)} labels"
        )
    return data, labels


def _cifar_folder(info: dict[str, Any], root: Path) -> Path | None:
    """``root/<folder>`` holding every batch file, or ``root`` itself if the user named that."""
    needed = info["train_files"] + info["test_files"]
    for candidate in (root / info["folder"], root):
        if all((candidate / name).is_file() for name in needed):
            return candidate
    return None


def load_cifar(name: str, root: str | os.PathLike[str] | None, download: bool) -> Dataset:
    info = CIFAR[name]
    root_path = _require_root(name, root)
    if download and _cifar_folder(info, root_path) is None:
        _download(name, info["torchvision"], root_path)
    folder = _cifar_folder(info, root_path)
    if folder is None:
        files = ", ".join(info["train_files"] + info["test_files"])
        raise DataError(
            f"{name}: the {info['title']} files are not under {root_path} (looked for {files} in "
            f"{root_path / info['folder']}). "
            + _how_to_get(name, root_path, info["url"], str(root_path / info["folder"]))
        )

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_cifar_file(folder / file, info["label_key"]) for file in files]
        pixels = np.concatenate([data for data, _ in parts])
        labels = torch.tensor([label for _, batch in parts for label in batch], dtype=torch.int64)
        images = torch.from_numpy(pixels).view(-1, *CIFAR_SHAPE)
        return normalise(images, info["mean"], info["std"]), labels

    x_train, y_train = read(info["train_files"])
    x_test, y_test = read(info["test_files"])
    return Dataset(
        name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        num_classes=info["num_classes"], input_shape=CIFAR_SHAPE, spec={"name": name},
        augmentation=CIFAR_AUGMENTATION,
    )


def load_cifar10(root: str | os.PathLike[str] | None = None, *, download: bool = False) -> Dataset:
    return load_cifar("cifar10", root, download)


def load_cifar100(root: str | os.PathLike[str] | None = None, *, download: bool = False) -> Dataset:
    return load_cifar("cifar100", root, download)


# ---------------------------------------------------------------------------------------- MNIST

def _mnist_root(root: Path) -> Path:
    """torchvision wants the folder above ``MNIST/raw``; accept ``MNIST`` or ``MNIST/raw`` too."""
    if root.name == "raw" and root.parent.name == "MNIST":
        return root.parent.parent
    if root.name == "MNIST":
        return root.parent
    return root


def load_mnist(root: str | os.PathLike[str] | None = None, *, download: bool = False) -> Dataset:
    import torchvision.datasets

    root_path = _mnist_root(_require_root("mnist", root))
    raw = root_path / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing and not download:
        raise DataError(
            f"mnist: the MNIST files are not under {root_path} (missing {', '.join(missing)} in "
            f"{raw}). " + _how_to_get("mnist", root_path, MNIST_URL, f"{raw}/<the four files>")
        )
    if missing:
        _download("mnist", "MNIST", root_path)
    splits = []
    for train in (True, False):
        try:
            source = torchvision.datasets.MNIST(str(root_path), train=train, download=False)
        except Exception as error:  # a truncated or malformed IDX file
            raise DataError(
                f"mnist: cannot read the MNIST files in {raw}: {type(error).__name__}: {error}"
            ) from error
        images = source.data.unsqueeze(1)
        splits.append((normalise(images, MNIST_MEAN, MNIST_STD), source.targets.to(torch.int64)))
    (x_train, y_train), (x_test, y_test) = splits
    return Dataset(
        name="mnist", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        num_classes=10, input_shape=tuple(x_train.shape[1:]), spec={"name": "mnist"},
    )
