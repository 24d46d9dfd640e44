"""Regressions against an accepted run: two reports compared, and a store of saved reports.

    from fa_checks.compare import compare_files
    comparison = compare_files("last", "fa.json")      # a saved name, 'last' or a file
    print("\\n".join(comparison_lines(comparison)))

Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

from .diff import Comparison, Regression, compare_reports
from .load import ReportFile, read_report_file
from .rules import DEFAULT_SPEC, FIGURES, FailRule, parse_fail_rule
from .store import ReportStore, store_root


def resolve_report(ref: str, store: ReportStore) -> Path:
    """A path, a saved name (or its number) or ``last`` as the file it names."""
    return store.resolve(ref)


def compare_files(base: str, new: str, *, rule: FailRule | None = None,
                  store: ReportStore | None = None) -> Comparison:
    """``new`` compared against ``base``; each a report file, a saved name or ``last``."""
    store = store or ReportStore(store_root(None))
    old_file = read_report_file(store.resolve(base))
    new_file = read_report_file(store.resolve(new))
    return compare_reports(old_file.items, new_file.items, rule=rule or parse_fail_rule(None),
                           base_name=old_file.name, new_name=new_file.name)


def comparison_lines(comparison: Comparison) -> list[str]:
    """The comparison as the terminal shows it: the table, the notes, each regression."""
    from ..output.render import table

    header, rows = comparison.table()
    lines = [f"fa-checks comparison: {comparison.new_name} against {comparison.base_name}"]
    lines += table(header, rows) if rows else ["(no subject in both reports)"]
    lines += comparison.notes()
    lines.append(comparison.summary())
    lines += [f"  REGRESSION {r.sentence()}" for r in comparison.regressions]
    return lines


__all__ = [
    "DEFAULT_SPEC",
    "FIGURES",
    "Comparison",
    "FailRule",
    "Regression",
    "ReportFile",
    "ReportStore",
    "compare_files",
    "compare_reports",
    "comparison_lines",
    "parse_fail_rule",
    "read_report_file",
    "resolve_report",
    "store_root",
]
