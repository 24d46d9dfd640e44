"""Whole-process timings of the pytest plugin, as a user runs it (``python -m pytest ...``).

    .venv/bin/pytest benchmarks/test_bench_plugin.py -s

* ``test_four_seeds_parallel_against_serial``: ``--fa-method dfa --fa-seeds 1 2 3 4`` on
  MNIST-1D (the default ResMLP d=256, L=4, 20 epochs: a run and a frozen-blocks baseline per
  seed) with a cold cache, ``-n 0`` against ``-n 2``; the speedup is the serial wall time over
  the parallel one (aim: 1.7x or better on two cores). ``FA_BENCH_ROUNDS`` (default 1) repeats
  the pair, interleaved, and keeps the best of each (robust to a busy machine). The same test
  measures what the machine itself allows at that moment: one training process alone against two
  at once (``machine_speedup`` = 2 x alone / together; 2.0 on two idle cores). On a shared
  machine the plugin's speedup is bounded by it; ``efficiency`` = speedup / machine_speedup.
* ``test_cached_checkpoint_overhead``: ``pytest --fa-checkpoint run.pt`` once its report is
  cached, against a pytest run of one test that imports torch: what the plugin adds to pytest's
  and torch's own start-up (aim: under 3 s).  Best of 3 each.

The figures are printed and stored in the benchmark JSON's ``extra_info``.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

SEED_ARGS = ("--fa-method", "dfa", "--fa-seeds", "1", "2", "3", "4", "--fa-data", "mnist1d",
             "--fa-epochs", "20", "-q")  # the library's default ResMLP d=256 L=4
ROUNDS = int(os.environ.get("FA_BENCH_ROUNDS", "1"))


CPU_SECONDS: dict[float, float] = {}  # wall time of a pytest_process -> its CPU seconds


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pytest_process(folder: Path, *args: str) -> float:
    """Wall time of ``python -m pytest *args`` in ``folder``; it must exit 0 or 1 (verdicts).

    The CPU seconds of the process and its xdist workers go to ``CPU_SECONDS``.
    """
    # the folder's own cache: a new folder starts cold, a reused one finds what it made
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FA_CHECKS_CACHE": str(folder / "cache")}
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - start
    CPU_SECONDS[elapsed] = _children_cpu() - cpu
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    assert "fa-checks verdicts" in done.stdout, done.stdout[-3000:]
    return elapsed


TRAINING = ("import sys, time, torch; torch.set_num_threads(1); "
            "from fa_checks.training.loop import train; t = time.perf_counter(); "
            "train('dfa', 'resmlp', 'mnist1d', epochs=4, seed=int(sys.argv[1]), device='cpu', "
            "progress=False, arch_options={'d_hidden': 128, 'num_blocks': 4}); "
            "print(time.perf_counter() - t)")


def machine_speedup() -> float:
    """2 x (one training alone) / (two trainings at once): how many cores we really have."""

    def start(seed: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", TRAINING, str(seed)],
                                stdout=subprocess.PIPE, text=True)

    alone = float(start(1).communicate(timeout=900)[0])
    pair = [start(1), start(2)]
    together = max(float(p.communicate(timeout=900)[0]) for p in pair)
    return 2 * alone / together


def fresh_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    return folder


def test_four_seeds_parallel_against_serial(benchmark, tmp_path: Path) -> None:
    serial_times, parallel_times = [], []
    counter = iter(range(10**6))

    def parallel_setup() -> tuple[tuple[Path], dict]:
        # each round trains from a cold cache: a new folder, so a new cache
        serial_times.append(
            pytest_process(fresh_folder(tmp_path, f"serial{next(counter)}"), *SEED_ARGS,
                           "-p", "no:xdist")
        )
        return (fresh_folder(tmp_path, f"parallel{next(counter)}"),), {}

    def parallel(folder: Path) -> None:
        parallel_times.append(pytest_process(folder, *SEED_ARGS, "-n", "2"))

    machine = machine_speedup()
    benchmark.pedantic(parallel, setup=parallel_setup, rounds=ROUNDS, iterations=1)
    machine = max(machine, machine_speedup())  # before and after: the better of the two
    serial, best_parallel = min(serial_times), min(parallel_times)
    speedup = serial / best_parallel
    serial_cpu, parallel_cpu = CPU_SECONDS[serial], CPU_SECONDS[best_parallel]
    benchmark.extra_info.update(serial_s=serial, parallel_s=best_parallel, speedup=speedup,
                                machine_speedup=machine, efficiency=speedup / machine,
                                serial_cpu_s=serial_cpu, parallel_cpu_s=parallel_cpu,
                                rounds=ROUNDS, cores=os.cpu_count())
    print(f"\nfour fresh seeds: -n 0 {serial:.1f} s, -n 2 {best_parallel:.1f} s, "
          f"speedup {speedup:.2f}x (best of {ROUNDS}); the machine allowed {machine:.2f}x "
          f"(two trainings at once), efficiency {speedup / machine:.0%}; CPU seconds "
          f"{serial_cpu:.1f} (-n 0) and {parallel_cpu:.1f} (-n 2, all processes)")


@pytest.fixture(scope="module")
def cached_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BP run on MNIST-1D (d=64, L=2, 2 epochs) whose report is already in the cache."""
    folder = tmp_path_factory.mktemp("cached")
    code = ("from fa_checks.training.loop import train; "
            "train('bp', 'resmlp', 'mnist1d', epochs=2, seed=0, device='cpu', progress=False, "
            "arch_options={'d_hidden': 64, 'num_blocks': 2}, checkpoint='run.pt')")
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True, timeout=900)
    (folder / "test_torch_only.py").write_text("import torch\n\n\ndef test_ok():\n    pass\n")
    pytest_process(folder, "--fa-checkpoint", "run.pt", "-p", "no:xdist", "-q")  # fill cache
    return folder


