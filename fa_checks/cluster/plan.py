"""What the driver's cache lacks, as jobs: one per missing run, baseline and evaluation.

The driver asks the library's own functions (:func:`~fa_checks.evaluation.evaluate_subject`,
:func:`~..runs.train_subject`, :func:`~..runs.frozen_baseline`) against
:class:`StoredOnly`, a view of its cache that serves what is stored and raises
:class:`Missing`, with the artifact's kind and spec, where the library would compute.  So the
plan uses the library's exact keys without a copy of how they are made, and a subject the
library would serve from the cache is served from it here too.

A baseline shared by several fresh subjects (``bp-seed1`` and ``dfa-seed1``: the same
architecture, data, seed, epochs and optimiser) is one job.  A checkpoint's baseline is
trained inside its evaluation: what it needs is in the file.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.store import ArtifactCache
from ..errors import user_sentence
from ..evaluation import Failure, Outcome, evaluate_subject
from ..training.runs import baseline_subject, frozen_baseline, train_subject

if TYPE_CHECKING:
    from ..settings import Settings
    from ..subjects import Subject


class Missing(Exception):
    """Raised by :class:`StoredOnly` where the library would compute an artifact."""

    def __init__(self, kind: str, spec: Any, suffix: str) -> None:
        super().__init__(f"the {kind} artifact is not cached")
        self.kind, self.spec, self.suffix = kind, spec, suffix


@dataclass(frozen=True)
class Needed:
    """An artifact of the driver's cache, by what names it; ``key`` is its path under the
    cache's root (``run/3f2a....pt``), which tells artifacts apart."""

    kind: str
    spec: Any
    suffix: str
    key: str


class StoredOnly(ArtifactCache):
    """The driver's cache, read only: what is stored and intact is served, anything else
    raises :class:`Missing`.  ``fresh``: everything is missing (``--retrain``).  ``said``:
    the lines already said about damaged artifacts, shared by the views of one plan, so each
    is said once."""

    def __init__(self, cache: ArtifactCache, *, fresh: bool = False,
                 said: set[str] | None = None) -> None:
        said = set() if said is None else said

        def say_once(line: str) -> None:
            if line not in said:
                said.add(line)
                if cache.log is not None:
                    cache.log(line)
                else:
                    warnings.warn(line, RuntimeWarning, stacklevel=2)

        super().__init__(cache.root, version=cache.version, log=say_once,
                         lock_timeout=cache.lock_timeout, stale_after=cache.stale_after)
        self.fresh = fresh
        self.found: list[Needed] = []

    def needed(self, kind: str, spec: Any, suffix: str) -> Needed:
        path = self.path_for(kind, spec, suffix)
        return Needed(kind, spec, suffix, path.relative_to(self.root).as_posix())

    def get_or_create(self, kind: str, spec: Any, create: Callable[[Path], None], *,
                      suffix: str = ".pt", refresh: bool = False,
                      validate: Callable[[Path], Any] | None = None) -> Path:
        path = None if self.fresh else self.stored(kind, spec, suffix=suffix, validate=validate)
        if path is None:
            raise Missing(kind, spec, suffix)
        self.found.append(self.needed(kind, spec, suffix))
        return path

    def get_or_create_json(self, kind: str, spec: Any, compute: Callable[[], Any], *,
                           refresh: bool = False,
                           validate: Callable[[Any], Any] | None = None) -> Any:
        value = None if self.fresh else self.read_json(kind, spec, validate=validate)
        if value is None:
            raise Missing(kind, spec, ".json")
        self.found.append(self.needed(kind, spec, ".json"))
        return value


