"""``fa-checks sweep -j 2`` against ``-j 1``: the wall-clock speed-up of parallel processes on
this machine, with the same table.

Four subjects (BP, seeds 0-3, ResMLP d=256 L=4 on MNIST-1D, 1 epoch, the baseline accuracy
given so no baseline is trained), each size run fresh (``--retrain``) in one shared cache.
Each command is one round of pytest-benchmark (pedantic); the ratio is in ``extra_info``
and printed, with the load average before and after (the machine is shared).  Run:

    .venv/bin/pytest benchmarks/test_bench_sweep.py -s -p no:randomly
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["sweep", "--methods", "bp", "--seeds", "0", "1", "2", "3", "--epochs", "1",
        "--baseline-acc", "0.3", "--no-credit", "--retrain", "--no-progress", "-q"]


def _sweep(tmp: Path, jobs: int) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fa_checks.cli.main", *ARGS, "-j", str(jobs),
                           "-o", str(tmp / f"j{jobs}")], capture_output=True, text=True,
                          env={**os.environ, "FA_CHECKS_CACHE": str(tmp / "cache")}, check=False)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    return seconds, done.stdout.split("\n\n")[0]


def test_sweep_two_processes_against_one(benchmark: pytest.FixtureRequest,
                                         tmp_path: Path) -> None:
    load_before = os.getloadavg()
    _sweep(tmp_path, 1)  # the data set made once, outside the timing
    times: dict[int, float] = {}
    tables: dict[int, str] = {}

    def both() -> None:
        for jobs in (1, 2):
            times[jobs], tables[jobs] = _sweep(tmp_path, jobs)

    benchmark.pedantic(both, rounds=1, iterations=1)
    assert tables[1] == tables[2]  # the same table whatever -j
    ratio = times[1] / times[2]
    load_after = os.getloadavg()
    benchmark.extra_info.update(seconds_j1=times[1], seconds_j2=times[2], speedup=ratio,
                                load_before=load_before, load_after=load_after)
    print(f"\nsweep of 4 subjects: -j 1 {times[1]:.1f} s, -j 2 {times[2]:.1f} s, speed-up "
          f"{ratio:.2f}x; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
