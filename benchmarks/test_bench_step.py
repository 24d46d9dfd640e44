"""One training step of every built-in rule and the seeds' per-block DFA loop, relative to BP.

On the CPU: ResMLP d=256 L=4 on MNIST-1D-shaped inputs (40 features, 10 classes), batch 128,
one thread (the repository conftest sets it).  With ``--device cuda``: ResMLP d=1024 L=8 on
3072 features (CIFAR-shaped), batch 256, each step followed by a device synchronisation so the
figure is the step's whole time.  Run:

    .venv/bin/pytest benchmarks/test_bench_step.py --benchmark-columns=median,iqr,rounds
    .venv/bin/pytest benchmarks/test_bench_step.py --device cuda

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

from fa_checks.methods import MethodError, get_method
from fa_checks.models import build_model
from fa_checks.models.anatomy import anatomy_of

#: (d_hidden, num_blocks, batch, input_shape, classes) per device type
SIZES = {"cpu": (256, 4, 128, (40,), 10), "cuda": (1024, 8, 256, (3072,), 10)}
#: every built-in rule that trains a ResMLP, BP first (the ratios are to BP)
RULES = ("bp", "dfa", "fa", "kp", "sdfa", "drtp", "usf", "frsf", "brsf", "vec", "frozen")
MEDIANS: dict[str, float] = {}
MINIMA: dict[str, float] = {}


def model_and_batch(device: str = "cpu") -> tuple[nn.Module, Tensor, Tensor]:
    d_hidden, num_blocks, batch, input_shape, classes = SIZES[torch.device(device).type]
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=input_shape, num_classes=classes,
                        d_hidden=d_hidden, num_blocks=num_blocks)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *input_shape, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    return model.train().to(device), x.to(device), y.to(device)


def synchronised(step, device: str):
    """``step``, then wait for the device: a GPU step's time is not its launch time."""
    if not device.startswith("cuda"):
        return step

    def run(x: Tensor, y: Tensor) -> None:
        step(x, y)
        torch.cuda.synchronize()

    return run


class SeedLoopDFA:
    """The seeds' DFA step as they wrote it: separate optimizers and backward passes."""

    def __init__(self, model: nn.Module, generator: torch.Generator) -> None:
        self.anatomy = anatomy_of(model)
        L = self.anatomy.num_blocks
        device = next(model.parameters()).device
        d_hidden, classes = model.out_ln.normalized_shape[0], model.out_head.out_features
        self.feedback = [(torch.randn(d_hidden, classes, generator=generator)
                          / math.sqrt(classes)).to(device) for _ in range(L)]

        def adamw(params) -> torch.optim.Optimizer:
            return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)

        self.head_opt = adamw(self.anatomy.readout_parameters())
        self.block_opts = [adamw(self.anatomy.block_parameters(l)) for l in range(L)]
        # the embedding is every parameter neither in a block nor in the readout
        taken = {id(p) for p in self.anatomy.readout_parameters()}
        taken.update(id(p) for l in range(L) for p in self.anatomy.block_parameters(l))
        self.embed_opt = adamw([p for p in model.parameters() if id(p) not in taken])

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
    if benchmark.stats is None:  # --benchmark-disable: the step ran once, nothing was timed
        return
    stats = benchmark.stats.stats
    MEDIANS[name], MINIMA[name] = stats.median, stats.min
    if name != "bp" and "bp" in MEDIANS:
        median_ratio, min_ratio = stats.median / MEDIANS["bp"], stats.min / MINIMA["bp"]
        benchmark.extra_info["ratio_to_bp"] = round(median_ratio, 3)
        benchmark.extra_info["min_ratio_to_bp"] = round(min_ratio, 3)
        print(f"\n{name}: {median_ratio:.2f}x BP by median, {min_ratio:.2f}x by minimum")


def _group(device: str) -> str:
    d_hidden, num_blocks, batch, input_shape, _ = SIZES[torch.device(device).type]
    return (f"one training step, ResMLP d={d_hidden} L={num_blocks}, {input_shape[0]} inputs, "
            f"batch {batch}, {device}")


