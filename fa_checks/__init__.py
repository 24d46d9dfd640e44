"""fa-checks: silent-failure diagnostics for feedback-alignment style training.

The names below are imported lazily so that ``import fa_checks`` (and loading the pytest
plugin) costs nothing until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Anatomy": "fa_checks.anatomy",
    "anatomy_of": "fa_checks.anatomy",
    "per_sample_norm": "fa_checks.anatomy",
    "build_model": "fa_checks.models",
    "Method": "fa_checks.methods",
    "get_method": "fa_checks.methods",
    "load_data": "fa_checks.data",
    "Dataset": "fa_checks.data",
    "save_checkpoint": "fa_checks.checkpoint",
    "load_checkpoint": "fa_checks.checkpoint",
    "Checkpoint": "fa_checks.checkpoint",
    "CheckpointError": "fa_checks.checkpoint",
    "evaluate": "fa_checks.protocol",
    "Report": "fa_checks.protocol",
    "Thresholds": "fa_checks.protocol",
    "train": "fa_checks.training",
    "Run": "fa_checks.training",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fa_checks' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
