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
    from fa_checks.protocol import evaluate

    run = trained_run(method, seed, epochs=epochs, num_blocks=num_blocks)
    x, y = run.data.eval_batch(EVAL_SIZE)
    report = evaluate(run.model, x, y, baseline_acc=baseline_acc, thresholds=thresholds,
                      method=run.method if credit else None, null_draws=3, directions=4)
    return as_json({
        **report.to_dict(),
        "id": f"{method}-seed{seed}",
        "method": method,
        "seed": seed,
        "path": f"runs/{method}-seed{seed}.pt",
        "history": run.history if history else None,
        "error": None,
    })


def error_entry(subject: str = "runs/broken.pt") -> dict[str, Any]:
    return {"id": subject, "path": subject, "method": None, "seed": None, "verdict": "ERROR",
            "error": f"{subject}: not a checkpoint (truncated file); write it again with "
                     "fa-checks train"}


def renamed(entry: dict[str, Any], subject: str) -> dict[str, Any]:
    out = copy.deepcopy(entry)
    out["id"] = subject
    return out


def table(entries: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """A verdict table's header and rows of text, as the lead's renderer gives them."""
    header = ["subject", "method", "seed", "test acc", "verdict"]
    rows = [[str(e.get("id")), str(e.get("method") or "-"), str(e.get("seed")),
             str(e.get("test_acc", "-")), str(e.get("verdict"))] for e in entries]
    return header, rows
