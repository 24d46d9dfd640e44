"""What the checks of an untrusted checkpoint cost: ``load_checkpoint`` against a bare
``torch.load(weights_only=True)`` of the same file (which checks nothing), for a default ResMLP
(d=256, L=4, MNIST-1D: 1 MB) and a larger one (d=1024, L=8: 67 MB), zip and legacy formats.

    .venv/bin/pytest benchmarks/test_bench_checkpoint_load.py -s

Everything is timed interleaved in one run, best of several rounds each, in process CPU time
(robust to other work on a shared machine); the ratios are printed and kept in the benchmark
JSON's extra_info.  The checks read every byte once more (the CRC-32 of each member) and scan
the pickle once, so the ratio should fall towards a small constant as the file grows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from timing import best_cpu_seconds

from fa_checks.checkpoint import load_checkpoint, save_checkpoint
from fa_checks.models import build_model

SIZES = {"d256-L4": (256, 4), "d1024-L8": (1024, 8)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("bench-load")
    out = {}
    for name, (width, blocks) in SIZES.items():
        model = build_model("resmlp", input_shape=(40,), num_classes=10, d_hidden=width,
                            num_blocks=blocks)
        path = save_checkpoint(folder / f"{name}.pt", model=model, seed=0, epochs=20,
                               history=[{"epoch": e, "train_loss": 1.0} for e in range(20)])
        out[f"{name}-zip"] = path
        legacy = folder / f"{name}-legacy.pt"
        torch.save(torch.load(path, weights_only=True), legacy,
                   _use_new_zipfile_serialization=False)
        out[f"{name}-legacy"] = legacy
    return out


def test_check_overhead_ratios(benchmark, files) -> None:
    runs: dict[str, Callable[[], object]] = {}
    for name, path in files.items():
        runs[f"{name}/torch.load"] = lambda p=path: torch.load(p, weights_only=True)
        runs[f"{name}/load_checkpoint"] = lambda p=path: load_checkpoint(p)
    seconds = {name: float("inf") for name in runs}

    def interleaved() -> None:
        for _ in range(3):
            for name, fn in runs.items():
                seconds[name] = min(seconds[name], best_cpu_seconds(fn))

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    figures: dict[str, float] = {}
    for name, path in files.items():
        bare, checked = seconds[f"{name}/torch.load"], seconds[f"{name}/load_checkpoint"]
        figures[f"{name}_bytes"] = path.stat().st_size
        figures[f"{name}_torch_load_s"] = bare
        figures[f"{name}_load_checkpoint_s"] = checked
        figures[f"{name}_ratio"] = checked / bare
        print(f"\n{name}: {path.stat().st_size / 2**20:.1f} MB, torch.load {bare * 1e3:.1f} ms, "
              f"load_checkpoint {checked * 1e3:.1f} ms ({checked / bare:.2f}x)")
    benchmark.extra_info.update(figures)
