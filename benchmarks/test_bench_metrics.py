"""The perturbation correlation at M=32 directions, N=1024 samples, d=256 (ResMLP, L=4 blocks,
from layer 1), one thread: the straightforward loop of the research code (one forward pass and
one host copy per direction), ours (directions batched in chunks, nothing leaves the device
until the end), and the closed-form limit (the pooled cosine from one backward pass), against
the floor: the multiply-adds of M x N forward passes from layer 1 at this machine's measured
matmul rate.

    .venv/bin/pytest benchmarks/test_bench_metrics.py -s

``test_ratios`` times all of them interleaved in one run (robust to a busy machine: process CPU
time on a CPU, the best and the median of nine rounds each) and prints the ratios; they are
also in the benchmark JSON's extra_info.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from fa_checks.diagnostics import metrics
from fa_checks.models import build_model
from fa_checks.models.anatomy import per_sample_gradients

DIRECTIONS, SAMPLES, WIDTH, BLOCKS, CLASSES, LAYER, EPSILON = 32, 1024, 256, 4, 10, 1, 1e-3
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def setup_case(device: str) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model(
        "resmlp", input_shape=(40,), num_classes=CLASSES, d_hidden=WIDTH, num_blocks=BLOCKS
    ).to(device).eval()
    x = torch.randn(SAMPLES, 40, device=device)
    y = torch.randint(0, CLASSES, (SAMPLES,), device=device)
    hidden, grads, _ = per_sample_gradients(model, x, y)
    g = grads[LAYER]
    a = g + g.std() * torch.randn(g.shape, device=device)  # a partly aligned credit signal
    return {"h": hidden[LAYER], "a": a, "loss": metrics.layer_loss(model, LAYER, y)}


def straightforward_loop(h, a, loss_fn, seed: int = 0) -> float:
    """The research code's loop: one forward pass and one host copy per direction."""
    generator = torch.Generator(device=h.device).manual_seed(seed)
    with torch.no_grad():
        base = loss_fn(h)
        predicted, actual = [], []
        for _ in range(DIRECTIONS):
            v = torch.randn(h.shape, generator=generator, device=h.device)
            v = v / v.norm(dim=1, keepdim=True)
            predicted.append((a * (EPSILON * v)).sum(dim=1).cpu().numpy())
            actual.append((loss_fn(h + EPSILON * v) - base).cpu().numpy())
    return float(pearsonr(np.concatenate(predicted), np.concatenate(actual))[0])


def batched(h, a, loss_fn, seed: int = 0) -> float:
    generator = torch.Generator(device=h.device).manual_seed(seed)
    return metrics.perturbation_correlation(
        h, a, loss_fn, epsilon=EPSILON, M=DIRECTIONS, generator=generator
    )


def closed_form(h, a, loss_fn) -> float:
    return metrics.perturbation_correlation_limit(h, a, loss_fn)


def forward_multiply_adds() -> int:
    """Multiply-adds of M x N forward passes from layer 1: two d x d matrices per remaining
    block and the d x C head (LayerNorm, GELU and biases are left out: a lower bound)."""
    per_sample = (BLOCKS - LAYER) * 2 * WIDTH * WIDTH + WIDTH * CLASSES
    return DIRECTIONS * SAMPLES * per_sample


def matmul_operands(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return (torch.randn(8 * SAMPLES, WIDTH, device=device),
            torch.randn(WIDTH, WIDTH, device=device))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_of(fn: Callable[[], object], device: str) -> float:
    """One call's time: process CPU time on a CPU (other work on a shared machine stays out of
    it), the wall clock around a synchronised call on a GPU."""
    clock = time.process_time if device == "cpu" else time.perf_counter
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


@pytest.fixture(scope="module", params=DEVICES)
def case(request) -> dict:
    return {"device": request.param, **setup_case(request.param)}


def test_straightforward_loop(benchmark, case) -> None:
    benchmark.pedantic(straightforward_loop, args=(case["h"], case["a"], case["loss"]),
                       rounds=5, warmup_rounds=1)


def test_batched(benchmark, case) -> None:
    benchmark.pedantic(batched, args=(case["h"], case["a"], case["loss"]),
                       rounds=5, warmup_rounds=1)


def test_closed_form(benchmark, case) -> None:
    benchmark.pedantic(closed_form, args=(case["h"], case["a"], case["loss"]),
                       rounds=5, warmup_rounds=1)


def test_matmul_rate(benchmark, case) -> None:
    left, right = matmul_operands(case["device"])
    benchmark.pedantic(torch.mm, args=(left, right), rounds=20, warmup_rounds=2)
    benchmark.extra_info["multiply_adds"] = left.shape[0] * WIDTH * WIDTH


def test_ratios(benchmark, case) -> None:
    """All variants interleaved, best of several rounds each; ratios in extra_info."""
    device, h, a, loss_fn = case["device"], case["h"], case["a"], case["loss"]
    # the same directions give the same figure (the float32 sums differ only in rounding)
    assert batched(h, a, loss_fn) == pytest.approx(straightforward_loop(h, a, loss_fn), abs=1e-5)
    left, right = matmul_operands(device)
    runs = {
        "loop": lambda: straightforward_loop(h, a, loss_fn),
        "batched": lambda: batched(h, a, loss_fn),
        "closed_form": lambda: closed_form(h, a, loss_fn),
        "matmul": lambda: torch.mm(left, right),
    }
    measured: dict[str, list[float]] = {name: [] for name in runs}

    def interleaved() -> None:
        for _ in range(9):
            for name, fn in runs.items():
                measured[name].append(best_of(fn, device))

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    seconds = {name: min(times) for name, times in measured.items()}
    benchmark.extra_info["batched_speed_vs_loop_by_median"] = (
        statistics.median(measured["loop"]) / statistics.median(measured["batched"]))
    rate = left.shape[0] * WIDTH * WIDTH / seconds["matmul"]
    floor = forward_multiply_adds() / rate
    figures = {
        "device": device,
        "matmul_multiply_adds_per_s": rate,
        "floor_s": floor,
        "loop_s": seconds["loop"],
        "batched_s": seconds["batched"],
        "closed_form_s": seconds["closed_form"],
        "loop_over_floor": seconds["loop"] / floor,
        "batched_over_floor": seconds["batched"] / floor,
        "batched_speed_vs_loop": seconds["loop"] / seconds["batched"],
        "closed_form_speed_vs_loop": seconds["loop"] / seconds["closed_form"],
        "closed_form_rho": closed_form(h, a, loss_fn),
        "batched_rho": batched(h, a, loss_fn),
    }
    benchmark.extra_info.update(figures)
    print(
        f"\n[{device}] floor {floor * 1e3:.0f} ms ({rate / 1e9:.1f} G multiply-adds/s) | "
        f"loop {seconds['loop'] * 1e3:.0f} ms ({figures['loop_over_floor']:.2f}x floor) | "
        f"batched {seconds['batched'] * 1e3:.0f} ms ({figures['batched_over_floor']:.2f}x floor,"
        f" {figures['batched_speed_vs_loop']:.2f}x the loop's speed by the best, "
        f"{benchmark.extra_info['batched_speed_vs_loop_by_median']:.2f}x by median) | closed form "
        f"{seconds['closed_form'] * 1e3:.1f} ms ({figures['closed_form_speed_vs_loop']:.1f}x "
        f"sooner; rho {figures['closed_form_rho']:.4f} vs {figures['batched_rho']:.4f})"
    )
