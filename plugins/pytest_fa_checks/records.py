"""What an item records about its subject, as ``user_properties``.

Properties are the one channel that crosses from xdist workers to the controller (they travel in
each test report) and they become JUnit ``<property>`` elements, so the controller builds the
verdict table and the JSON report from them alone.  Values are strings and numbers; the full
report travels as one JSON text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "fa_"
SUBJECT = "fa_subject"
METHOD = "fa_method"
SEED = "fa_seed"
PATH = "fa_path"
VERDICT = "fa_verdict"
REPORT = "fa_report"
ERROR = "fa_error"
WORKER = "fa_worker"
SEED_GROUP = "fa_seed_group"
SEED_SUMMARY = "fa_seed_summary"

#: the figures each subject's items carry besides the whole report: (name, section, key)
FIGURES = (
    ("fa_test_acc", None, "test_acc"),
    ("fa_d1_max_growth", "D1", "max_growth"),
    ("fa_d1_threshold", "D1", "threshold"),
    ("fa_d2_g_L", "D2", "g_L"),
    ("fa_d2_floor", "D2", "floor"),
    ("fa_d3_margin_pp", "D3", "margin_pp"),
    ("fa_d3_baseline_acc", "D3", "baseline_acc"),
)


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _number(value: Any) -> Any:
    """Numbers as they are; the report's JSON spellings of non-finite numbers as floats."""
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return float(value.replace("Infinity", "inf"))
    return value


def subject_properties(
    subject: Mapping[str, Any],
    report: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> list[tuple[str, Any]]:
    """The properties of an item of ``subject`` (``Subject.to_dict()``), given its outcome.

    ``report`` is ``Report.to_dict()``; ``error`` the reason a subject could not be evaluated.
    """
    facts = dict((report or {}).get("subject") or {})
    method = facts.get("method") or subject.get("method")
    seed = facts.get("seed", subject.get("seed"))
    props: list[tuple[str, Any]] = [
        (SUBJECT, subject["id"]),
        (METHOD, "" if method is None else str(method)),
        (SEED, "" if seed is None else seed),
        (PATH, facts.get("path") or subject.get("path") or ""),
        (WORKER, worker_id()),
    ]
    if error is not None:
        props += [(VERDICT, "ERROR"), (ERROR, error)]
    elif report is not None:
        props.append((VERDICT, report["verdict"]))
        for name, section, key in FIGURES:
            value = report.get(key) if section is None else (report.get(section) or {}).get(key)
            if value is not None:
                props.append((name, _number(value)))
        props.append((REPORT, json.dumps(report, sort_keys=True)))
    return props


def seed_summary_properties(label: str, summary: Mapping[str, Any] | None = None,
                            error: str | None = None) -> list[tuple[str, Any]]:
    """The properties of an across-seeds item (``summary`` is ``SeedSummary.to_dict()``)."""
    props: list[tuple[str, Any]] = [(SEED_GROUP, label), (WORKER, worker_id())]
    if error is not None:
        props.append((ERROR, error))
    elif summary is not None:
        from fa_checks.files import json_safe  # loaded only once a subject is checked

        props.append((SEED_SUMMARY, json.dumps(json_safe(summary), sort_keys=True)))
    return props


@dataclass
class SubjectRecord:
    """What the controller learned about one subject from its items' reports."""

    id: str
    method: str | None = None
    seed: Any = None
    path: str | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    workers: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        """``Report.to_dict()`` plus id, method, seed and path (or the error)."""
        head = {"id": self.id, "method": self.method, "seed": self.seed, "path": self.path}
        if self.report is not None:
            return {**self.report, **head}
        return {**head, "verdict": "ERROR", "error": self.error}


@dataclass
class GroupRecord:
    label: str
    summary: dict[str, Any] | None = None
    error: str | None = None


def _text(value: Any) -> str | None:
    return None if value in ("", None) else str(value)


def _seed_value(value: Any) -> Any:
    if value in ("", None):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def absorb(properties: Iterable[tuple[str, Any]], subjects: dict[str, SubjectRecord],
           groups: dict[str, GroupRecord]) -> None:
    """Fold one test report's properties into the controller's records."""
    props = dict(properties)
    if SUBJECT in props:
        record = subjects.setdefault(str(props[SUBJECT]), SubjectRecord(str(props[SUBJECT])))
        record.method = record.method or _text(props.get(METHOD))
        if record.seed is None:
            record.seed = _seed_value(props.get(SEED))
        record.path = record.path or _text(props.get(PATH))
        if WORKER in props:
            record.workers.add(str(props[WORKER]))
        if REPORT in props and record.report is None:
            record.report = json.loads(props[REPORT])
        elif ERROR in props and record.report is None:
            record.error = str(props[ERROR])
    elif SEED_GROUP in props:
        group = groups.setdefault(str(props[SEED_GROUP]), GroupRecord(str(props[SEED_GROUP])))
        if SEED_SUMMARY in props and group.summary is None:
            group.summary = json.loads(props[SEED_SUMMARY])
        elif ERROR in props and group.summary is None:
            group.error = str(props[ERROR])
