"""The controller's view: the verdict table at the end of the terminal summary and the JSON report.

Registered only on the controller (the only process with xdist, or the one process without
it).  It learns everything from the test reports' ``user_properties``, which cross the worker
boundary, so it needs neither torch nor the library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from .records import GroupRecord, SubjectRecord, absorb

TABLE_TITLE = "fa-checks verdicts"
HEADERS = ("subject", "accuracy", "D1 growth", "D2 |g_L|", "D3 margin", "verdict")


def _float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace("Infinity", "inf")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mark(fires: Any) -> str:
    return "skip" if fires is None else ("FAIL" if fires else "ok")


def _cells(record: SubjectRecord) -> tuple[str, ...]:
    report = record.report
    if report is None:
        reason = record.error or "not evaluated"
        return (record.id, "-", "-", "-", "-", f"ERROR: {reason}" if record.error else reason)
    from fa_checks.protocol import format_number  # the controller has fa_checks loaded here

    acc = _float(report.get("test_acc"))
    d1, d2, d3 = (report.get(k) or {} for k in ("D1", "D2", "D3"))
    growth, g_last, margin = (_float(d1.get("max_growth")), _float(d2.get("g_L")),
                              _float(d3.get("margin_pp")))
    return (
        record.id,
        "-" if acc is None else ("NaN" if math.isnan(acc) else f"{100 * acc:.1f}%"),
        "-" if growth is None else f"{format_number(growth)}{'x' * math.isfinite(growth)} "
        f"{_mark(d1.get('fires'))}",
        "-" if g_last is None else f"{g_last:.2e} {_mark(d2.get('fires'))}",
        "-" if margin is None else f"{margin:+.1f}pp {_mark(d3.get('fires'))}",
        str(report.get("verdict", "?")) + ("  [mode 1]" if report.get("mode1") else ""),
    )


def render_table(records: Sequence[SubjectRecord]) -> list[str]:
    """The verdict table as lines (subject, accuracy, D1, D2, D3, verdict)."""
    rows = [HEADERS, *(_cells(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
            + "  " + row[-1] for row in rows]


def render_groups(groups: Sequence[GroupRecord]) -> list[str]:
    """One line per method gated across seeds."""
    lines = []
    for group in groups:
        summary = group.summary
        if summary is None:
            lines.append(f"across seeds {group.label}: ERROR: {group.error or 'not evaluated'}")
            continue
        state = "FAIL" if summary.get("fires") else "ok"
        lines.append(f"across seeds {group.label}: {state}: {summary.get('explanation', '')}")
    return lines


class VerdictSummary:
    """Controller plugin: folds properties from every test report into one record per subject."""

    def __init__(self, config: pytest.Config, subject_order: Sequence[str],
                 report_path: Path | None) -> None:
        self.config = config
        self.subject_order = list(subject_order)
        self.report_path = report_path
        self.subjects: dict[str, SubjectRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        self.written: Path | None = None
        self.write_error: str | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        absorb(report.user_properties, self.subjects, self.groups)

    def ordered(self) -> list[SubjectRecord]:
        rank = {sid: i for i, sid in enumerate(self.subject_order)}
        return sorted(self.subjects.values(), key=lambda r: (rank.get(r.id, len(rank)), r.id))

    def json_data(self) -> dict[str, Any]:
        data = {
            "subjects": [record.to_json() for record in self.ordered()],
            "across_seeds": [
                {"label": g.label, **(g.summary or {"error": g.error})}
                for g in self.groups.values()
            ],
        }
        self.config.hook.pytest_fa_checks_update_json(config=self.config, data=data)
        return data

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.report_path is None:
            return
        from fa_checks.engine import write_json_atomic

        try:
            write_json_atomic(self.report_path, self.json_data())
        except OSError as exc:  # checked while configuring; the disk may still fill up
            self.write_error = (f"fa-checks: could not write the JSON report to "
                                f"{self.report_path}: {exc.strerror or exc}")
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            return
        self.written = self.report_path

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.subjects and not self.groups:
            return
        terminalreporter.write_sep("=", TABLE_TITLE)
        records = self.ordered()
        if records:
            for line in render_table(records):
                failed = " FAIL" in line or "ERROR" in line
                terminalreporter.write_line(line, red=failed, bold=line.startswith("subject"))
        for line in render_groups(list(self.groups.values())):
            terminalreporter.write_line(line, red=": FAIL" in line or "ERROR" in line)
        if self.written is not None:
            terminalreporter.write_line(f"fa-checks: wrote the JSON report to {self.written}")
        if self.write_error is not None:
            terminalreporter.write_line(self.write_error, red=True)
