"""Report files read back for a comparison: claims judged by :mod:`fa_checks.claims` against the
thresholds in force (one line naming the file when they are not reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..report import Report

if TYPE_CHECKING:
    from ..claims import InForce



@dataclass
class ReportFile:
    path: Path
    items: list[Report | dict[str, Any]]
    across_seeds: list[dict[str, Any]] = field(default_factory=list)
    #: the store's record (time, commit, settings) of a saved report
    saved: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def read_report_file(name: str | Path, in_force: InForce | None = None) -> ReportFile:
    """The reports (and error entries) of a JSON file holding ``{"subjects": [...]}`` or one
    report, each judged as a claim against ``in_force`` (default: the default thresholds):
    derived figures recomputed, verdicts computed anew, never by the file's own thresholds,
    so both sides of a comparison are judged alike.  A ConfigError names the file and field
    when it is not a report."""
    from ..claims import InForce
    from ..session.reports import read_report_payload

    items, _, payload = read_report_payload(name, in_force or InForce())
    across = payload.get("across_seeds")
    saved = payload.get("saved")
    return ReportFile(Path(name), items,
                      [a for a in across if isinstance(a, dict)] if isinstance(across, list)
                      else [],
                      dict(saved) if isinstance(saved, dict) else {})


__all__ = ["ReportFile", "read_report_file"]
