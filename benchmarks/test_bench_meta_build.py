"""What measuring a model on the meta device costs at the limits.

Every size keyword is bounded first (:mod:`fa_checks.limits`); the model is then built on the
meta device (:mod:`fa_checks.models.size`) to compare a checkpoint's tensors with it and to count
its state and hidden state.  The worst a file can ask for is ``max_blocks`` blocks at the widest
the limits allow; this times that build and measurement for every architecture, against a
``load_checkpoint`` of a default ResMLP file (d=256, L=4: the everyday cost), in one run.

    .venv/bin/pytest benchmarks/test_bench_meta_build.py -s

Process CPU time, best of several interleaved rounds (robust to other work on a shared machine).
The first measurements of a process are timed apart, in a fresh interpreter: torch's Python meta
kernels would import sympy (about a second) if the measurement ran any, and it must not.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from timing import best_cpu_seconds

from fa_checks.checkpoint import load_checkpoint, save_checkpoint
from fa_checks.limits import Limits
from fa_checks.models import MODELS, build_model
from fa_checks.models.size import build_on_meta, check_model_size

LIMITS = Limits()
#: totals high enough that every measurement runs to its end (the default refuses most of these)
MEASURE_ALL = dataclasses.replace(LIMITS, max_params=10**15, max_hidden_elements=10**15)
BLOCKS = LIMITS.max_blocks
#: the largest model of each architecture whose every keyword is within the default limits
AT_THE_LIMITS = {
    "resmlp": {"input_shape": (3072,), "num_classes": 10, "d_hidden": LIMITS.max_width,
               "num_blocks": BLOCKS},
    "mlp": {"input_shape": (3072,), "num_classes": 10, "d_hidden": LIMITS.max_width,
            "depth": BLOCKS + 2},
    "vit": {"input_shape": (3, 32, 32), "num_classes": 10, "d_model": LIMITS.max_width // 4,
            "n_heads": 4, "num_blocks": BLOCKS},
    "resnet": {"input_shape": (3, 32, 32), "num_classes": 10, "width": LIMITS.max_width,
               "num_blocks": BLOCKS},
}

FIRST_MEASUREMENT = """
import sys, time, torch
from fa_checks.models import MODELS
from fa_checks.models.size import build_on_meta, check_model_size
start = time.process_time()
for arch, shape in (("resmlp", (40,)), ("mlp", (40,)), ("vit", (3, 32, 32)),
                    ("resnet", (3, 32, 32))):
    check_model_size(build_on_meta(lambda: MODELS[arch](input_shape=shape, num_classes=10)),
                     label=arch)
print(time.process_time() - start, "sympy" in sys.modules)
"""


def measure(arch: str) -> None:
    options = dict(AT_THE_LIMITS[arch])
    shape, classes = options.pop("input_shape"), options.pop("num_classes")
    model = build_on_meta(lambda: MODELS[arch](input_shape=shape, num_classes=classes, **options))
    check_model_size(model, MEASURE_ALL, label=arch)


@pytest.fixture(scope="module")
def default_file(tmp_path_factory) -> Path:
    model = build_model("resmlp", input_shape=(40,), num_classes=10)
    return save_checkpoint(tmp_path_factory.mktemp("bench-meta") / "run.pt", model=model)


def test_meta_build_at_the_limits(benchmark, default_file) -> None:
    torch.set_num_threads(1)
    measure("resmlp")  # the one-off import, outside the timings
    runs: dict[str, Callable[[], object]] = {arch: lambda a=arch: measure(a)
                                             for arch in AT_THE_LIMITS}
    runs["load_checkpoint(default)"] = lambda: load_checkpoint(default_file)
    seconds = {name: float("inf") for name in runs}

    def interleaved() -> None:
        for _ in range(2):
            for name, fn in runs.items():
                seconds[name] = min(seconds[name], best_cpu_seconds(fn, repeats=2))

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    everyday = seconds["load_checkpoint(default)"]
    figures: dict[str, float] = {"load_checkpoint_default_s": everyday}
    print(f"\nload_checkpoint of a default ResMLP file: {everyday * 1e3:.1f} ms")
    for arch in AT_THE_LIMITS:
        figures[f"{arch}_meta_build_s"] = seconds[arch]
        figures[f"{arch}_ratio_to_load"] = seconds[arch] / everyday
        print(f"{arch} at {BLOCKS} blocks on meta: {seconds[arch] * 1e3:.0f} ms "
              f"({seconds[arch] / everyday:.0f}x a default load)")
    done = subprocess.run([sys.executable, "-c", FIRST_MEASUREMENT], capture_output=True,
                          text=True, check=True)
    first, imported = done.stdout.split()
    figures["first_measurements_in_a_process_s"] = float(first)
    print(f"first measurements of each default model in a fresh process: "
          f"{float(first) * 1e3:.0f} ms (sympy imported: {imported})")
    benchmark.extra_info.update(figures)
