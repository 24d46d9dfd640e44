"""A subject's report looked up in the cache without torch: the key (the subject, the settings
that change figures, the digest of the bytes evaluated) and the lookup a cached rerun is made of.
The stored report is judged as a claim (:mod:`fa_checks.claims`) like every report read back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import regular_file
from ..limits import default_limits
from ..report import Report
from ..settings import Settings
from ..subjects import Subject
from ..training.runs import training_spec
from .store import ArtifactCache, file_digest


def as_subject(report: Report, subject: Subject, path: Path) -> Report:
    """``report`` as the report of ``subject`` read from ``path``."""
    # the same file may be reached by another path: who was checked is always this subject
    report.subject.update(id=subject.id, kind=subject.kind, path=str(path))
    return report


def report_spec(subject: Subject, settings: Settings, content: str) -> dict[str, Any]:
    """The cache key of a subject's report: the subject, the settings that change figures and
    the digest of the bytes evaluated (``cache.store.file_digest``, as a snapshot records it)."""
    return {"kind": subject.kind, "subject": training_spec(subject), "content": content,
            **settings.evaluation_key()}


#: devices that need no check (and so no torch) before a cached report is served: ``auto``
#: falls back to the CPU, and the CPU is always there
_UNCHECKED_DEVICES = ("auto", "cpu")


def cached_report(subject: Subject, settings: Settings, cache: ArtifactCache) -> Report | None:
    """A checkpoint's report when the cache holds it, decided from the file's digest and the
    settings alone, without importing torch (a cached CI rerun stays a few file reads); None
    when it must be computed: absent or damaged (the computing path says which), asked to
    recompute, a fresh subject (its run's key names a rule, which imports it), or a device
    that must be checked first (``cuda``).  The stored report is judged as a claim against
    the thresholds in force, like every report read back."""
    from ..claims import InForce, check_cached_report

    if (subject.kind != "checkpoint" or subject.path is None or settings.retrain
            or str(settings.device).strip().lower() not in _UNCHECKED_DEVICES):
        return None
    path = regular_file(subject.path, what="checkpoint")
    if path.stat().st_size > default_limits().max_file_bytes or not _looks_saved(path):
        return None  # never hashed here: evaluating it refuses it in one line
    in_force = InForce.of(settings)
    stored = cache.read_json("report", report_spec(subject, settings, file_digest(path)),
                             validate=lambda value: check_cached_report(value, in_force),
                             quiet=True)
    if stored is None:
        return None
    return as_subject(check_cached_report(stored, in_force), subject, path)


def _looks_saved(path: Path) -> bool:
    """Whether ``path`` opens as torch.save writes (a zip archive, or a pickle): what does not
    (a sparse file of zeros) is refused by the evaluation at once, so is not hashed first."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def cached_reports(subjects: Sequence[Subject], settings: Settings,
                   cache: ArtifactCache) -> dict[str, Report] | None:
    """Every subject's cached report by id, or None when any one must be computed (or cannot
    be looked up: the evaluation says why), without importing torch.  A face decides from it
    that a rerun has no work to spread over processes."""
    served: dict[str, Report] = {}
    for subject in subjects:
        try:
            report = cached_report(subject, settings, cache)
        except Exception:  # a missing or unreadable file: evaluating it says so, in one line
            return None
        if report is None:
            return None
        served[subject.id] = report
    return served


__all__ = ["as_subject", "cached_report", "cached_reports", "report_spec"]
