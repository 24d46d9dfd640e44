"""Where researchers log: the ``progress=`` callback (the README's W&B example, run with a
stand-in ``wandb``) and the TensorBoard sink and history writer (with a stand-in writer: the
extra is optional)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

import fa_checks
from fa_checks.training.progress import TrainingProgress
from fa_checks.training.tensorboard import TensorBoardProgress, write_history

README = Path(__file__).resolve().parent.parent / "README.md"


class Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.flushed = 0

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushed += 1


def tiny_train(real):
    def train(method, arch, data, *, epochs, seed, progress):
        return real(method, arch, "synthetic", epochs=2, seed=seed, progress=progress,
                    batch_size=64, lr=1e-2, device="cpu", data_options={"num_samples": 200},
                    arch_options={"d_hidden": 16, "num_blocks": 1})
    return train


def test_the_readme_wandb_example_logs_each_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    source = next(b for b in blocks if b.startswith("# log each finished epoch to W&B"))
    logged: list[tuple[dict, int]] = []
    wandb = types.SimpleNamespace(init=lambda **_: None,
                                  log=lambda values, step: logged.append((values, step)))
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setattr(fa_checks, "train", tiny_train(fa_checks.train))
    exec(compile(source, str(README), "exec"), {})
    assert [step for _, step in logged] == [1, 2]
    assert set(logged[-1][0]) == {"dfa/loss", "dfa/test_acc"}


def test_tensorboard_progress_writes_finished_epochs_only() -> None:
    writer = Writer()
    sink = TensorBoardProgress(writer=writer)
    sink(TrainingProgress("bp-seed0", 1, 2, 0.1, loss=2.0, batch=3, batches=10))
    sink(TrainingProgress("bp-seed0", 1, 2, 0.5, loss=1.5, test_acc=0.4))
    sink(TrainingProgress("bp-seed0", 2, 2, 0.9, loss=float("nan"), test_acc=0.6))
    assert writer.scalars == [("bp-seed0/loss", 1.5, 1), ("bp-seed0/test_acc", 0.4, 1),
                              ("bp-seed0/test_acc", 0.6, 2)]


def test_a_reports_history_goes_to_tensorboard_with_d1_and_d2_per_epoch() -> None:
    history = [{"epoch": 1, "train_loss": 1.2, "test_acc": 0.5, "h_L": 3.0, "g_L": 1e-4,
                "growth": [1.1, 2.5]},
               {"epoch": 2, "train_loss": "NaN", "test_acc": 0.1, "h_L": 9e9, "g_L": 1e-9,
                "growth": [1.1, "Infinity"]},
               {"epoch": "three"}]
    writer = Writer()
    assert write_history(history, label="dfa-seed0", writer=writer) == 8
    tags = {(tag, step) for tag, _, step in writer.scalars}
    assert ("dfa-seed0/D1/max_growth", 1) in tags and ("dfa-seed0/D2/g_L", 2) in tags
    assert ("dfa-seed0/loss", 2) not in tags  # NaN is left out
    assert ("dfa-seed0/D1/max_growth", 2) not in tags  # and an infinite growth
    assert dict(((t, s), v) for t, v, s in writer.scalars)[("dfa-seed0/D1/max_growth", 1)] == 2.5


def test_tensorboard_without_the_extra_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(fa_checks.errors.ConfigError, match=r"fa-checks\[tensorboard\]"):
        TensorBoardProgress("tb")
