"""One training step of every built-in rule and the seeds' per-block DFA loop, relative to BP.

ResMLP d=256 L=4 on MNIST-1D-shaped inputs (40 features, 10 classes), batch 128, CPU, one thread
(the repository conftest sets it).  Run:

    .venv/bin/pytest benchmarks/test_bench_step.py --benchmark-columns=median,iqr,rounds

Each benchmark records its median relative to BP's in ``extra_info["ratio_to_bp"]`` and its
minimum relative to BP's in ``extra_info["min_ratio_to_bp"]`` (BP runs first, in the same
session), and prints both with ``-s``; on a shared machine the minimum is the steadier figure.
The fused local-loss step should cost about one BP step; the seeds' loop (no-grad forward, then
L+2 backward passes and optimizer steps) about 1.5x.
"""

from __future__ import annotations

import math
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fa_checks.anatomy import anatomy_of
from fa_checks.methods import MethodError, get_method
from fa_checks.models import build_model

D_HIDDEN, NUM_BLOCKS, BATCH, INPUT_SHAPE, CLASSES = 256, 4, 128, (40,), 10
#: every built-in rule that trains a ResMLP, BP first (the ratios are to BP)
RULES = ("bp", "dfa", "fa", "kp", "sdfa", "drtp", "usf", "frsf", "brsf", "vec", "frozen")
MEDIANS: dict[str, float] = {}
MINIMA: dict[str, float] = {}


def model_and_batch() -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=INPUT_SHAPE, num_classes=CLASSES,
                        d_hidden=D_HIDDEN, num_blocks=NUM_BLOCKS)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, *INPUT_SHAPE, generator=g)
    return model.train(), x, torch.randint(0, CLASSES, (BATCH,), generator=g)


class SeedLoopDFA:
    """The seeds' DFA step as they wrote it: separate optimizers and backward passes."""

    def __init__(self, model: nn.Module, generator: torch.Generator) -> None:
        self.anatomy = anatomy_of(model)
        L = self.anatomy.num_blocks
        self.feedback = [torch.randn(D_HIDDEN, CLASSES, generator=generator) / math.sqrt(CLASSES)
                         for _ in range(L)]

        def adamw(params) -> torch.optim.Optimizer:
            return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

        self.head_opt = adamw(self.anatomy.readout_parameters())
        self.block_opts = [adamw(self.anatomy.block_parameters(l)) for l in range(L)]
        self.embed_opt = adamw(self.anatomy.embed_parameters())

    def step(self, x: Tensor, y: Tensor) -> None:
        anatomy = self.anatomy
        with torch.no_grad():
            hidden = anatomy.hidden_states(x)
            e = anatomy.readout(hidden[-1]).softmax(-1)
            e[torch.arange(x.shape[0]), y] -= 1
        self.head_opt.zero_grad()
        F.cross_entropy(anatomy.readout(hidden[-1].detach()), y).backward()
        self.head_opt.step()
        for l, opt in enumerate(self.block_opts):
            a = e @ self.feedback[l].T
            rms = (a**2).mean(-1, keepdim=True).sqrt() + 1e-6
            f = anatomy.branch(l, hidden[l].detach())
            opt.zero_grad()
            (f * (a / rms)).sum(-1).mean().backward()
            opt.step()
        a0 = e @ self.feedback[0].T
        rms0 = (a0**2).mean(-1, keepdim=True).sqrt() + 1e-6
        self.embed_opt.zero_grad()
        (anatomy.embed(x) * (a0 / rms0)).sum(-1).mean().backward()
        self.embed_opt.step()


def record(benchmark, name: str) -> None:
    """Keep this run's median and minimum; later benchmarks store their ratios to BP's."""
    stats = benchmark.stats.stats
    MEDIANS[name], MINIMA[name] = stats.median, stats.min
    if name != "bp" and "bp" in MEDIANS:
        median_ratio, min_ratio = stats.median / MEDIANS["bp"], stats.min / MINIMA["bp"]
        benchmark.extra_info["ratio_to_bp"] = round(median_ratio, 3)
        benchmark.extra_info["min_ratio_to_bp"] = round(min_ratio, 3)
        print(f"\n{name}: {median_ratio:.2f}x BP by median, {min_ratio:.2f}x by minimum")


@pytest.mark.parametrize("name", RULES)
def test_method_step(benchmark, name):
    model, x, y = model_and_batch()
    try:
        method = get_method(name)
    except MethodError:
        pytest.skip(f"method {name!r} is not available yet")
    method.setup(model, CLASSES, torch.Generator().manual_seed(0))
    benchmark.group = "one training step, ResMLP d=256 L=4, batch 128"
    benchmark.pedantic(method.step, args=(x, y), rounds=100, warmup_rounds=5)
    record(benchmark, name)


def test_seed_loop_dfa_step(benchmark):
    model, x, y = model_and_batch()
    loop = SeedLoopDFA(model, torch.Generator().manual_seed(0))
    benchmark.group = "one training step, ResMLP d=256 L=4, batch 128"
    benchmark.pedantic(loop.step, args=(x, y), rounds=100, warmup_rounds=5)
    record(benchmark, "seed loop dfa")


def test_interleaved_step_ratios(benchmark):
    """The same steps timed round-robin (BP, DFA, FA, KP, seed loop, BP, ...) in process CPU time,
    so other work on a shared machine neither lands in one rule's figure nor drifts between
    rules; the ratios land in ``extra_info``."""
    steppers = {}
    for name in RULES:
        model, x, y = model_and_batch()
        try:
            method = get_method(name)
        except MethodError:
            continue
        method.setup(model, CLASSES, torch.Generator().manual_seed(0))
        steppers[name] = (method.step, x, y)
    model, x, y = model_and_batch()
    steppers["seed loop dfa"] = (SeedLoopDFA(model, torch.Generator().manual_seed(0)).step, x, y)
    times: dict[str, list[float]] = {name: [] for name in steppers}

    def round_robin(rounds: int = 100) -> None:
        for _ in range(rounds):
            for name, (step, x, y) in steppers.items():
                start = time.process_time()
                step(x, y)
                times[name].append(time.process_time() - start)

    round_robin(3)  # warm-up
    times = {name: [] for name in steppers}
    benchmark.group = "round-robin, ResMLP d=256 L=4, batch 128"
    benchmark.pedantic(round_robin, rounds=1, iterations=1)
    bp_median, bp_min = statistics.median(times["bp"]), min(times["bp"])
    lines = []
    for name, measured in times.items():
        median_ratio = statistics.median(measured) / bp_median
        min_ratio = min(measured) / bp_min
        benchmark.extra_info[f"{name} ratio_to_bp"] = round(median_ratio, 3)
        benchmark.extra_info[f"{name} min_ratio_to_bp"] = round(min_ratio, 3)
        lines.append(f"{name}: {median_ratio:.2f}x BP by median, {min_ratio:.2f}x by minimum")
    print("\nround-robin: " + "; ".join(lines))
