"""Saved reports read back (``fa-checks report``): each file a claim, judged by
:mod:`fa_checks.claims` against the thresholds in force, never by the file's own; every
derived figure recomputed and every verdict computed anew."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..claims import MAX_REPORT_BYTES, ClaimRefused, InForce, judge_entry
from ..files import read_bounded, read_json, regular_file
from ..report import ERROR_VERDICT, IDENTITY, Report
from ..values import printable


def load_report_files(paths: Sequence[str], in_force: InForce | None = None, *,
                      log: Callable[[str], None] | None = None
                      ) -> list[Report | dict[str, Any]]:
    """Reports (and error entries) from JSON files holding ``{"subjects": [...]}`` or one
    report, judged against ``in_force`` (default: the default thresholds); ``log`` gets one
    line per file made with other thresholds than those in force."""
    items, notes = read_report_files(paths, in_force or InForce())
    for note in notes:
        if log is not None:
            log(f"fa-checks: {note}")
    return items


def read_report_files(paths: Sequence[str], in_force: InForce
                      ) -> tuple[list[Report | dict[str, Any]], list[str]]:
    """The subjects of JSON report files (``{"subjects": [...]}`` or one report), each judged
    by :func:`judge_entry` against ``in_force``, error entries kept as they are; and the notes
    on thresholds that differ.  Every refusal is one line naming the file and the field."""
    items: list[Report | dict[str, Any]] = []
    notes: list[str] = []
    for name in paths:
        file_items, file_notes, _ = read_report_payload(name, in_force)
        items += file_items
        notes += file_notes
    return items, notes


def read_report_payload(name: str | Path, in_force: InForce
                        ) -> tuple[list[Report | dict[str, Any]], list[str], dict[str, Any]]:
    """One report file's subjects, judged against ``in_force`` (see :func:`read_report_files`),
    the notes on thresholds that differ, and the file's other top-level fields."""
    items: list[Report | dict[str, Any]] = []
    notes: list[str] = []
    path = regular_file(name, what="report")
    shown = printable(path)
    data = read_bounded(path, limit=MAX_REPORT_BYTES, what="report")
    try:
        payload = read_json(data)
    except ValueError as exc:
        raise ClaimRefused(f"{shown}: not a JSON report ({exc})") from None
    entries = payload.get("subjects") if isinstance(payload, dict) else None
    if entries is None:
        entries = [payload]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ClaimRefused(f"{shown}: expected {{\"subjects\": [report, ...]}}")
    if not entries:  # a gate over nothing must not read as a pass
        raise ClaimRefused(f"{shown}: holds no subjects, so there is nothing to gate; give "
                           "a report that fa-checks check or pytest --fa-report wrote")
    for index, entry in enumerate(entries):
        where = f"{shown}: subjects[{index}]"
        if entry.get("verdict") == ERROR_VERDICT:
            error = entry.get("error")
            kept = {key: entry.get(key) for key in IDENTITY}
            kept.update(verdict=ERROR_VERDICT, error=str(error)[:2000])
            items.append(kept)
            continue
        judgement = judge_entry(entry, in_force, where=where)
        if not judgement.report.subject.get("id"):
            judgement.report.subject["id"] = str(path)
        items.append(judgement.report)
        notes.extend(judgement.notes)
    return items, notes, payload if isinstance(payload, dict) else {}


__all__ = ["load_report_files", "read_report_payload", "read_report_files"]
