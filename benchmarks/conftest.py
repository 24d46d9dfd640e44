"""Benchmark options: ``--device cuda`` runs the step benchmarks on a GPU, at a GPU's size."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="where the step benchmarks run: cpu (default) or cuda[:N]")


@pytest.fixture(scope="session")
def bench_device(request: pytest.FixtureRequest) -> str:
    import torch

    device = str(request.config.getoption("--device"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda: no CUDA device here")
    return device
