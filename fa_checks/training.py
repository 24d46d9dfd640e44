"""The training driver: one method, one model, one dataset, one seed -> a :class:`Run`.

``train`` seeds everything from ``seed`` (the model's initialisation, the method's random
feedback, the batch order and augmentation), trains with AdamW and a cosine learning-rate
schedule stepped once per epoch (as the original research code did; ``schedule="constant"``
keeps the rate), records a per-epoch
history and optionally writes a ``fa-checks/1`` checkpoint.  On CPU the same arguments give
identical tensors.

A run whose loss turns NaN or infinite does not crash: training stops at the end of that batch,
the epoch is recorded with ``diverged: True`` and the checkpoint is still written, so the
protocol can fail it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from .anatomy import eval_mode, per_sample_gradients, per_sample_norm
from .data import Dataset, load_data
from .engine import resolve_device
from .methods import Method, MethodError, get_method, method_class, method_reference
from .models import build_model

#: the generator for batch order and augmentation is seeded apart from the method's one, so the
#: same seed gives every method the same stream of batches
DATA_SEED_OFFSET = 0x5EED
#: the method's generator (random feedback) is seeded apart from the model's initialisation.
#: With the same seed both CPU streams are identical, and a feedback matrix drawn like a weight
#: came out as that weight times a constant: classic FA on the mlp started with B_1 = c * W_1,
#: i.e. exact backpropagation at that layer.
METHOD_SEED_OFFSET = 0xFEEDBAC
#: learning-rate schedules: cosine annealing to 0 over the run (default), or a constant rate
SCHEDULES = ("cosine", "constant")


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


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of ``x`` the model classifies as ``y`` (eval mode, no gradients)."""
    correct = 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=-1) == y[start:start + batch_size]).sum())
    return correct / max(int(x.shape[0]), 1)