@dataclass
class Job:
    """One task to run: its inputs (artifacts of the driver's cache), the jobs it waits for,
    the subjects whose outcome depends on it, and, once run, its result."""

    id: str  # "run:<key>", "baseline:<key>", "evaluation:<subject id>"
    kind: str  # run | baseline | evaluation
    label: str  # for sentences: "run of bp-seed1"
    subject: Subject  # the subject it trains or evaluates (a baseline's own subject)
    expected: Needed | None = None  # the artifact a run or baseline job must deliver
    inputs: list[Needed] = field(default_factory=list)
    checkpoint: str | None = None  # a checkpoint subject's file, sent as bytes
    waits_for: set[str] = field(default_factory=set)  # job ids
    subjects: list[str] = field(default_factory=list)  # ids of the subjects it serves
    ref: Any = None
    result: Any = None  # its TaskResult, once it ran
    failed: bool = False


def driver_settings(settings: Settings) -> Settings:
    """The settings the driver asks its cache with: it decides nothing about devices (each
    worker resolves its own) and computes nothing."""
    return dataclasses.replace(settings, device="cpu", retrain=False, progress=False)


def plan(subjects: Sequence[Subject], settings: Settings, cache: ArtifactCache
         ) -> tuple[dict[str, Job], dict[str, Outcome]]:
    """The jobs the subjects need, in submission order, and the outcomes already known (a
    report in the cache, or an input error found without running anything)."""
    asking = driver_settings(settings)
    fresh = bool(settings.retrain)
    said: set[str] = set()
    jobs: dict[str, Job] = {}
    known: dict[str, Outcome] = {}

    def add(job: Job, subject_id: str) -> Job:
        job = jobs.setdefault(job.id, job)
        job.subjects.append(subject_id)
        return job

    def need(evaluation: Job, kind: str, label: str, owner: Subject,
             ask: Callable[[ArtifactCache], Any]) -> None:
        """``evaluation`` takes the artifact ``ask`` reads; a job makes it if it is missing."""
        lookup = StoredOnly(cache, fresh=fresh, said=said)
        try:
            ask(lookup)
        except Missing as missing:
            wanted = lookup.needed(missing.kind, missing.spec, missing.suffix)
            job = add(Job(f"{kind}:{wanted.key}", kind, label, owner, expected=wanted),
                      evaluation.subjects[0])
            evaluation.inputs.append(wanted)
            evaluation.waits_for.add(job.id)
            return
        evaluation.inputs.append(lookup.found[-1])

    for subject in subjects:
        if subject.id in known or f"evaluation:{subject.id}" in jobs:
            continue
        try:
            known[subject.id] = evaluate_subject(subject, asking,
                                                StoredOnly(cache, fresh=fresh, said=said))
            continue
        except Missing:
            pass
        except Exception as exc:
            # a fault of ours is raised again
            known[subject.id] = Failure(subject, user_sentence(exc))
            continue
        evaluation = Job(f"evaluation:{subject.id}", "evaluation", f"evaluation of {subject.id}",
                         subject, subjects=[subject.id])
        if subject.kind == "checkpoint":
            evaluation.checkpoint = subject.path
        else:
            need(evaluation, "run", f"run of {subject.id}", subject,
                 lambda c, s=subject: train_subject(s, asking, c))
            if settings.baseline_acc is None and settings.depth_utility:
                baseline = fresh_baseline(subject)
                need(evaluation, "baseline",
                     f"baseline {subject.arch}/{subject.data}/seed {subject.seed}/"
                     f"{subject.epochs} epochs", baseline,
                     lambda c, b=baseline: frozen_baseline(b, asking, c))
        jobs[evaluation.id] = evaluation  # after its inputs: submitted in this order
    return jobs, known


def fresh_baseline(subject: Subject) -> Subject:
    """The frozen-blocks baseline a fresh subject's evaluation asks for: the same
    architecture, data, seed and epochs (a test holds that the evaluation finds it)."""
    return baseline_subject(subject.arch, subject.arch_options, subject.data,
                            subject.data_options, int(subject.seed or 0), int(subject.epochs or 0))


__all__ = ["Job", "Missing", "Needed", "StoredOnly", "driver_settings", "fresh_baseline", "plan"]
