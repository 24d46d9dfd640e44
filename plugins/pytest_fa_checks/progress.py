"""Training progress in pytest's terminal: which subject, epoch k of n, loss, accuracy, time left.

Without xdist the run trains in this process, and :class:`TerminalProgress` writes each line
through pytest's terminal reporter with output capture suspended (as pytest's own live logging
does), so ``-s``, ``-v`` and ``-q`` all keep their shape.  With xdist the workers train: each
appends its events to a file of its own (:class:`ProgressFile`) in a folder of the run, and the
controller's :class:`ProgressWatcher` thread reads them and writes the same lines, tagged with
the worker.  Lines are rate-limited per subject (the first epoch, then at most one every
:data:`EVERY` seconds, and the last), so a fast run does not flood the terminal.  ``-qq``
silences them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fa_checks.values import printable

if TYPE_CHECKING:  # the events' class is imported when the first one arrives
    from fa_checks.training.progress import TrainingProgress


#: seconds between two lines of the same subject
EVERY = 5.0
#: seconds between two looks at the workers' files
POLL = 0.5

_LOCK = threading.Lock()


def shows_progress(config: pytest.Config) -> bool:
    """Progress lines unless -qq (or quieter) asked for silence."""
    return config.get_verbosity() > -2


class _Throttle:
    """Which events deserve a line: a subject's first, its last, and one per EVERY seconds."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def wants(self, event: TrainingProgress) -> bool:
        if event.batch is not None:
            return False  # mid-epoch updates would only flicker between pytest's lines
        now = time.monotonic()
        first = event.label not in self._last
        if first or event.finished or now - self._last[event.label] >= EVERY:
            self._last[event.label] = now
            return True
        return False


def write_line(config: pytest.Config, text: str) -> None:
    """``text`` on a line of its own (after pytest's dots, if a line of them is open)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    capture = config.pluginmanager.get_plugin("capturemanager")
    with _LOCK, (capture.global_and_fixture_disabled() if capture is not None
                 else contextlib.nullcontext()):
        reporter.ensure_newline()
        writer = getattr(reporter, "_tw", None)
        if writer is not None and writer.width_of_current_line:
            reporter.write("\n")
        reporter.write_line(printable(text))


class TerminalProgress:
    """A progress sink for runs trained in this process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.throttle = _Throttle()

    def __call__(self, event: TrainingProgress) -> None:
        if self.throttle.wants(event):
            write_line(self.config, f"fa-checks: {event.line()}")


def progress_dir(cache_root: Path, run_id: str) -> Path:
    return cache_root / "progress" / run_id


class ProgressFile:
    """A progress sink on an xdist worker: one JSON line per event worth a line."""

    def __init__(self, folder: Path, worker: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{worker}.jsonl"
        self.throttle = _Throttle()

    def __call__(self, event: TrainingProgress) -> None:
        if self.throttle.wants(event):
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(dataclasses.asdict(event)) + "\n")


class ProgressWatcher:
    """On the xdist controller: a thread that turns the workers' progress files into lines."""

    def __init__(self, config: pytest.Config, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self._offsets: dict[Path, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fa-checks-progress",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()  # what was written after the last look

    def _watch(self) -> None:
        while not self._stop.wait(POLL):
            self.poll()

    def poll(self) -> None:
        from fa_checks.training.progress import TrainingProgress

        for path in sorted(self.folder.glob("*.jsonl")):
            for worker, fields in self._new_events(path):
                event = TrainingProgress(**fields)
                write_line(self.config, f"fa-checks [{worker}]: {event.line()}")

    def _new_events(self, path: Path) -> list[tuple[str, dict[str, Any]]]:
        try:
            with open(path, "rb") as handle:
                handle.seek(self._offsets.get(path, 0))
                data = handle.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self._offsets[path] = self._offsets.get(path, 0) + len(complete)
        events = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                events.append((path.stem, json.loads(line)))
            except json.JSONDecodeError:
                continue
        return events
