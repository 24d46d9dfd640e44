"""The training driver: one method, one model, one dataset, one seed -> a :class:`Run`.

``train`` seeds everything from ``seed`` (the model's initialisation, the method's random
feedback, the batch order and augmentation), trains with AdamW and a cosine learning-rate
schedule stepped once per epoch (as the original research code did; ``schedule="constant"``
keeps the rate), records a per-epoch
history and optionally writes a ``fa-checks/1`` checkpoint.  On CPU the same arguments give
identical tensors.

A run whose loss turns NaN or infinite does not crash: training stops at the end of that epoch,
the epoch is recorded with ``diverged: True`` and the checkpoint is still written, so the
protocol can fail it.  Progress is a line per epoch on stderr (``progress=False`` turns it off).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Dataset, load_data
from ..diagnostics.direction import credit_history
from ..diagnostics.protocol import accuracy, reference_validity, scale_stability
from ..methods import Method, MethodError, get_method, method_class, method_reference
from ..models import build_model
from ..models.anatomy import eval_mode, per_sample_gradients
from ..settings import (
    DEFAULT_ARCH,
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATA,
    DEFAULT_EVAL_SIZE,
    DEFAULT_LR,
    DEFAULT_SCHEDULE,
    DEFAULT_WEIGHT_DECAY,
    resolve_device,
)
from ..values import SCHEDULES
from .progress import ProgressClock, ProgressSink, progress_sink
from .threads import choose_threads, step_madds, torch_threads

#: the generator for batch order and augmentation is seeded apart from the method's one, so the
#: same seed gives every method the same stream of batches
DATA_SEED_OFFSET = 0x5EED
#: the method's generator (random feedback) is seeded apart from the model's initialisation.
#: With the same seed both CPU streams are identical, and a feedback matrix drawn like a weight
#: came out as that weight times a constant: classic FA on the mlp started with B_1 = c * W_1,
#: i.e. exact backpropagation at that layer.
METHOD_SEED_OFFSET = 0xFEEDBAC


@dataclass
class Run:
    """A trained model and everything needed to check or rebuild it."""

    model: nn.Module
    method: Method
    data: Dataset
    history: list[dict[str, Any]]
    test_acc: float
    seed: int
    epochs: int
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint_path: Path | None = None

    @property
    def diverged(self) -> bool:
        return any(entry.get("diverged") for entry in self.history)


def epoch_figures(model: nn.Module, x: Tensor, y: Tensor,
                  method: Method | None = None) -> dict[str, Any]:
    """The history's per-epoch figures from one forward/backward pass on the eval batch.

    ``h_L`` / ``g_L``: median per-sample ``||h_L||`` and ``||g_L||`` (each sample's own loss
    gradient); ``hidden_norms``: median per-sample ``||h_0..h_L||``; ``growth``: each block's
    growth as D1 measures it (the protocol's own definition, so "when did it blow up" reads off
    the same numbers as the verdict).  Given the rule: ``credit_cosine`` per layer and its
    fresh-feedback null ``credit_null_mean`` / ``credit_null_std`` (direction quality moves
    while accuracy may not; :func:`~fa_checks.diagnostics.direction.credit_history`).
    """
    with eval_mode(model):
        hidden, grads, _ = per_sample_gradients(model, x, y)
        direction = {} if method is None else credit_history(method, x, y, grads)
    d1 = scale_stability(hidden)
    return {
        "h_L": d1.hidden_norms[-1],
        "g_L": reference_validity(grads[-1:]).g_L,
        "hidden_norms": d1.hidden_norms,
        "growth": d1.per_block_growth,
        **direction,
    }


def _resolve_method(
    method: str | Method, options: Mapping[str, Any] | None
) -> tuple[Method, type[Method], str]:
    if isinstance(method, str):
        cls = method_class(method)
        return get_method(method, **dict(options or {})), cls, method
    if options:
        raise MethodError(
            "method_options apply to a method given by name; this method is already built "
            f"({type(method).__name__}): pass its options to its constructor"
        )
    return method, type(method), method_reference(method)


def _resolve_data(
    data: str | Dataset, root: str | None, options: Mapping[str, Any] | None
) -> Dataset:
    if isinstance(data, str):
        return load_data(data, root=root, **dict(options or {}))
    if options:
        raise ValueError("data_options apply to a dataset given by name, not to a Dataset")
    return data


def _figure(value: Any) -> Tensor | float | None:
    """A step's figure as a float or a detached float64 scalar tensor on its device (summed
    there, read once per epoch); None for anything that is not one number."""
    if isinstance(value, Tensor):
        return value.detach().to(torch.float64) if value.numel() == 1 else None
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


def train(
    method: str | Method,
    arch: str = DEFAULT_ARCH,
    data: str | Dataset = DEFAULT_DATA,
    *,
    epochs: int,
    seed: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    schedule: str = DEFAULT_SCHEDULE,
    device: str = "auto",
    method_options: Mapping[str, Any] | None = None,
    arch_options: Mapping[str, Any] | None = None,
    data_root: str | None = None,
    data_options: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool | ProgressSink | None = None,
    eval_size: int = DEFAULT_EVAL_SIZE,
    threads: int | None = None,
    label: str | None = None,
) -> Run:
    """Train ``method`` on ``arch`` with ``data`` for ``epochs`` epochs from ``seed``.

    ``method`` is a name (``"dfa"``, ``"mypkg.rules:Rule"``) with ``method_options``, or a built
    :class:`Method`; ``data`` is a name with ``data_options`` (read from ``data_root``) or a
    :class:`Dataset`.  History: one dict per epoch with ``epoch, train_loss, test_acc, h_L, g_L,
    hidden_norms, growth, diverged`` (:func:`epoch_figures`) and the mean of every other figure
    the method's ``step`` returns.

    ``progress``: a line per epoch on stderr (redrawn in place on a terminal) unless False; or
    a callable that receives each :class:`~.progress.TrainingProgress`.  ``threads``:
    torch threads while training (None: chosen for the work, see :mod:`fa_checks.training.threads`).
    ``label`` names the run in the progress line (the method's name by default).
    ``checkpoint``: where to write the ``fa-checks/1`` checkpoint.
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    epochs, seed = int(epochs), int(seed)
    target = resolve_device(device)
    rule, rule_cls, method_name = _resolve_method(method, method_options)
    dataset = _resolve_data(data, data_root, data_options).to(target)

    model_kwargs = {**dict(arch_options or {}), **rule_cls.model_overrides(arch)}
    torch.manual_seed(seed)
    # built on the CPU, then moved, so the initialisation does not depend on the device
    model = build_model(arch, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
                        dataset=dataset.spec.get("name"), **model_kwargs).to(target)
    x_eval, y_eval = dataset.eval_batch(int(eval_size))
    madds = None
    if threads is None and target.type == "cpu":
        madds = step_madds(model, x_eval, batch_size)
    with torch_threads(choose_threads(threads, step_madds=madds)):
        history = _fit(rule, model, dataset, x_eval, y_eval, epochs=epochs, seed=seed,
                       batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                       schedule=schedule, sink=progress_sink(progress),
                       label=label or method_name, method_name=method_name)
    config = {
        "method": method_name,
        "method_options": dict(rule.options),
        "arch": arch,
        "arch_options": model_kwargs,
        "data": dict(dataset.spec),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": schedule,
        "device": str(target),
        "eval_size": int(eval_size),
    }
    run = Run(model=model, method=rule, data=dataset, history=history,
              test_acc=history[-1]["test_acc"], seed=seed, epochs=epochs, config=config)
    if checkpoint is not None:
        run.checkpoint_path = _write_checkpoint(Path(checkpoint), run, method_name)
    model.eval()
    return run


def _fit(rule: Method, model: nn.Module, dataset: Dataset, x_eval: Tensor, y_eval: Tensor, *,
         epochs: int, seed: int, batch_size: int, lr: float, weight_decay: float,
         schedule: str, sink: ProgressSink | None, label: str,
         method_name: str) -> list[dict[str, Any]]:
    """The epochs of one run; returns the history.  A step's figures stay on the device and
    are read once per epoch, so a GPU's queue is never stalled by a step."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))

    def optimizer(params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    method_generator = torch.Generator(device=device).manual_seed(seed + METHOD_SEED_OFFSET)
    rule.setup(model, dataset.num_classes, method_generator, optimizer=optimizer)
    annealing = None
    if rule.optimizer is not None and schedule == "cosine":
        annealing = torch.optim.lr_scheduler.CosineAnnealingLR(rule.optimizer, T_max=epochs)
    # a CPU generator: the batch order is then the same on every device
    batch_generator = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)
    clock = ProgressClock(label, epochs, sink)
    history: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        model.train()
        rule.epoch_start(epoch, epochs)
        batches = dataset.batches(batch_size, generator=batch_generator, shuffle=True,
                                  augment=True)
        sums: dict[str, Tensor | float] = {}
        non_finite = torch.zeros((), dtype=torch.bool, device=device)
        seen = 0
        for done, (x, y) in enumerate(batches, start=1):
            figures = rule.step(x, y) or {}
            if "loss" not in figures:
                raise MethodError(f"method {method_name!r}: step() must return a dict with 'loss'")
            n = int(x.shape[0])
            seen += n
            for key, value in figures.items():
                number = _figure(value)
                if number is not None:
                    sums[key] = sums.get(key, 0.0) + number * n
            loss = _figure(figures["loss"])
            if loss is None:
                raise MethodError(f"method {method_name!r}: step()'s 'loss' is not a number")
            non_finite = non_finite | ~torch.isfinite(torch.as_tensor(loss).to(device))
            if clock.wants_batch():
                clock.batch(epoch, done, len(batches), float(loss))
        if annealing is not None:
            annealing.step()
        means = {key: float(total) / max(seen, 1) for key, total in sums.items()}
        diverged = bool(non_finite) or not math.isfinite(means.get("loss", math.nan))
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": means.pop("loss", math.nan),
            "test_acc": accuracy(model, dataset.x_test, dataset.y_test),
            **epoch_figures(model, x_eval, y_eval, rule),
            "diverged": diverged,
        }
        for key, value in means.items():
            entry.setdefault(key, value)
        history.append(entry)
        clock.epoch(epoch, entry["train_loss"], entry["test_acc"])
        if diverged:  # the checkpoint is still written, so the protocol can fail it
            break
    clock.close(f"diverged in epoch {history[-1]['epoch']} (the loss is not finite)"
                if history[-1]["diverged"] else "")
    return history


def _write_checkpoint(path: Path, run: Run, method_name: str) -> Path:
    from ..checkpoint import save_checkpoint

    optimizer = {
        "name": "AdamW",
        "lr": run.config["lr"],
        "weight_decay": run.config["weight_decay"],
        "batch_size": run.config["batch_size"],
        "schedule": run.config["schedule"],
    }
    return save_checkpoint(
        path,
        model=run.model,
        method=run.method,
        data=dict(run.data.spec),
        seed=run.seed,
        epochs=run.epochs,
        optimizer=optimizer,
        test_acc=run.test_acc,
        history=run.history,
    )


__all__ = ["Run", "epoch_figures", "train"]
