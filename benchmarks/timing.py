"""Timing helpers the benchmarks share."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_cpu_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """The least process CPU time of ``repeats`` calls: other work on the machine adds to a
    wall clock, not to this process's CPU time."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best
