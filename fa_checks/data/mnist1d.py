"""MNIST-1D, generated offline by the ``mnist1d`` package and cached as one tensor file.

The package's own generator (``mnist1d.data.make_dataset``) is the definition: the same
``num_samples``, ``train_split`` and ``seed`` give the same samples as the package's own
recipe, and its other generation arguments keep the package's defaults. The package already
centres and scales the inputs (one mean and one standard deviation over all generated samples);
nothing further is standardised here. Inputs become float32 ``(N, 40)``, labels int64.

Nothing here downloads: ``mnist1d.data.get_dataset`` (which fetches a pickle from GitHub and
writes to the working directory) is never called.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from fa_checks.cache.store import KEY_LENGTH
from fa_checks.data.dataset import DataError, Dataset
from fa_checks.files import write_atomic
from fa_checks.limits import check_count

NAME = "mnist1d"
DEFAULTS: dict[str, Any] = {"num_samples": 10_000, "train_split": 0.8, "seed": 42}
NUM_CLASSES = 10
#: the package's default final_seq_length, which the generation below keeps
SEQUENCE_LENGTH = 40
# Bump when the file layout or the conversion below changes, so old cache files are not reused.
CACHE_FORMAT = 1


#: the folder of generated data inside the one cache (``fa-checks cache info`` lists it)
DATA_KIND = "data"


def default_data_dir() -> Path:
    """The cache of generated data: ``$FA_CHECKS_DATA_DIR``, else the folder ``data`` of the
    one cache (``$FA_CHECKS_CACHE``, else ``$XDG_CACHE_HOME/fa-checks``, else
    ``~/.cache/fa-checks``), where ``fa-checks cache info`` and ``clear`` see it."""
    from ..cache.store import default_cache_root

    configured = os.environ.get("FA_CHECKS_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return default_cache_root() / DATA_KIND


def cache_path(params: dict[str, Any], root: str | os.PathLike[str] | None = None) -> Path:
    """The cache file for these (already validated) parameters: named as the artifact cache
    names its files (``<key>.pt``), so its ``info`` counts it and ``clear`` removes it."""
    directory = Path(root).expanduser() if root is not None else default_data_dir()
    return directory / f"{_params_hash(params)}.pt"


def load(root: str | os.PathLike[str] | None = None, *, download: bool = False,
         num_samples: int, train_split: float, seed: int) -> Dataset:
    """Load MNIST-1D from the cache under ``root``, generating it (once, under a lock) if absent.

    ``root`` is the cache directory (default :func:`default_data_dir`); ``download`` is accepted
    for a uniform signature and ignored, since MNIST-1D is generated, never fetched.
    """
    del download
    params = check_params(num_samples, train_split, seed)
    path = cache_path(params, root)
    tensors = _read_cache(path, params)
    if tensors is None:
        tensors = _generate_and_cache(path, params)
    return Dataset(
        name=NAME,
        **tensors,
        num_classes=NUM_CLASSES,
        input_shape=tuple(tensors["x_train"].shape[1:]),
        spec={"name": NAME, **params},
    )


def check_params(num_samples: int, train_split: float, seed: int) -> dict[str, Any]:
    """The parameters as a dict, or a ``DataError`` saying which one is out of range."""
    if num_samples < NUM_CLASSES or num_samples % NUM_CLASSES:
        raise DataError(
            f"mnist1d: num_samples must be a positive multiple of {NUM_CLASSES} (the generator "
            f"draws the same number of samples per class), got {num_samples}"
        )
    if not 0.0 < train_split < 1.0:
        raise DataError(f"mnist1d: train_split must lie strictly in (0, 1), got {train_split}")
    num_train = int(num_samples * train_split)
    if num_train < 1 or num_train >= num_samples:
        raise DataError(
            f"mnist1d: num_samples={num_samples} with train_split={train_split} leaves "
            f"{num_train} training and {num_samples - num_train} test samples; both must be >= 1"
        )
    if seed < 0 or seed >= 2**32:
        raise DataError(f"mnist1d: seed must lie in [0, 2**32), got {seed} (numpy's seed range)")
    # upper bounds (fa_checks.limits): a file's data spec must not ask for unbounded work
    check_count("num_samples", num_samples, "max_samples", where="mnist1d: ", error=DataError)
    return {"num_samples": num_samples, "train_split": train_split, "seed": seed}


def _generator_version() -> str:
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:  # an unpackaged checkout: key on "unknown"
        return "unknown"


def _params_hash(params: dict[str, Any]) -> str:
    # The generator's version is part of the key: a release that changed the recipe must not be
    # served the previous release's samples under the same parameters.
    key = {"params": params, "mnist1d": _generator_version(), "format": CACHE_FORMAT}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:KEY_LENGTH]


#: MNIST-1D's samples have 40 features; a cache file holds them as float32 and the labels as
#: int64, and at most this much besides (the pickle and the archive's records)
_FEATURES, _OVERHEAD = 40, 1 << 20


def expected_bytes(params: dict[str, Any]) -> int:
    """The most bytes the cache file of ``params`` can hold: anything larger is not ours."""
    return int(params["num_samples"]) * (_FEATURES * 4 + 8) + _OVERHEAD


def _read_cache(path: Path, params: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None (absent, or refused and said: regenerated).  The file is
    read as untrusted data: a regular file under the size its parameters need, checked by
    the checkpoint reader before ``torch.load`` sees it, holding tensors of the right shapes."""
    if not os.path.lexists(path):
        return None
    from dataclasses import replace

    from ..checkpoint.torchfile import read_torch_file
    from ..limits import default_limits
    from ..values import printable

    try:
        limits = replace(default_limits(), max_file_bytes=expected_bytes(params))
        checked = read_torch_file(path, trust=False, limits=limits)
        with checked.handle as handle:
            stored = torch.load(handle, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict) or stored.get("params") != params \
                or stored.get("format") != CACHE_FORMAT:
            raise ValueError("it holds other parameters than its name says")
        tensors = {key: stored[key] for key in ("x_train", "y_train", "x_test", "y_test")}
        _check_shapes(tensors, params)
        return tensors
    except Exception as error:  # a damaged or foreign file: regenerate rather than fail
        warnings.warn(
            printable(f"mnist1d cache file {path} is unreadable ({error}); regenerating it"),
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _check_shapes(tensors: dict[str, Any], params: dict[str, Any]) -> None:
    total = int(params["num_samples"])
    rows = 0
    for split in ("train", "test"):
        x, y = tensors[f"x_{split}"], tensors[f"y_{split}"]
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                and x.dtype == torch.float32 and y.dtype == torch.int64 and x.dim() == 2
                and x.shape[1] == _FEATURES and y.shape == (x.shape[0],)):
            raise ValueError(f"its {split} split is not {_FEATURES}-feature samples and labels")
        rows += int(x.shape[0])
    if rows != total:
        raise ValueError(f"it holds {rows} samples, its parameters say {total}")


