"""What the per-epoch history costs against one training epoch.

Each epoch the trainer runs ONE forward/backward pass on its eval batch (``epoch_figures``)
and records ``h_L``, ``g_L``, and, since the visual report, every ``||h_l||`` and each block's
growth as D1 measures it.  Measured here, round-robin in process CPU time (other work on a
shared machine lands in no single figure):

* ``epoch``: one epoch of BP steps, ResMLP d=256 L=4, MNIST-1D-shaped inputs (40 features,
  10 classes), 8000 training samples in batches of 128 (63 steps), CPU, one thread;
* ``history``: ``epoch_figures`` on the default eval batch of 1024 samples, as the trainer
  calls it now;
* ``history before``: the same pass recording ``h_L`` and ``g_L`` only, as before the growth
  was recorded (written out here as it was);
* ``history with direction``: the pass as the trainer calls it for a DFA rule, which adds the
  per-layer credit cosine and its fresh-feedback null (``credit_history``: 128 samples, 3 draws).

Run:

    .venv/bin/pytest benchmarks/test_bench_history.py -s --benchmark-columns=median,rounds

The ratios land in ``extra_info`` and are printed with ``-s``: the history against an epoch,
and what recording the growth adds against an epoch.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from fa_checks.methods import get_method
from fa_checks.methods.dfa import DFA
from fa_checks.models import build_model
from fa_checks.models.anatomy import eval_mode, per_sample_gradients, per_sample_norm
from fa_checks.training.loop import epoch_figures

D_HIDDEN, NUM_BLOCKS, BATCH, FEATURES, CLASSES = 256, 4, 128, 40, 10
TRAIN_SAMPLES, EVAL_SAMPLES = 8000, 1024


def history_before(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """The per-epoch figures before the growth was recorded: ``h_L`` and ``g_L`` only."""
    with eval_mode(model):
        hidden, grads, _ = per_sample_gradients(model, x, y)
    return (float(per_sample_norm(hidden[-1]).median()),
            float(per_sample_norm(grads[-1]).median()))


def test_history_against_an_epoch(benchmark):
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=(FEATURES,), num_classes=CLASSES,
                        d_hidden=D_HIDDEN, num_blocks=NUM_BLOCKS)
    g = torch.Generator().manual_seed(1)
    x_train = torch.randn(TRAIN_SAMPLES, FEATURES, generator=g)
    y_train = torch.randint(0, CLASSES, (TRAIN_SAMPLES,), generator=g)
    x_eval, y_eval = x_train[:EVAL_SAMPLES], y_train[:EVAL_SAMPLES]
    method = get_method("bp")
    method.setup(model, CLASSES, torch.Generator().manual_seed(0))

    def epoch() -> None:
        model.train()
        for start in range(0, TRAIN_SAMPLES, BATCH):
            method.step(x_train[start:start + BATCH], y_train[start:start + BATCH])

    dfa = DFA()
    dfa.setup(copy.deepcopy(model), CLASSES, torch.Generator().manual_seed(0))

    work = {
        "epoch": epoch,
        "history": lambda: epoch_figures(model, x_eval, y_eval),
        "history with direction": lambda: epoch_figures(dfa.model, x_eval, y_eval, dfa),
        "history before": lambda: history_before(model, x_eval, y_eval),
    }
    times: dict[str, list[float]] = {name: [] for name in work}

    def round_robin(rounds: int) -> None:
        for _ in range(rounds):
            for name, run in work.items():
                start = time.process_time()
                run()
                times[name].append(time.process_time() - start)

    round_robin(1)  # warm-up
    times = {name: [] for name in work}
    benchmark.group = "per-epoch history, ResMLP d=256 L=4, eval batch 1024"
    benchmark.pedantic(round_robin, args=(5,), rounds=1, iterations=1)

    median = {name: statistics.median(t) for name, t in times.items()}
    history_ratio = median["history"] / median["epoch"]
    added_ratio = (median["history"] - median["history before"]) / median["epoch"]
    direction_ratio = (median["history with direction"] - median["history"]) / median["epoch"]
    benchmark.extra_info.update({
        "epoch_s": round(median["epoch"], 4),
        "history_s": round(median["history"], 4),
        "history_before_s": round(median["history before"], 4),
        "history_to_epoch": round(history_ratio, 4),
        "growth_added_to_epoch": round(added_ratio, 4),
        "history_with_direction_s": round(median["history with direction"], 4),
        "direction_added_to_epoch": round(direction_ratio, 4),
    })
    print(f"\nepoch {median['epoch'] * 1e3:.0f} ms, history {median['history'] * 1e3:.1f} ms "
          f"(before the growth was recorded {median['history before'] * 1e3:.1f} ms): the "
          f"history costs {history_ratio:.3f} of an epoch, recording the growth adds "
          f"{added_ratio:+.4f} of an epoch; a DFA rule's direction figures add "
          f"{direction_ratio:+.4f} of an epoch")
