"""Saved reports read back (``fa-checks report``): each file checked, each verdict recomputed
from its figures, never taken from the file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, one_line
from ..files import read_json, regular_file
from ..report import Report, read_entries


def load_report_files(paths: Sequence[str]) -> list[Report | dict[str, Any]]:
    """Reports (and error entries) from JSON files holding ``{"subjects": [...]}`` or one
    report; each is checked, and its verdict recomputed from its figures."""
    items: list[Report | dict[str, Any]] = []
    for name in paths:
        path = regular_file(name, what="report")
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
            raise ConfigError(f"{path}: holds no subjects, so there is nothing to gate; give "
                              "a report that fa-checks check or pytest --fa-json wrote")
        try:
            found = read_entries(entries)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: {one_line(exc)}") from None
        for item in found:
            if isinstance(item, Report) and not item.subject.get("id"):
                item.subject["id"] = str(path)
        items.extend(found)
    return items


__all__ = ["load_report_files"]