def terminal_norms(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Median per-sample ``||h_L||`` and ``||g_L||`` (each sample's own loss gradient)."""
    with eval_mode(model):
        hidden, grads, _ = per_sample_gradients(model, x, y)
    h_norm = per_sample_norm(hidden[-1]).median()
    g_norm = per_sample_norm(grads[-1]).median()
    return float(h_norm), float(g_norm)


#: the name that rebuilds a method (kept under the trainer's name for its callers)
method_spec_name = method_reference


class Progress:
    """One status line on stderr: ``[dfa] epoch 3/20  loss 1.234  acc 0.512  eta 0:42``.

    On a terminal the line is redrawn in place (also during an epoch); elsewhere (a log file)
    one line is written per epoch.
    """

    def __init__(self, label: str, epochs: int, *, enabled: bool, stream: IO[str] | None = None):
        self.label = label
        self.epochs = epochs
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last_draw = 0.0
        self._width = 0
        self._last = ""

    def _eta(self, done: float) -> str:
        if done <= 0:
            return "?"
        remaining = (time.monotonic() - self.start) * (self.epochs - done) / done
        minutes, seconds = divmod(int(round(max(remaining, 0.0))), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"

    def _draw(self, text: str) -> None:
        if self.interactive:
            pad = " " * max(self._width - len(text), 0)
            self.stream.write("\r" + text + pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def batch(self, epoch: int, done: int, total: int, loss: float) -> None:
        """Mid-epoch update, at most a few times a second and only on a terminal."""
        now = time.monotonic()
        if not (self.enabled and self.interactive) or now - self._last_draw < 0.25:
            return
        self._last_draw = now
        fraction = (epoch - 1) + done / max(total, 1)
        self._draw(f"[{self.label}] epoch {epoch}/{self.epochs}  batch {done}/{total}  "
                   f"loss {loss:.4g}  eta {self._eta(fraction)}")

    def epoch(self, epoch: int, loss: float, acc: float) -> None:
        if not self.enabled:
            return
        self._last = (f"[{self.label}] epoch {epoch}/{self.epochs}  loss {loss:.4g}  "
                      f"test acc {acc:.3f}  eta {self._eta(epoch)}")
        self._draw(self._last)

    def close(self, note: str = "") -> None:
        if not self.enabled:
            return
        if note:
            self._draw(f"[{self.label}] {note}")
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()


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
    return method, type(method), method_spec_name(method)


def _resolve_data(
    data: str | Dataset, root: str | None, options: Mapping[str, Any] | None
) -> Dataset:
    if isinstance(data, str):
        return load_data(data, root=root, **dict(options or {}))
    if options:
        raise ValueError("data_options apply to a dataset given by name, not to a Dataset")
    return data


def _figure(value: Any) -> float | None:
    """A step's figure as a float (tensors included); None for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.detach())
    return None


def train(
    method: str | Method,
    arch: str = "resmlp",
    data: str | Dataset = "mnist1d",
    *,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    schedule: str = "cosine",
    device: str = "auto",
    method_options: Mapping[str, Any] | None = None,
    arch_options: Mapping[str, Any] | None = None,
    data_root: str | None = None,
    data_options: Mapping[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    progress: bool | None = None,
    eval_size: int = 1024,
) -> Run:
    """Train ``method`` on ``arch`` with ``data`` for ``epochs`` epochs from ``seed``.

    ``method`` is a name (``"dfa"``, ``"mypkg.rules:Rule"``) with ``method_options``, or a built
    :class:`Method`; ``data`` is a name with ``data_options`` (read from ``data_root``) or a
    :class:`Dataset`.  History: one dict per epoch with ``epoch, train_loss, test_acc, h_L, g_L,
    diverged`` and the mean of every other figure the method's ``step`` returns.  ``progress``:
    None shows a progress line only when stderr is a terminal.  ``checkpoint``: where to write
    the ``fa-checks/1`` checkpoint.
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    epochs, seed = int(epochs), int(seed)
    target = resolve_device(device)
    rule, rule_cls, method_name = _resolve_method(method, method_options)
    dataset = _resolve_data(data, data_root, data_options).to(target)

    model_kwargs = {**dict(arch_options or {}), **rule_cls.model_overrides(arch)}
    torch.manual_seed(seed)
    # built on the CPU, then moved, so the initialisation does not depend on the device
    model = build_model(
        arch, input_shape=dataset.input_shape, num_classes=dataset.num_classes, **model_kwargs
    ).to(target)

    def optimizer(params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    method_generator = torch.Generator(device=target).manual_seed(seed + METHOD_SEED_OFFSET)
    rule.setup(model, dataset.num_classes, method_generator, optimizer=optimizer)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    annealing = None
    if rule.optimizer is not None and schedule == "cosine":
        annealing = torch.optim.lr_scheduler.CosineAnnealingLR(rule.optimizer, T_max=epochs)
    # a CPU generator: the batch order is then the same on every device
    batch_generator = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)
    x_eval, y_eval = dataset.eval_batch(int(eval_size))

    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = Progress(method_name, epochs, enabled=show)
    history: list[dict[str, Any]] = []
    test_acc = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        rule.epoch_start(epoch, epochs)
        batches = dataset.batches(batch_size, generator=batch_generator, shuffle=True,
                                  augment=True)
        sums: dict[str, float] = {}
        seen = 0
        diverged = False
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
            if loss is None or not math.isfinite(loss):
                diverged = True
                break
            bar.batch(epoch, done, len(batches), loss)
        if annealing is not None:
            annealing.step()

        test_acc = accuracy(model, dataset.x_test, dataset.y_test)
        h_norm, g_norm = terminal_norms(model, x_eval, y_eval)
        means = {key: total / max(seen, 1) for key, total in sums.items()}
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": means.pop("loss", float("nan")),
            "test_acc": test_acc,
            "h_L": h_norm,
            "g_L": g_norm,
            "diverged": diverged,
        }
        for key, value in means.items():
            entry.setdefault(key, value)
        history.append(entry)
        bar.epoch(epoch, entry["train_loss"], test_acc)
        if diverged:
            break
    bar.close(f"diverged in epoch {history[-1]['epoch']} (loss is not finite)"
              if history[-1]["diverged"] else "")

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
    run = Run(model=model, method=rule, data=dataset, history=history, test_acc=test_acc,
              seed=seed, epochs=epochs, config=config)
    if checkpoint is not None:
        run.checkpoint_path = _write_checkpoint(Path(checkpoint), run, method_name)
    model.eval()
    return run


def _write_checkpoint(path: Path, run: Run, method_name: str) -> Path:
    from .checkpoint import save_checkpoint

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


__all__ = ["Progress", "Run", "accuracy", "method_spec_name", "terminal_norms", "train"]