def _generate_and_cache(path: Path, params: dict[str, Any]) -> dict[str, torch.Tensor]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"mnist1d: cannot create the cache directory {path.parent} ({error}); set "
            f"FA_CHECKS_CACHE (or --cache-dir) to a writable directory"
        ) from error
    with FileLock(str(path) + ".lock"):
        # Another process may have written it while this one waited for the lock.
        if path.exists():
            tensors = _read_cache(path, params)
            if tensors is not None:
                return tensors
        tensors = _generate(params)
        payload = {"format": CACHE_FORMAT, "params": params, **tensors}
        write_atomic(path, lambda tmp: torch.save(payload, tmp))
        if path.parent.name == DATA_KIND:  # in a cache: its index names it, so clear removes it
            from ..cache.store import ArtifactCache

            ArtifactCache(path.parent.parent).log_creation(DATA_KIND, path.name[:KEY_LENGTH])
    return tensors


def _generate(params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Run the package's generator without disturbing anyone's global random state."""
    from mnist1d.data import get_dataset_args, make_dataset  # slow import: only on a cache miss

    args = get_dataset_args()
    args.num_samples = params["num_samples"]
    args.train_split = params["train_split"]
    args.seed = params["seed"]
    # make_dataset reseeds and draws from Python's and numpy's global generators.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        raw = make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {
        "x_train": torch.from_numpy(np.ascontiguousarray(raw["x"], dtype=np.float32)),
        "y_train": torch.from_numpy(np.ascontiguousarray(raw["y"], dtype=np.int64)),
        "x_test": torch.from_numpy(np.ascontiguousarray(raw["x_test"], dtype=np.float32)),
        "y_test": torch.from_numpy(np.ascontiguousarray(raw["y_test"], dtype=np.int64)),
    }
