"""The controller's view: the verdict table at the end of the terminal summary, the JSON report.

Registered only on the controller (the only process with xdist, or the one process without
it).  It learns everything from the test reports' ``user_properties``, which cross the worker
boundary, reads each subject's entry back as a checked report, and draws the table with the
library's one renderer (:mod:`fa_checks.output.render`, which imports no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fa_checks.values import printable

from .records import GroupRecord, SubjectRecord, absorb

if TYPE_CHECKING:
    from fa_checks.session import Outputs

TABLE_TITLE = "fa-checks verdicts"


class VerdictReporter:
    """Controller plugin: folds properties from every test report into one record per subject,
    then prints the verdict table and writes the JSON report."""

    def __init__(self, config: pytest.Config, subject_order: Sequence[str],
                 outputs: Outputs) -> None:
        self.config = config
        self.subject_order = list(subject_order)
        #: flag name ("report", "html", "plots") -> where it writes
        self.outputs = outputs
        self.subjects: dict[str, SubjectRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        #: the diagnostics some built-in item gated in this run ("D1", "COS", ...)
        self.gated: set[str] = set()
        self.written: list[Path] = []
        self.write_error: str | None = None
        #: the comparison with a base report (--fa-compare), a section of the HTML page
        self.comparison: dict[str, Any] | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        absorb(report.user_properties, self.subjects, self.groups, self.gated)

    def ordered(self) -> list[SubjectRecord]:
        rank = {sid: i for i, sid in enumerate(self.subject_order)}
        return sorted(self.subjects.values(), key=lambda r: (rank.get(r.id, len(rank)), r.id))

    def entries(self) -> list[dict[str, Any]]:
        return [record.entry or {"id": record.id, "verdict": "ERROR", "error": "not evaluated"}
                for record in self.ordered()]

    def json_data(self) -> dict[str, Any]:
        data = {
            "subjects": self.entries(),
            # by label, not by when a worker's report arrived: the same run, the same file
            "across_seeds": [{"label": g.label, **(g.gate or {"error": g.error})}
                             for g in sorted(self.groups.values(), key=lambda g: g.label)],
        }
        self.config.hook.pytest_fa_checks_update_json(config=self.config, data=data)
        return data

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._fold_exit_status(session)
        if self.outputs.json is None and not self.outputs.visual:
            return
        if not (self.subjects or self.groups):
            return
        from fa_checks.errors import classify

        data = self.json_data()
        try:  # the library's one writer of the outputs, as fa-checks uses it
            entries, across = data.pop("subjects"), data.pop("across_seeds")
            self.written += self.outputs.write(
                entries, across, gated=None if self._suite_complete() else self.gated,
                extra=data, comparison=self.comparison)
        except Exception as exc:  # checked while configuring; the disk may still fill up
            message, ours = classify(exc)
            if ours:
                raise
            self.write_error = f"fa-checks: could not write the reports: {message}"
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def _fold_exit_status(self, session: pytest.Session) -> None:
        """A subject that could not be evaluated is a fault of the input (exit 4) or of
        fa-checks (exit 3), never exit 1: CI would read that as "the method failed"."""
        errors = [r.entry for r in self.subjects.values()
                  if r.entry is not None and r.entry.get("verdict") == "ERROR"]
        if not errors or session.exitstatus not in (pytest.ExitCode.OK,
                                                    pytest.ExitCode.TESTS_FAILED):
            return
        internal = any(entry.get("internal") for entry in errors)
        session.exitstatus = (pytest.ExitCode.INTERNAL_ERROR if internal
                              else pytest.ExitCode.USAGE_ERROR)

    def lines(self) -> list[tuple[str, bool]]:
        """The summary's lines, each with whether it reports a failure."""
        from fa_checks.output.render import across_seeds_line, gated_line, verdict_table
        from fa_checks.report import AcrossSeeds, read_entries

        out: list[tuple[str, bool]] = []
        if self.subjects:
            rows = read_entries(self.entries())
            gated = None if self._suite_complete() else self.gated
            for line in verdict_table(rows, gated):
                out.append((line, " FAIL" in line or "ERROR" in line))
            note = gated_line(gated)
            if note:
                out.append((note, False))
            # a subject whose items never ran (-x, --maxfail, -k) must not vanish unsaid
            unrun = [sid for sid in self.subject_order if sid not in self.subjects]
            if unrun:
                out.append((f"not run in this session (it stopped first, or -k left them "
                            f"out): {', '.join(unrun)}", False))
        for group in self.groups.values():
            gate = AcrossSeeds.from_dict(group.gate) if group.gate else None
            line = across_seeds_line(group.label, gate, group.error)
            out.append((line, gate is None or gate.fires))
        return out

    def _suite_complete(self) -> bool:
        """Whether the built-in D1, D2 and D3 items ran (then the table's verdicts are the
        run's; otherwise the table says what was gated)."""
        return {"D1", "D2", "D3"} <= self.gated

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.subjects and not self.groups:
            return
        terminalreporter.write_sep("=", TABLE_TITLE)
        for index, (line, failed) in enumerate(self.lines()):
            terminalreporter.write_line(line, red=failed, bold=index == 0)
        for path in self.written:
            what = {".json": "the JSON report", ".html": "the visual report"}.get(
                path.suffix, "a figure")
            if what != "a figure":
                terminalreporter.write_line(printable(f"fa-checks: wrote {what} to {path}"))
        if self.outputs.plots is not None and self.written:
            terminalreporter.write_line(
                printable(f"fa-checks: wrote the figures to {self.outputs.plots}"))
        if self.write_error is not None:
            terminalreporter.write_line(printable(self.write_error), red=True)
