"""Subject entries for the report tests: real ones (tiny models trained and evaluated) in the
plain JSON form the CLI and the plugin write, and hand-made ones for what training rarely
gives (an ERROR, no history, no credit, non-finite figures)."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from typing import Any

ARCH = {"d_hidden": 16, "num_blocks": 2}
DATA = {"num_samples": 200}
EVAL_SIZE = 32


def as_json(value: Any) -> Any:
    """``value`` through strict JSON, as a report file holds it ("NaN" for NaN)."""
    from fa_checks.files import json_safe

    return json.loads(json.dumps(json_safe(value), allow_nan=False))


@functools.cache
def _trained(method: str, seed: int, epochs: int, num_blocks: int) -> Any:
    from fa_checks import train

    return train(method, "resmlp", "synthetic", epochs=epochs, seed=seed, batch_size=64,
                 lr=1e-2, device="cpu", data_options=DATA,
                 arch_options={**ARCH, "num_blocks": num_blocks}, progress=False,
                 eval_size=EVAL_SIZE)


def trained_run(method: str = "bp", seed: int = 0, *, epochs: int = 3, num_blocks: int = 2):
    """A tiny run (trained once per process)."""
    return _trained(method, seed, epochs, num_blocks)


def subject_entry(
    method: str = "bp",
    seed: int = 0,
    *,
    epochs: int = 3,
    num_blocks: int = 2,
    baseline_acc: float | None = 0.3,
    credit: bool = True,
    thresholds: Any = None,
    history: bool = True,
) -> dict[str, Any]:
    """A real subject entry: a tiny run evaluated by the protocol, as ``check --json`` writes."""
    from fa_checks.diagnostics.protocol import evaluate

    run = trained_run(method, seed, epochs=epochs, num_blocks=num_blocks)
    x, y = run.data.eval_batch(EVAL_SIZE)
    report = evaluate(run.model, x, y, baseline_acc=baseline_acc, thresholds=thresholds,
                      method=run.method if credit else None, null_draws=3, directions=4)
    report.subject = {"id": f"{method}-seed{seed}", "method": method, "seed": seed,
                      "path": f"runs/{method}-seed{seed}.pt"}
    report.history = copy.deepcopy(run.history) if history else None
    return as_json(report.to_dict())


def diverged_entry() -> dict[str, Any]:
    """A real evaluation of a model whose block 1 holds Inf (h_2 and beyond are not finite),
    with a history whose last epoch diverged."""
    import math

    import torch

    from fa_checks.diagnostics.protocol import evaluate

    run = trained_run("bp", 0)
    model = copy.deepcopy(run.model)
    with torch.no_grad():
        next(model.blocks[1].parameters()).fill_(math.inf)
    x, y = run.data.eval_batch(EVAL_SIZE)
    report = evaluate(model, x, y, baseline_acc=0.3)
    report.subject = {"id": "runs/diverged.pt", "method": "bp", "seed": 0,
                      "path": "runs/diverged.pt"}
    report.history = copy.deepcopy(run.history)
    report.history[-1].update(g_L=math.nan, h_L=math.inf, growth=[1.0, math.nan],
                              diverged=True)
    return as_json(report.to_dict())


def error_entry(subject: str = "runs/broken.pt") -> dict[str, Any]:
    from fa_checks.report import error_entry as entry

    return entry({"id": subject, "path": subject},
                 f"{subject}: not a checkpoint (truncated file); write it again with fa-checks "
                 "train")


def renamed(entry: dict[str, Any], subject: str) -> dict[str, Any]:
    out = copy.deepcopy(entry)
    out["id"] = subject
    if isinstance(out.get("subject"), dict):
        out["subject"]["id"] = subject
    return out


def table(entries: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """A verdict table's header and rows of text, as the lead's renderer gives them."""
    header = ["subject", "method", "seed", "test acc", "verdict"]
    rows = [[str(e.get("id")), str(e.get("method") or "-"), str(e.get("seed")),
             str(e.get("test_acc", "-")), str(e.get("verdict"))] for e in entries]
    return header, rows
