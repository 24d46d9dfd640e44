"""After a run, what CI reads: the comparison with an accepted report, the saved report and
the job page, the same for the command line and pytest.

A face calls :func:`prepare` before any work (a base that cannot be read, a bad
``--compare-fail`` or an output that cannot be written is refused then, as bad input), and
:func:`finish` with the run's JSON data once every subject is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .diff import Comparison, compare_reports
from .load import ReportFile, read_report_file
from .rules import FailRule, parse_fail_rule
from .store import ReportStore, store_root


@dataclass(frozen=True)
class CiRequest:
    """The flags: ``--autosave``, ``--store``, ``--compare``, ``--compare-fail``, ``--md``
    (pytest: ``--fa-`` each)."""

    autosave: bool = False
    store: str | None = None
    compare: str | None = None
    compare_fail: str | None = None
    md: str | None = None
    prefix: str = "--"

    @property
    def active(self) -> bool:
        return bool(self.autosave or self.compare or self.md) or _in_actions()


def _in_actions() -> bool:
    import os

    return bool(os.environ.get("GITHUB_STEP_SUMMARY", "").strip())


@dataclass
class CiPlan:
    request: CiRequest
    here: Path
    store: ReportStore
    rule: FailRule
    base: ReportFile | None = None


@dataclass
class CiResult:
    comparison: Comparison | None = None
    saved: Path | None = None
    written: list[Path] = field(default_factory=list)
    #: ``::error`` workflow commands, printed on stdout under GitHub Actions
    commands: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return self.comparison is not None and self.comparison.regressed

    def lines(self) -> list[str]:
        from . import comparison_lines

        lines = comparison_lines(self.comparison) if self.comparison is not None else []
        if self.saved is not None:
            lines.append(f"fa-checks: saved the report as {self.saved}")
        lines += [f"fa-checks: wrote the job page to {p}" for p in self.written]
        return lines


def prepare(request: CiRequest, here: str | Path = ".", in_force: Any = None) -> CiPlan:
    """Everything checked before any work; a ConfigError names the flag.  The base report is
    judged against ``in_force`` (the run's thresholds: a claims.InForce), as the run is."""
    from ..files import check_writable

    p = request.prefix
    if request.compare_fail is not None and not request.compare:
        raise ConfigError(f"{p}compare-fail sets what counts as a regression; give the base "
                          f"report with {p}compare too")
    rule = parse_fail_rule(request.compare_fail, flag=f"{p}compare-fail")
    store = ReportStore(store_root(request.store, here))
    plan = CiPlan(request, Path(here), store, rule)
    if request.compare:
        try:
            plan.base = read_report_file(store.resolve(request.compare), in_force)
        except ConfigError as exc:
            raise ConfigError(f"{p}compare: {exc}") from None
    if request.md:
        check_writable(Path(here) / request.md, what=f"{p}md")
    return plan


def finish(plan: CiPlan, data: Mapping[str, Any], *, new_name: str = "this run",
           environ: Mapping[str, str] | None = None) -> CiResult:
    """Compare, save and write the page for the run's ``data`` (``{"subjects": [...]}``)."""
    from ..output.markdown import write_job_page
    from ..report import read_entries

    entries = [e for e in data.get("subjects", []) if isinstance(e, Mapping)]
    result = CiResult()
    if plan.base is not None:
        result.comparison = compare_reports(plan.base.items, read_entries(entries),
                                            rule=plan.rule, base_name=plan.base.name,
                                            new_name=new_name)
    if plan.request.autosave:
        result.saved = plan.store.save(data, here=plan.here)
        if result.comparison is not None:
            result.comparison.new_name = result.saved.name
    md = None if plan.request.md is None else plan.here / plan.request.md
    result.written, result.commands = write_job_page(entries, result.comparison, md_path=md,
                                                     environ=environ)
    return result


__all__ = ["CiPlan", "CiRequest", "CiResult", "finish", "prepare"]
