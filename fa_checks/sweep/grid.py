"""A grid of methods x option values x seeds, and its table of means over seeds per cell.

``--method-arg penalty=0,1e-4,1e-2`` makes one cell per value (every combination of several
options); an option goes only to the methods that take it, like the paper's tables.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..output.render import table
from ..report import Report
from ..values import format_key_values, parse_value


def sweep_cells(methods: Sequence[str], pairs: Sequence[str], *,
                flag: str = "--method-arg") -> list[tuple[str, dict[str, Any]]]:
    """``(method, options)`` per cell: every combination of the comma-separated values, each
    option applied to the methods that take it."""
    from ..methods import MethodError, get_method, method_class
    from ..methods.base import method_takes_option

    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r} is not key=value[,value...]")
        key = key.strip()
        if key in grid:
            raise ConfigError(f"{flag} gives {key!r} twice; list its values once, separated "
                              "by commas")
        grid[key] = [parse_value(v) for v in text.split(",")]

    cells: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()
    for method in methods:
        taken = []
        for key, options in grid.items():
            if not method_takes_option(method_class(method), key):
                continue
            try:
                get_method(method, **{key: options[0]})
            except MethodError:
                continue
            taken.append(key)
        used.update(taken)
        for combo in itertools.product(*(grid[k] for k in taken)):
            cells.append((method, dict(zip(taken, combo, strict=True))))
    unused = sorted(set(grid) - used)
    if unused:
        raise ConfigError(f"{flag} {', '.join(unused)}: none of the methods "
                          f"{', '.join(methods)} takes it")
    return cells


def cell_name(method: str, options: dict[str, Any]) -> str:
    """``dfa`` or ``dfa-penalty=0.01``."""
    return f"{method}-{format_key_values(options)}" if options else method


def mean_std(numbers: Sequence[float | None]) -> str:
    """``0.8123 ± 0.012`` over the numbers given (None skipped); ``-`` for none."""
    given = [float(v) for v in numbers if v is not None]
    if not given:
        return "-"
    mean = math.fsum(given) / len(given)
    if len(given) < 2:
        return f"{mean:.4g}"
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in given) / (len(given) - 1))
    return f"{mean:.4g} ± {std:.2g}"


def sweep_table(cells: Sequence[tuple[str, Sequence[Report]]], min_margin_pp: float,
                failures: dict[str, int] | None = None) -> list[str]:
    """Per cell: runs, mean ± std of accuracy and each diagnostic's figure, the across-seeds
    bound, and the verdicts; ``failures``: runs per cell that could not be evaluated."""
    from ..evaluation import across_seeds

    header = ["cell", "n", "test acc", "D1 growth", "D2 g_L", "D3 margin (pp)",
              "D3 bound (pp)", "verdicts"]
    rows = []
    for name, reports in cells:
        margins = [r.d3.margin_pp for r in reports]
        bound = "-"
        if len(reports) >= 2 and all(m is not None for m in margins):
            gate = across_seeds(name, reports, min_margin_pp)
            bound = f"{gate.lower_bound_pp:+.1f}" + (" FAIL" if gate.fires else "")
        counts: dict[str, int] = {}
        for report in reports:
            counts[report.verdict] = counts.get(report.verdict, 0) + 1
        if failures and failures.get(name):
            counts["ERROR"] = failures[name]
        rows.append([
            name,
            str(len(reports)),
            mean_std([r.test_acc for r in reports]),
            mean_std([r.d1.max_growth for r in reports]),
            mean_std([r.d2.g_L for r in reports]),
            mean_std(margins),
            bound,
            ", ".join(f"{v} x{n}" for v, n in sorted(counts.items())),
        ])
    return table(header, rows)


__all__ = ["cell_name", "mean_std", "sweep_cells", "sweep_table"]