def test_cached_checkpoint_overhead(benchmark, cached_checkpoint: Path) -> None:
    folder = cached_checkpoint
    baseline = []
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "test_torch_only.py", "-p",
                               "no:xdist", "-q"], cwd=folder, capture_output=True, timeout=600)
        baseline.append(time.perf_counter() - start)
        assert done.returncode == 0
    times: list[float] = []

    def check() -> None:
        times.append(pytest_process(folder, "--fa-checkpoint", "run.pt", "-p", "no:xdist",
                                    "-q"))

    benchmark.pedantic(check, rounds=3, iterations=1)
    overhead = min(times) - min(baseline)
    benchmark.extra_info.update(check_s=min(times), pytest_and_torch_s=min(baseline),
                                overhead_s=overhead)
    print(f"\ncached checkpoint: {min(times):.2f} s; pytest + torch alone {min(baseline):.2f} s; "
          f"plugin overhead {overhead:.2f} s")


@pytest.fixture(scope="module")
def four_cached_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four BP runs on MNIST-1D (d=32, L=2, 1 epoch) whose reports are already cached."""
    folder = tmp_path_factory.mktemp("cached4")
    code = ("from fa_checks.training.loop import train\n"
            "for seed in range(4):\n"
            "    train('bp', 'resmlp', 'mnist1d', epochs=1, seed=seed, device='cpu', "
            "progress=False, arch_options={'d_hidden': 32, 'num_blocks': 2}, "
            "checkpoint=f'run{seed}.pt')\n")
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True, timeout=900)
    (folder / "test_trivial.py").write_text("def test_ok():\n    pass\n")
    pytest_process(folder, "--fa-checkpoint", "run*.pt", "-p", "no:xdist", "-q")  # fill cache
    return folder


def test_cached_rerun_against_bare_pytest(benchmark, four_cached_checkpoints: Path) -> None:
    """``pytest --fa-checkpoint 'run*.pt'`` (four checkpoints, every report cached) with -n 0
    and -n 2, against a bare pytest run of one trivial test; interleaved, ``FA_BENCH_ROUNDS``
    rounds (default 3), best and median of each, wall time and CPU seconds of all processes.
    Aims: -n 0 within 2.5x of bare pytest, -n 2 within 1.5x of -n 0."""
    folder = four_cached_checkpoints
    commands = {
        "bare": ("test_trivial.py", "-p", "no:xdist", "-q"),
        "n0": ("--fa-checkpoint", "run*.pt", "-p", "no:xdist", "-q"),
        "n2": ("--fa-checkpoint", "run*.pt", "-n", "2", "-q"),
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}

    def bare_pytest(args: tuple[str, ...]) -> float:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FA_CHECKS_CACHE": str(folder / "cache")}
        cpu, start = _children_cpu(), time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=folder, env=env,
                              capture_output=True, timeout=600)
        elapsed = time.perf_counter() - start
        CPU_SECONDS[elapsed] = _children_cpu() - cpu
        assert done.returncode == 0
        return elapsed

    def interleaved() -> None:
        for _ in range(int(os.environ.get("FA_BENCH_ROUNDS", "3"))):
            for name, args in commands.items():
                wall = (bare_pytest(args) if name == "bare" else pytest_process(folder, *args))
                walls[name].append(wall)
                cpus[name].append(CPU_SECONDS[wall])

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    best = {name: min(times) for name, times in walls.items()}
    median = {name: statistics.median(times) for name, times in walls.items()}
    cpu = {name: min(times) for name, times in cpus.items()}
    figures = {
        "n0_over_bare": best["n0"] / best["bare"],
        "n2_over_n0": best["n2"] / best["n0"],
        "n0_over_bare_median": median["n0"] / median["bare"],
        "n2_over_n0_median": median["n2"] / median["n0"],
        "n0_over_bare_cpu": cpu["n0"] / cpu["bare"],
        "n2_over_n0_cpu": cpu["n2"] / cpu["n0"],
        "load_average": os.getloadavg()[0],
    }
    benchmark.extra_info.update(figures, **{f"{k}_s": v for k, v in best.items()})
    print("\ncached rerun of four checkpoints: " + ", ".join(
        f"{name} {best[name]:.2f} s (CPU {cpu[name]:.2f} s)" for name in commands)
        + f"; -n 0 / bare {figures['n0_over_bare']:.2f}x (median "
        f"{figures['n0_over_bare_median']:.2f}x, CPU {figures['n0_over_bare_cpu']:.2f}x), "
        f"-n 2 / -n 0 {figures['n2_over_n0']:.2f}x (median {figures['n2_over_n0_median']:.2f}x,"
        f" CPU {figures['n2_over_n0_cpu']:.2f}x); load average {figures['load_average']:.1f}")
