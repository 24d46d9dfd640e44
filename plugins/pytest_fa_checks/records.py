"""What an item records about its subject, as ``user_properties``.

Properties are the one channel that crosses from xdist workers to the controller (they travel in
each test report) and they become JUnit ``<property>`` elements, so the controller builds the
verdict table and the JSON report from them alone.  Values are strings and numbers; the whole
report travels as one JSON text (the subject's entry, ``Report.to_dict()``), and is checked
when the controller reads it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SUBJECT = "fa_subject"
METHOD = "fa_method"
SEED = "fa_seed"
PATH = "fa_path"
VERDICT = "fa_verdict"
REPORT = "fa_report"
ERROR = "fa_error"
WORKER = "fa_worker"
GATE = "fa_gate"
SEED_GROUP = "fa_seed_group"
ACROSS_SEEDS = "fa_across_seeds"

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


def subject_properties(entry: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The properties of an item of a subject, from its JSON entry (a report's ``to_dict()``,
    or the error entry of a subject that could not be evaluated)."""
    props: list[tuple[str, Any]] = [
        (SUBJECT, entry["id"]),
        (METHOD, entry.get("method") or ""),
        (SEED, "" if entry.get("seed") is None else entry["seed"]),
        (PATH, entry.get("path") or ""),
        (WORKER, worker_id()),
        (VERDICT, entry["verdict"]),
    ]
    if "error" in entry:
        props.append((ERROR, entry["error"]))
    for name, section, key in FIGURES:
        value = entry.get(key) if section is None else (entry.get(section) or {}).get(key)
        if value is not None:
            props.append((name, value))
    return [*props, (REPORT, json.dumps(entry, sort_keys=True, allow_nan=False))]


def across_seeds_properties(label: str, gate: Mapping[str, Any] | None = None,
                            error: str | None = None) -> list[tuple[str, Any]]:
    """The properties of an across-seeds item (``gate`` is ``AcrossSeeds.to_dict()``)."""
    props: list[tuple[str, Any]] = [(SEED_GROUP, label), (WORKER, worker_id())]
    if error is not None:
        props.append((ERROR, error))
    elif gate is not None:
        props.append((ACROSS_SEEDS, json.dumps(gate, sort_keys=True, allow_nan=False)))
    return props


@dataclass
class SubjectRecord:
    """What the controller learned about one subject from its items' reports: its JSON
    entry (a report or an error) and the workers it ran on."""

    id: str
    entry: dict[str, Any] | None = None
    workers: set[str] = field(default_factory=set)


@dataclass
class GroupRecord:
    label: str
    gate: dict[str, Any] | None = None
    error: str | None = None


def absorb(properties: Iterable[tuple[str, Any]], subjects: dict[str, SubjectRecord],
           groups: dict[str, GroupRecord], gates: set[str]) -> None:
    """Fold one test report's properties into the controller's records."""
    props = dict(properties)
    if GATE in props:
        gates.add(str(props[GATE]))
    if SUBJECT in props:
        record = subjects.setdefault(str(props[SUBJECT]), SubjectRecord(str(props[SUBJECT])))
        if WORKER in props:
            record.workers.add(str(props[WORKER]))
        if record.entry is None and REPORT in props:
            record.entry = json.loads(props[REPORT])
    elif SEED_GROUP in props:
        group = groups.setdefault(str(props[SEED_GROUP]), GroupRecord(str(props[SEED_GROUP])))
        if group.gate is None and ACROSS_SEEDS in props:
            group.gate = json.loads(props[ACROSS_SEEDS])
        elif group.gate is None and ERROR in props:
            group.error = str(props[ERROR])
