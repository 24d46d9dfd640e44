"""Report files read back as untrusted input: one line naming the file when they are not
reports; every verdict recomputed from its figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, one_line
from ..report import Report

#: a report of thousands of subjects is a few megabytes; more is not a report
MAX_REPORT_BYTES = 256 * 2**20


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


def read_report_file(name: str | Path) -> ReportFile:
    """The reports (and error entries) of a JSON file holding ``{"subjects": [...]}`` or one
    report; a ConfigError naming the file when it is not one."""
    from ..files import read_json, regular_file
    from ..report import read_entries

    path = regular_file(name, what="report")
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_REPORT_BYTES // 2**20} MB; not a report")
    try:
        payload = read_json(path.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{path}: not a JSON report ({exc})") from None
    entries = payload.get("subjects") if isinstance(payload, dict) else None
    if entries is None:
        entries = [payload]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: expected {{\"subjects\": [report, ...]}}")
    if not entries:  # a gate over nothing must not read as a pass
        raise ConfigError(f"{path}: holds no subjects, so there is nothing to compare; give "
                          "a report that fa-checks check or pytest --fa-report wrote")
    try:
        items = read_entries(entries)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {one_line(exc)}") from None
    for item in items:
        if isinstance(item, Report) and not item.subject.get("id"):
            item.subject["id"] = str(path)
    across = payload.get("across_seeds") if isinstance(payload, dict) else None
    saved = payload.get("saved") if isinstance(payload, dict) else None
    return ReportFile(path, items,
                      [a for a in across if isinstance(a, dict)] if isinstance(across, list)
                      else [],
                      dict(saved) if isinstance(saved, dict) else {})


__all__ = ["MAX_REPORT_BYTES", "ReportFile", "read_report_file"]
