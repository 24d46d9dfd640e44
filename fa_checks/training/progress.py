"""Progress of a training run: events, and the line every face shows for them.

``train`` reports each epoch (and, a few times a second, the batch it is at) as a
:class:`TrainingProgress` to a *sink*: by default :class:`StreamProgress`, one line per epoch on
stderr (redrawn in place on a terminal); the pytest plugin passes a sink of its own that shows
the line in pytest's terminal, also from xdist workers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

#: seconds between two mid-epoch updates
BATCH_INTERVAL = 0.25


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is: ``epoch`` of ``epochs`` (``batch`` of ``batches`` within it, mid-epoch),
    the loss, the test accuracy after a finished epoch, and the seconds it has run."""

    label: str
    epoch: int
    epochs: int
    elapsed: float
    loss: float | None = None
    test_acc: float | None = None
    batch: int | None = None
    batches: int | None = None
    note: str = ""

    @property
    def fraction(self) -> float:
        """How much of the run is done, in [0, 1]."""
        done = self.epoch - 1 + (self.batch / self.batches if self.batch and self.batches else 1)
        return min(max(done / max(self.epochs, 1), 0.0), 1.0)

    @property
    def eta(self) -> float | None:
        """Seconds left, from the pace so far; None before any progress."""
        fraction = self.fraction
        return None if fraction <= 0 else self.elapsed * (1 - fraction) / fraction

    @property
    def finished(self) -> bool:
        return bool(self.note) or (self.batch is None and self.epoch >= self.epochs)

    def line(self) -> str:
        """``[dfa-seed0] epoch 3/20  loss 1.234  test acc 0.512  eta 0:42``."""
        if self.note:
            return f"[{self.label}] {self.note}"
        parts = [f"[{self.label}] epoch {self.epoch}/{self.epochs}"]
        if self.batch is not None and self.batches:
            parts.append(f"batch {self.batch}/{self.batches}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.test_acc is not None:
            parts.append(f"test acc {self.test_acc:.3f}")
        eta = self.eta
        parts.append("done" if self.finished else f"eta {format_duration(eta)}")
        return "  ".join(parts)


ProgressSink = Callable[[TrainingProgress], None]


def format_duration(seconds: float | None) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``; None -> ``?``."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StreamProgress:
    """A sink that writes the line to a stream: redrawn in place on a terminal (also within
    an epoch), one line per finished epoch elsewhere (a log file, CI)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def __call__(self, event: TrainingProgress) -> None:
        if event.batch is not None and not self.interactive:
            return  # mid-epoch updates only where they can be redrawn
        text = event.line()
        if self.interactive:
            pad = " " * max(self._width - len(text), 0)
            end = "\n" if event.finished else ""
            self.stream.write("\r" + text + pad + end)
            self._width = 0 if end else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def progress_sink(progress: bool | ProgressSink | None) -> ProgressSink | None:
    """``train``'s ``progress`` argument as a sink: None or True -> stderr; False -> none."""
    if progress is None or progress is True:
        return StreamProgress()
    if progress is False:
        return None
    return progress


class ProgressClock:
    """Builds the events of one run and hands them to its sink; mid-epoch updates are
    throttled to one per :data:`BATCH_INTERVAL` seconds."""

    def __init__(self, label: str, epochs: int, sink: ProgressSink | None) -> None:
        self.label = label
        self.epochs = epochs
        self.sink = sink
        self.start = time.monotonic()
        self._last_batch = 0.0

    def wants_batch(self) -> bool:
        """Whether a mid-epoch update is due (reading the loss costs a device sync)."""
        if self.sink is None:
            return False
        now = time.monotonic()
        if now - self._last_batch < BATCH_INTERVAL:
            return False
        self._last_batch = now
        return True

    def _emit(self, **fields: object) -> None:
        if self.sink is not None:
            self.sink(TrainingProgress(self.label, epochs=self.epochs,
                                       elapsed=time.monotonic() - self.start, **fields))

    def batch(self, epoch: int, batch: int, batches: int, loss: float) -> None:
        self._emit(epoch=epoch, batch=batch, batches=batches, loss=loss)

    def epoch(self, epoch: int, loss: float, test_acc: float) -> None:
        self._emit(epoch=epoch, loss=loss, test_acc=test_acc)

    def close(self, note: str = "") -> None:
        """A run that stopped early (diverged) says why; a finished one has said it all."""
        if note:
            self._emit(epoch=self.epochs, note=note)


__all__ = ["ProgressClock", "ProgressSink", "StreamProgress", "TrainingProgress",
           "format_duration", "progress_sink"]
