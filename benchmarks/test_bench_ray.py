"""Ray: what one task costs beyond a local run, and what a second node gives a sweep.

    .venv/bin/pytest benchmarks/test_bench_ray.py -s -p no:xdist

Every figure comes from real Ray clusters started on this machine (``tests/ray_cluster.py``:
``ray start`` nodes of one CPU each).  On a shared machine the figures are provisional: the
machine's own limit (``machine_speedup``: two training processes at once against one) is
measured in the same run and printed beside them.

* ``test_task_overhead``: one short subject (a run, its frozen-blocks baseline and the
  evaluation: three tasks) evaluated locally in this process, against ``evaluate_on_ray`` on a
  one-node cluster.  *Cold* is what a command line pays (connect, start a worker that imports
  torch, three tasks, disconnect); *warm* is a connection kept open and workers already started,
  from which the per-task overhead is (warm - local) / 3.
* ``test_sweep_two_nodes_against_one``: a 12-run sweep (bp and dfa x 6 seeds with their 6
  shared baselines: 30 tasks) from a cold driver cache on a one-node cluster against a
  two-node one, each call connecting afresh as the command line would.
* ``test_gpu_sweep_shared_against_one_at_a_time``: the same sweep on one GPU with
  ``gpus_per_run=0.25`` (four runs share it) against ``1`` (one at a time); needs CUDA.

``FA_BENCH_ROUNDS`` (default 1) repeats each timing and keeps the best.  The figures are printed
and stored in the benchmark JSON's ``extra_info``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from ray_cluster import LocalRayCluster, ray_installed  # noqa: E402
from test_bench_plugin import machine_speedup  # noqa: E402

from fa_checks.cache.store import ArtifactCache  # noqa: E402
from fa_checks.evaluation import evaluate_subject  # noqa: E402
from fa_checks.settings import Settings  # noqa: E402
from fa_checks.subjects import fresh_subjects  # noqa: E402

pytestmark = pytest.mark.skipif(not ray_installed(), reason="Ray is not installed: "
                                "pip install 'fa-checks[ray]'")

ROUNDS = int(os.environ.get("FA_BENCH_ROUNDS", "1"))
SETTINGS = Settings(device="cpu", eval_size=256)
#: a short run: about a second of training on one thread
SHORT = fresh_subjects("bp", [1], data="synthetic", epochs=10,
                       arch_options={"d_hidden": 64, "num_blocks": 2},
                       data_options={"num_samples": 4096})
#: the sweep: runs of a few seconds, as in benchmarks/test_bench_plugin.py's machine probe
SWEEP_ARCH = {"d_hidden": 128, "num_blocks": 4}
SWEEP = [subject for method in ("bp", "dfa")
         for subject in fresh_subjects(method, [1, 2, 3, 4, 5, 6], data="mnist1d", epochs=4,
                                       arch_options=SWEEP_ARCH)]


def best_time(call, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


_CACHES = itertools.count()


def fresh_cache(root: Path) -> ArtifactCache:
    return ArtifactCache(root / f"cache{next(_CACHES)}")


def on_ray(subjects, cluster: LocalRayCluster, root: Path, settings: Settings = SETTINGS,
           **resources) -> None:
    from fa_checks.cluster import evaluate_on_ray
    from fa_checks.evaluation import Failure

    settings = dataclasses.replace(settings, ray_address=cluster.address, **resources)
    outcomes = evaluate_on_ray(subjects, settings, fresh_cache(root))
    errors = [o for o in outcomes.values() if isinstance(o, Failure)]
    assert not errors, errors


@pytest.fixture
def cluster_of():
    """Start a local cluster (``cluster_of(workers=..., cpus=..., gpus=...)``); all stopped
    at the end."""
    started: list[LocalRayCluster] = []

    def start(*, workers: int = 0, cpus: int = 1, gpus: int = 0) -> LocalRayCluster:
        cluster = LocalRayCluster(cpus=cpus, gpus=gpus)
        started.append(cluster)
        return cluster.start(workers=workers)

    yield start
    for cluster in started:
        cluster.stop()


def test_task_overhead(benchmark, cluster_of, tmp_path: Path) -> None:
    import ray

    cluster = cluster_of(workers=0)
    evaluate_subject(SHORT[0], SETTINGS, fresh_cache(tmp_path))  # imports and data, once
    local = best_time(lambda: evaluate_subject(SHORT[0], SETTINGS, fresh_cache(tmp_path)),
                      max(3, ROUNDS))
    cold = best_time(lambda: on_ray(SHORT, cluster, tmp_path))
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        on_ray(SHORT, cluster, tmp_path)  # start the workers of this connection
        warm_times: list[float] = []

        def warm() -> None:
            start = time.perf_counter()
            on_ray(SHORT, cluster, tmp_path)
            warm_times.append(time.perf_counter() - start)

        benchmark.pedantic(warm, rounds=max(3, ROUNDS), iterations=1)
    finally:
        ray.shutdown()
    warm_best = min(warm_times)
    per_task = (warm_best - local) / 3
    benchmark.extra_info.update(local_s=local, ray_cold_s=cold, ray_warm_s=warm_best,
                                per_task_overhead_s=per_task)
    print(f"\nshort subject (3 tasks): local {local:.2f} s; on Ray cold {cold:.2f} s "
          f"(+{cold - local:.2f} s), warm {warm_best:.2f} s: {per_task * 1000:.0f} ms a task")


def test_sweep_two_nodes_against_one(benchmark, cluster_of, tmp_path: Path) -> None:
    machine = machine_speedup()
    one = cluster_of(workers=0)
    single = best_time(lambda: on_ray(SWEEP, one, tmp_path))
    one.stop()
    two = cluster_of(workers=1)
    times: list[float] = []

    def sweep() -> None:
        start = time.perf_counter()
        on_ray(SWEEP, two, tmp_path)
        times.append(time.perf_counter() - start)

    benchmark.pedantic(sweep, rounds=ROUNDS, iterations=1)
    machine = max(machine, machine_speedup())
    double = min(times)
    speedup = single / double
    benchmark.extra_info.update(one_node_s=single, two_nodes_s=double, speedup=speedup,
                                machine_speedup=machine, efficiency=speedup / machine)
    print(f"\n12-run sweep (30 tasks): one node {single:.1f} s, two nodes {double:.1f} s: "
          f"{speedup:.2f}x; the machine allowed {machine:.2f}x (two trainings at once), "
          f"efficiency {speedup / machine:.0%}")


def test_gpu_sweep_shared_against_one_at_a_time(benchmark, cluster_of, tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    cluster = cluster_of(workers=0, cpus=max(4, os.cpu_count() or 4), gpus=1)
    on_gpu = Settings(device="auto", eval_size=256)
    alone = best_time(lambda: on_ray(SWEEP, cluster, tmp_path, settings=on_gpu,
                                     gpus_per_run=1.0))
    times: list[float] = []

    def shared() -> None:
        start = time.perf_counter()
        on_ray(SWEEP, cluster, tmp_path, settings=on_gpu, gpus_per_run=0.25)
        times.append(time.perf_counter() - start)

    benchmark.pedantic(shared, rounds=ROUNDS, iterations=1)
    speedup = alone / min(times)
    benchmark.extra_info.update(one_at_a_time_s=alone, quarter_gpu_s=min(times),
                                speedup=speedup)
    print(f"\n12-run sweep on one GPU: one run at a time {alone:.1f} s, four at once "
          f"(--gpus-per-run 0.25) {min(times):.1f} s: {speedup:.2f}x")
