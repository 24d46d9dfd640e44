"""Training histories to TensorBoard (the optional extra ``fa-checks[tensorboard]``).

Two ways in, both writing scalars under the run's label (``dfa-seed0/test_acc``, ...) with the
epoch as the step:

    from fa_checks.training.tensorboard import TensorBoardProgress, write_history
    fa_checks.train("dfa", ..., progress=TensorBoardProgress("runs/tb"))   # while it trains
    write_history(report_entry["history"], "runs/tb", label="dfa-seed0")    # from a report

``write_history`` also writes what the protocol records per epoch (``||h_L||``, ``||g_L||``,
the largest block growth), so D1 and D2 can be watched epoch by epoch.  Only numbers are
written; a non-finite one is left out (TensorBoard draws NaN as a gap in some versions and as
zero in others).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .progress import TrainingProgress

#: per-epoch history keys written as scalars, and what they are called there
HISTORY_SCALARS = {"train_loss": "loss", "test_acc": "test_acc", "h_L": "D1/h_L",
                   "g_L": "D2/g_L"}


def _writer(log_dir: str | Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("TensorBoard is not installed: pip install 'fa-checks[tensorboard]'"
                          ) from None
    return SummaryWriter(log_dir=str(log_dir))


def _scalar(value: Any) -> float | None:
    from ..files import decode_non_finite

    value = decode_non_finite(value) if isinstance(value, str) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class TensorBoardProgress:
    """A ``progress=`` sink: each finished epoch's loss and test accuracy as scalars.
    ``writer``: any object with ``add_scalar(tag, value, step)`` and ``flush()`` (a
    ``SummaryWriter`` made for ``log_dir`` when not given)."""

    def __init__(self, log_dir: str | Path | None = None, *, writer: Any = None) -> None:
        if writer is None and log_dir is None:
            raise ConfigError("TensorBoardProgress needs a log_dir or a writer")
        self.writer = writer if writer is not None else _writer(log_dir)  # type: ignore[arg-type]

    def __call__(self, event: TrainingProgress) -> None:
        if event.batch is not None or event.note:  # mid-epoch, or a note: not a scalar
            return
        for name, value in (("loss", event.loss), ("test_acc", event.test_acc)):
            number = _scalar(value)
            if number is not None:
                self.writer.add_scalar(f"{event.label}/{name}", number, event.epoch)
        self.writer.flush()


def write_history(history: Sequence[Mapping[str, Any]], log_dir: str | Path | None = None, *,
                  label: str, writer: Any = None) -> int:
    """A report's (or checkpoint's) per-epoch history as scalars; the number written."""
    out = writer if writer is not None else _writer(log_dir)  # type: ignore[arg-type]
    written = 0
    for record in history:
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            continue
        values = {tag: _scalar(record.get(key)) for key, tag in HISTORY_SCALARS.items()}
        growth = record.get("growth")
        if isinstance(growth, list) and growth:
            found = [_scalar(g) for g in growth]
            # an infinite growth has no finite maximum to draw: the epoch is left out
            values["D1/max_growth"] = None if None in found else max(found)
        for tag, value in values.items():
            if value is not None:
                out.add_scalar(f"{label}/{tag}", value, epoch)
                written += 1
    out.flush()
    return written


__all__ = ["HISTORY_SCALARS", "TensorBoardProgress", "write_history"]
