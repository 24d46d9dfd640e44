"""How many CPU threads torch uses: chosen for the machine as it is, unless the user says.

The rule (measured in ``benchmarks/test_bench_threads.py``, 2 cores): on an idle machine a
second thread speeds up even the default ResMLP's step (1.25x), and a large step by 1.7x; but
with one core busy with other work, two threads make every step 2.4-2.8x *slower* than one,
because torch's OpenMP threads spin-wait for the one that shares its core.  So a process uses
as many threads as there are free cores when it starts its work (sampled from ``/proc/stat``
over 0.1 s), at most its share of the cores, and one thread for steps too small to split.  Who
decides, first to last:

1. ``threads=`` / ``--threads`` / ``--fa-threads`` / the ini key ``fa_threads``;
2. the environment: ``FA_CHECKS_THREADS``, else ``OMP_NUM_THREADS``, else ``MKL_NUM_THREADS``;
3. the rule above, with the cores shared among parallel workers (``pytest -n N``).

Nothing here imports torch at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

ENV_VARIABLES = ("FA_CHECKS_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: multiply-adds per training step below which a step is not worth splitting over threads
SMALL_STEP = 5e7
#: seconds over which the cores' use is sampled
SAMPLE_SECONDS = 0.1

#: how many processes share this machine's cores (set by pytest-xdist workers)
_sharing = 1


def share_cores(workers: int) -> None:
    """Declare this process one of ``workers`` sharing the cores (an xdist worker does)."""
    global _sharing
    _sharing = max(1, int(workers))


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def env_threads() -> int | None:
    """The thread count the environment asks for, if any.

    ``FA_CHECKS_THREADS`` is ours: anything but a whole number from 1 is a ConfigError naming
    it.  ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` belong to their libraries, whose own forms
    (OpenMP's nested ``"4,2"``) are left to them.  A count above the limit ``max_threads`` is a
    ConfigError from any of them: torch would crash on it.
    """
    from ..errors import ConfigError
    from ..limits import beyond, default_limits

    for name in ENV_VARIABLES:
        text = os.environ.get(name, "").strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            if name == ENV_VARIABLES[0]:
                raise ConfigError(f"{name}={text!r}: it must be a whole number of 1 or more "
                                  "(torch threads per process)")
            continue
        limits = default_limits()
        if int(text) > limits.max_threads:
            raise ConfigError(f"{name}={text}: above {beyond('max_threads', limits, text)}")
        return int(text)
    return None


def busy_cores(window: float = SAMPLE_SECONDS) -> float | None:
    """How many cores other work keeps busy now (Linux: ``/proc/stat`` sampled over
    ``window`` seconds, while this process waits); None where that cannot be read."""
    import time

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    before = sample()
    time.sleep(window)
    after = sample()
    if before is None or after is None or after[0] <= before[0]:
        return None
    total, idle = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * (total - idle) / total


def choose_threads(requested: int | None = None, *, step_madds: float | None = None) -> int:
    """The thread count for a process about to run steps of ``step_madds`` multiply-adds
    (unknown: worth splitting), sharing the cores with the processes :func:`share_cores`
    declared: the free cores now, within its share."""
    if requested is not None:
        return max(1, int(requested))
    from_env = env_threads()
    if from_env is not None:
        return from_env
    share = max(1, available_cores() // _sharing)
    if share == 1 or (step_madds is not None and step_madds < SMALL_STEP):
        return 1
    busy = busy_cores()
    free = share if busy is None else available_cores() - busy
    return max(1, min(share, int(free + 0.25)))


def step_madds(model: Any, x: Any, batch_size: int) -> float:
    """Multiply-adds of one training step of ``model`` on batches of ``batch_size`` samples
    shaped like ``x``: about 3x a forward pass (forward, and backward to inputs and weights)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.anatomy import anatomy_of, eval_mode

    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        anatomy_of(model).logits(x[:1])  # a user's model may define no forward
    return 3 * counter.get_total_flops() / 2 * batch_size


def use_threads(requested: int | None = None) -> int:
    """Set this process's torch threads for small work (what a face does once at start)."""
    import torch

    count = choose_threads(requested)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


@contextmanager
def training_threads(model: Any = None, x: Any = None, batch_size: int = 128, *,
                     threads: int | None = None) -> Iterator[int]:
    """Run a training loop you write yourself under the threads rule fa-checks' own trainer
    follows (the module docstring): ``threads`` if given, else the environment's count, else
    the free cores within this process's share, and one thread when a step of ``model`` on
    ``batch_size`` samples shaped like ``x`` is too small to split.  Yields the count::

        with fa_checks.training_threads(model, x_train[:1], batch_size=128) as n:
            for epoch in range(epochs): ...

    Torch's default (every core, spin-waiting) made a user's 10 s of work take 109 s on a
    busy 2-core machine.  The previous count is restored afterwards.
    """
    madds = None
    if threads is None and model is not None and x is not None:
        madds = step_madds(model, x, batch_size)
    with torch_threads(choose_threads(threads, step_madds=madds)) as count:
        yield count


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


__all__ = ["ENV_VARIABLES", "available_cores", "busy_cores", "choose_threads", "env_threads",
           "share_cores", "step_madds", "torch_threads", "training_threads", "use_threads"]
