"""How subjects are trained and evaluated: the defaults, :class:`Settings`, the device.

One source for every default the command line, the plugin and the library share (the flags'
help texts read them from here).  Nothing here imports torch at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .report import Thresholds

if TYPE_CHECKING:
    import torch

    from .cache.store import ArtifactCache
    from .training.progress import ProgressSink

DEFAULT_ARCH = "resmlp"
DEFAULT_DATA = "mnist1d"
DEFAULT_EPOCHS = 20
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 1e-3
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_SCHEDULE = "cosine"
DEFAULT_DEVICE = "auto"
#: samples in the diagnostics' eval batch (and in the training history's per-epoch figures)
DEFAULT_EVAL_SIZE = 1024
#: what each task asks a Ray cluster for (fa_checks.cluster)
DEFAULT_GPUS_PER_RUN = 0.0
DEFAULT_CPUS_PER_RUN = 1
#: --compare-fail: what counts as a regression against the accepted run (the CI loop,
#: :mod:`fa_checks.compare.rules`; the README justifies each number)
DEFAULT_COMPARE_FAIL = "verdict,acc:2,D1:x2,D2:x10,D3:2,D4:2,alpha:0.05"


@dataclass
class Settings:
    """How subjects are trained and evaluated (shared by every subject of one invocation)."""

    data_root: str | None = None
    eval_size: int = DEFAULT_EVAL_SIZE
    device: str = DEFAULT_DEVICE  # auto | cpu | cuda | cuda:N
    thresholds: Thresholds = field(default_factory=Thresholds)
    baseline_acc: float | None = None  # None: train (and cache) the frozen-blocks baseline
    trust: bool = False  # allow checkpoints that need arbitrary unpickling or name user code
    retrain: bool = False  # recompute cached artifacts
    credit: bool = True  # compute credit metrics when the method has credit
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    schedule: str = DEFAULT_SCHEDULE  # learning-rate schedule of fresh runs and baselines
    #: training progress: False, True (lines on stderr), or a sink receiving each event
    progress: bool | ProgressSink = False
    #: False skips D3 when no baseline_acc is given, instead of training the baseline
    depth_utility: bool = True
    #: torch threads per process; None chooses for the work (fa_checks.training.threads)
    threads: int | None = None
    #: the artifact cache; None is the user's cache directory (fa_checks.cache.store)
    cache_dir: str | None = None
    #: where to evaluate: None in this process; else the Ray cluster at this address
    #: (``auto``, ``host:port`` or ``ray://host:port``), every run a task (fa_checks.cluster)
    ray_address: str | None = None
    #: GPUs each Ray task asks for: a fraction lets several runs share one GPU
    gpus_per_run: float = DEFAULT_GPUS_PER_RUN
    #: CPUs each Ray task asks for, and its torch threads unless ``threads`` is given
    cpus_per_run: int = DEFAULT_CPUS_PER_RUN
    #: how the caller spells its flags in error messages: ``"--"`` (the command line's
    #: ``--device``) or ``"--fa-"`` (the plugin's ``--fa-device``)
    flag_prefix: str = "--"

    def flag(self, name: str) -> str:
        """The caller's spelling of flag ``name``: ``"device"`` -> ``"--fa-device"``."""
        return f"{self.flag_prefix}{name}"

    def evaluation_key(self) -> dict[str, Any]:
        """The settings that change a report's figures (not where data lives or progress).

        ``trust`` is part of it: a report computed from a trusted file is never served to a run
        that did not give the trust flag, and so are the limits in force: a file refused under
        tighter limits is not passed from a report computed under looser ones.
        """
        from .limits import default_limits

        return {
            "limits": dataclasses.asdict(default_limits()),
            "eval_size": int(self.eval_size),
            "thresholds": dataclasses.asdict(self.thresholds),
            "baseline_acc": self.baseline_acc,
            "depth_utility": bool(self.depth_utility),
            "credit": bool(self.credit),
            "trust": bool(self.trust),
            **self.training_key(),
        }

    def training_key(self) -> dict[str, Any]:
        """The settings that change a trained run (part of its cache key)."""
        return {
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "weight_decay": float(self.weight_decay),
            "schedule": str(self.schedule),
        }

    def with_optimizer(self, recorded: dict[str, Any] | None) -> Settings:
        """These settings with the optimiser a checkpoint records (its baseline must match)."""
        recorded = dict(recorded or {})
        return dataclasses.replace(
            self,
            batch_size=int(recorded.get("batch_size", self.batch_size)),
            lr=float(recorded.get("lr", self.lr)),
            weight_decay=float(recorded.get("weight_decay", self.weight_decay)),
            schedule=str(recorded.get("schedule", self.schedule)),
        )

    def open_cache(self, log: Callable[[str], None] | None = None) -> ArtifactCache:
        """The artifact cache these settings name (the user's cache directory by default);
        ``log`` hears, in one line each, about damaged artifacts it recomputes."""
        from pathlib import Path

        from .cache.store import ArtifactCache, default_cache_root

        cache = ArtifactCache(Path(self.cache_dir).expanduser() if self.cache_dir
                              else default_cache_root(), log=log)
        cache.check_root()  # a cache that is a file is said now, not after the work
        return cache

    def data_root_for(self, data: str) -> str | None:
        """Where dataset ``data`` is read from: ``data_root``; for generated data (mnist1d)
        without one, the folder ``data`` of the cache these settings name, so ``--cache-dir``
        moves every file fa-checks keeps (None: the default cache's)."""
        if self.data_root is not None or not self.cache_dir:
            return self.data_root
        from pathlib import Path

        from .data import needs_root
        from .data.mnist1d import DATA_KIND

        return None if needs_root(data) else str(Path(self.cache_dir).expanduser() / DATA_KIND)

    def torch_device(self) -> torch.device:
        """The device to use; ``cuda`` where there is none is a ConfigError naming the flag."""
        return resolve_device(self.device, what=self.flag("device"))


def visible_gpu_count() -> int:
    """CUDA devices visible to this process, without importing torch where there can be none."""
    import os
    import sys

    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia"):
        return 0  # no NVIDIA driver loaded: skip the cost of importing torch
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(name: str, *, what: str = "--device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is a ConfigError.

    ``what`` names the flag the device came from, for the error message.
    """
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {name}: CUDA is not available here; "
                              f"use {what} cpu or auto")
        index = text.partition(":")[2]
        if index:
            if not index.isdigit():
                raise ConfigError(f"{what} {name}: the CUDA index must be a number (cuda:0)")
            if int(index) >= torch.cuda.device_count():
                raise ConfigError(f"{what} {name}: only {torch.cuda.device_count()} CUDA "
                                  "device(s) are visible")
        return torch.device(text)
    raise ConfigError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N")


__all__ = [
    "DEFAULT_ARCH",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CPUS_PER_RUN",
    "DEFAULT_DATA",
    "DEFAULT_DEVICE",
    "DEFAULT_EPOCHS",
    "DEFAULT_EVAL_SIZE",
    "DEFAULT_GPUS_PER_RUN",
    "DEFAULT_LR",
    "DEFAULT_SCHEDULE",
    "DEFAULT_SEED",
    "DEFAULT_WEIGHT_DECAY",
    "Settings",
    "resolve_device",
    "visible_gpu_count",
]