@pytest.mark.parametrize("name", RULES)
def test_method_step(benchmark, name, bench_device):
    model, x, y = model_and_batch(bench_device)
    try:
        method = get_method(name)
    except MethodError:
        pytest.skip(f"method {name!r} is not available yet")
    generator = torch.Generator(device=x.device).manual_seed(0)
    method.setup(model, int(model.out_head.out_features), generator)
    benchmark.group = _group(bench_device)
    benchmark.pedantic(synchronised(method.step, bench_device), args=(x, y), rounds=100,
                       warmup_rounds=5)
    record(benchmark, name)


def test_seed_loop_dfa_step(benchmark, bench_device):
    model, x, y = model_and_batch(bench_device)
    loop = SeedLoopDFA(model, torch.Generator().manual_seed(0))
    benchmark.group = _group(bench_device)
    benchmark.pedantic(synchronised(loop.step, bench_device), args=(x, y), rounds=100,
                       warmup_rounds=5)
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
        method.setup(model, int(model.out_head.out_features), torch.Generator().manual_seed(0))
        steppers[name] = (method.step, x, y)
    model, x, y = model_and_batch()
    dense = get_method("dfa")
    dense.setup(model, int(model.out_head.out_features), torch.Generator().manual_seed(0))
    dense.low_rank = False  # the step before its gradients were taken in factors
    steppers["dfa dense"] = (dense.step, x, y)
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


def _bp_parts(method, x: Tensor, y: Tensor) -> list[float]:
    anatomy, optimizer, clock = method.anatomy, method.optimizer, time.process_time
    start = clock()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(anatomy.logits(x), y)
    forward = clock()
    loss.backward()
    backward = clock()
    optimizer.step()
    return [forward - start, 0.0, 0.0, backward - forward, clock() - backward]


def _dfa_parts(method, x: Tensor, y: Tensor) -> list[float]:
    """DFA's step (``LocalLossMethod.step`` without clipping), its own stages with a clock
    between them: forward, credit (the signals in factors), the Linear layers' backward in
    factors, autograd's backward from there, optimizer."""
    optimizer, clock = method.optimizer, time.process_time
    start = clock()
    optimizer.zero_grad(set_to_none=True)
    forward = method.local_forward(x, y)
    forwarded = clock()
    grads, factors = method.step_gradients(forward, y)
    credit = clock()
    roots = method.backward_roots(forward, grads, factors)
    factored = clock()
    torch.autograd.backward([out for out, _ in roots], [grad for _, grad in roots])
    backward = clock()
    optimizer.step()
    return [forwarded - start, credit - forwarded, factored - credit, backward - factored,
            clock() - backward]


def test_interleaved_step_parts(benchmark):
    """Where a DFA step's time goes against BP's: forward, DFA's credit (its signals in factors),
    the blocks' last Linear layers in factors, autograd's backward, optimizer; round-robin in
    process CPU time, each stage's median as a fraction of BP's whole step."""
    steppers = {}
    for name, parts in (("bp", _bp_parts), ("dfa", _dfa_parts)):
        model, x, y = model_and_batch()
        method = get_method(name)
        method.setup(model, int(model.out_head.out_features), torch.Generator().manual_seed(0))
        steppers[name] = (parts, method, x, y)
    stages = ("forward", "credit", "factored backward", "backward", "optimizer")
    times: dict[str, list[list[float]]] = {name: [] for name in steppers}

    def round_robin(rounds: int = 200) -> None:
        for _ in range(rounds):
            for name, (parts, method, x, y) in steppers.items():
                times[name].append(parts(method, x, y))

    round_robin(5)  # warm-up
    times = {name: [] for name in steppers}
    benchmark.group = "round-robin stages, ResMLP d=256 L=4, batch 128"
    benchmark.pedantic(round_robin, rounds=1, iterations=1)
    bp_step = statistics.median(sum(parts) for parts in times["bp"])
    lines = []
    for name, measured in times.items():
        figures = {stage: statistics.median(p[i] for p in measured) / bp_step
                   for i, stage in enumerate(stages)}
        figures["step"] = statistics.median(sum(p) for p in measured) / bp_step
        for stage, value in figures.items():
            benchmark.extra_info[f"{name} {stage} / bp step"] = round(value, 3)
        lines.append(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    print(f"\nstages as fractions of a BP step ({bp_step * 1e3:.2f} ms): " + "; ".join(lines))
