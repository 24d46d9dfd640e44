"""Trained runs and frozen-blocks baselines, each trained once and kept in the artifact cache.

:func:`train_fresh` is the one place every face calls the trainer (the command line's
``train``, the cached runs, the baselines).  :func:`train_subject` and :func:`frozen_baseline`
put what they train in the cache under a key made of everything that changes it (see
:func:`training_spec`), so any process asking for the same run gets the same file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import values
from ..errors import ConfigError, Log
from ..settings import Settings
from ..subjects import Subject

if TYPE_CHECKING:
    import torch

    from ..cache.store import ArtifactCache
    from .loop import Run



def say(log: Log | None, message: str) -> None:
    if log is not None:
        log(message)


def train_fresh(
    subject: Subject,
    settings: Settings,
    *,
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
) -> Run:
    """Train a fresh subject with the settings' optimiser, schedule, device and data root.

    ``device``: the resolved device (resolved from the settings when None).
    """
    from .loop import train

    if subject.kind != "fresh":
        raise ConfigError(f"subject {subject.id!r} is a checkpoint, not a run to train")
    if subject.method is None or subject.seed is None or subject.epochs is None:
        raise ConfigError(f"subject {subject.id!r} needs a method, a seed and epochs to train")
    return train(
        subject.method,
        subject.arch,
        subject.data,
        epochs=subject.epochs,
        seed=subject.seed,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        schedule=settings.schedule,
        device=str(device if device is not None else settings.torch_device()),
        method_options=dict(subject.method_options),
        arch_options=dict(subject.arch_options),
        data_root=settings.data_root,
        data_options=dict(subject.data_options),
        checkpoint=checkpoint,
        progress=settings.progress,
        threads=settings.threads,
        label=subject.id,
    )


def train_subject(
    subject: Subject,
    settings: Settings,
    cache: ArtifactCache,
    *,
    device: torch.device | None = None,
    log: Log | None = None,
) -> Path:
    """The checkpoint of a fresh subject, trained once (cache kind ``"run"``)."""
    if subject.kind != "fresh":
        raise ConfigError(f"subject {subject.id!r} is a checkpoint, not a run to train")

    def create(path: Path) -> None:
        say(log, f"training {subject.id} ({subject.arch} on {subject.data}, "
                 f"{values.counted(subject.epochs, 'epoch')})")
        train_fresh(subject, settings, device=device, checkpoint=path)

    return cache.get_or_create("run", run_spec(subject, settings), create, suffix=".pt",
                               refresh=settings.retrain)


def run_spec(subject: Subject, settings: Settings) -> dict[str, Any]:
    """The cache key of a fresh subject's trained run."""
    return {"subject": training_spec(subject), **settings.training_key()}


def training_spec(subject: Subject) -> dict[str, Any]:
    """The subject's fields that define a trained run (not its id or path), with every
    default filled in, so ``d_hidden=256`` given or left out is the same run."""
    out = subject.to_dict()
    for name in ("id", "path", "kind"):
        out.pop(name)
    if subject.kind == "fresh":
        out["arch_options"] = canonical_arch_options(subject.arch, subject.arch_options)
        out["data_options"] = canonical_data_options(subject.data, subject.data_options)
        if subject.method is not None:
            out["method_source"] = method_source_digest(subject.method)
    return out


def method_source_digest(name: str) -> str | None:
    """A digest of a user rule's source file, so an edited rule is retrained, not reused.

    Built-in rules are versioned with the library (the cache key holds its version): None.
    """
    from ..cache.store import file_digest
    from ..methods.base import method_class

    cls = method_class(name)
    if cls.__module__.startswith("fa_checks."):
        return None
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # defined where no file exists (an interactive session)
        return None
    return None if source is None else file_digest(Path(source))


def canonical_arch_options(arch: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with the architecture's defaults filled in (a cache key's model part)."""
    from ..models import MODELS

    merged = dict(options or {})
    cls = MODELS.get(arch)
    if cls is not None:
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name in ("self", "input_shape", "num_classes"):
                continue
            if param.default is not inspect.Parameter.empty:
                merged.setdefault(name, param.default)
    return merged


def canonical_data_options(data: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with the dataset's defaults filled in (a cache key's data part)."""
    from ..data import DataError, dataset_defaults

    try:
        defaults = dataset_defaults(data)
    except DataError:
        defaults = {}
    return {**defaults, **dict(options or {})}


def baseline_subject(arch: str, arch_options: Mapping[str, Any] | None, data: str,
                     data_options: Mapping[str, Any] | None, seed: int,
                     epochs: int) -> Subject:
    """The frozen-blocks baseline of a run: the same architecture, data, seed and epochs."""
    return Subject(id=f"frozen-seed{seed}", kind="fresh", method="frozen", arch=arch,
                   arch_options=arch_options or {}, data=data, data_options=data_options or {},
                   seed=int(seed), epochs=int(epochs))


def baseline_spec(baseline: Subject, settings: Settings) -> dict[str, Any]:
    """The cache key of a frozen-blocks baseline (kind ``"baseline"``)."""
    return {
        "arch": baseline.arch,
        "arch_options": canonical_arch_options(baseline.arch, baseline.arch_options),
        "data": baseline.data,
        "data_options": canonical_data_options(baseline.data, baseline.data_options),
        "seed": baseline.seed,
        "epochs": baseline.epochs,
        **settings.training_key(),
    }


def frozen_baseline(
    baseline: Subject,
    settings: Settings,
    cache: ArtifactCache,
    *,
    device: torch.device | None = None,
    log: Log | None = None,
) -> float:
    """Test accuracy of the frozen-blocks baseline (random blocks; embed and head trained).

    Trained once per (arch, options, data, seed, epochs, optimiser settings) and cached
    (kind ``"baseline"``, JSON with the accuracy and the history).
    """
    spec = baseline_spec(baseline, settings)

    def compute() -> dict[str, Any]:
        say(log, f"training the frozen-blocks baseline ({baseline.arch} on {baseline.data}, "
                 f"seed {baseline.seed}, {values.counted(baseline.epochs, 'epoch')})")
        run = train_fresh(baseline, settings, device=device)
        return {"test_acc": run.test_acc, "spec": spec, "history": run.history}

    stored = cache.get_or_create_json("baseline", spec, compute, refresh=settings.retrain,
                                      validate=_baseline_record)
    return float(stored["test_acc"])


def _baseline_record(stored: Any) -> float:
    """A cached baseline holds an accuracy (a ValueError tells the cache to recompute it)."""
    if not isinstance(stored, dict) or "test_acc" not in stored:
        raise ValueError("a baseline record holds a test_acc")
    return values.fraction(stored["test_acc"])


__all__ = [
    "baseline_spec",
    "baseline_subject",
    "canonical_arch_options",
    "canonical_data_options",
    "frozen_baseline",
    "method_source_digest",
    "run_spec",
    "train_fresh",
    "train_subject",
    "training_spec",
]
