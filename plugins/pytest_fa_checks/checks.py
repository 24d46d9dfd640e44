"""The run-wide state of one pytest process: its subjects, its settings, their outcomes.

A :class:`CheckRun` exists (in ``config.stash``) only when the user named something to check.
It asks the library for everything: the subjects (validated while pytest configures, so a bad
flag is a usage error) and each subject's outcome, computed at most once per process here and
once across processes by the library's cache.  fa_checks' heavy modules and torch are
imported on first use, never when the plugin loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fa_checks.errors import ConfigError, UserError, as_user_error, one_line

from .flags import PREFIX, Request

if TYPE_CHECKING:
    from fa_checks.cache.store import ArtifactCache
    from fa_checks.evaluation import LoadedSubject
    from fa_checks.report import AcrossSeeds, Report
    from fa_checks.settings import Settings
    from fa_checks.subjects import Subject

log = logging.getLogger("fa_checks.pytest")


class SubjectError(Exception):
    """A subject that cannot be evaluated (bad checkpoint, missing data); ``str`` says why.
    ``internal``: because of a fault of fa-checks itself (a bug), not of the input."""

    def __init__(self, message: str, *, internal: bool = False) -> None:
        super().__init__(message)
        self.internal = internal


def internal_error(exc: BaseException) -> SubjectError:
    """A fault of fa-checks while evaluating a subject: its item ERRORs and pytest exits 3
    (logged with its traceback), never 1, which would read as the method failing."""
    log.error("fa-checks internal error", exc_info=exc)
    return SubjectError(f"internal error in fa-checks (please report it): "
                        f"{type(exc).__name__}: {one_line(exc)}", internal=True)


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """While pytest configures: an error a user caused is a usage error (exit 4, one line)."""
    try:
        yield
    except UserError as exc:
        raise pytest.UsageError(one_line(exc)) from None


def build_settings(request: Request, device: str | None = None, **extra: Any) -> Settings:
    """The library's settings from the flags given (library defaults for the rest)."""
    from fa_checks.flags import build_settings as settings_from

    given = dict(request.given)
    if device is not None:
        given["device"] = device
    return settings_from(given, flag_prefix=PREFIX, **extra)


def build_subjects(request: Request, settings: Settings, cwd: Path) -> list[Subject]:
    """The subjects the request names, checked now (raises the library's ConfigError)."""
    from fa_checks.settings import DEFAULT_DATA
    from fa_checks.subjects import check_data_root, fresh_subjects
    from fa_checks.values import parse_key_values

    subjects: list[Subject] = []
    if request.checkpoints:
        subjects += _checkpoint_subjects(request, cwd)
    method_options = parse_key_values(request.get("method-arg", ()), what=f"{PREFIX}method-arg")
    arch_options = parse_key_values(request.get("arch-arg", ()), what=f"{PREFIX}arch-arg")
    data_options = parse_key_values(request.get("data-arg", ()), what=f"{PREFIX}data-arg")
    named = {key: request.get(key) for key in ("arch", "data", "epochs")
             if request.get(key) is not None}
    for method in request.methods:
        subjects += fresh_subjects(method, request.get("seeds", (0,)),
                                   method_options=method_options, arch_options=arch_options,
                                   data_options=data_options, flag_prefix=PREFIX, **named)
    if request.methods:  # fresh runs read their data now; checkpoints name theirs later
        check_data_root(request.get("data", DEFAULT_DATA), settings.data_root,
                        flag_prefix=PREFIX)
    unique: dict[str, Subject] = {}
    for subject in subjects:
        unique.setdefault(subject.id, subject)
    return list(unique.values())


def _checkpoint_subjects(request: Request, cwd: Path) -> list[Subject]:
    """Checkpoints; ``--fa-data`` / ``--fa-epochs`` fill in what older files do not record."""
    from fa_checks.subjects import checkpoint_subjects

    subjects = checkpoint_subjects(request.checkpoints, cwd=cwd, what=f"{PREFIX}checkpoint")
    fill: dict[str, Any] = {}
    if request.get("data") is not None:
        from fa_checks.data import DataError, dataset_defaults  # imports torch: only when asked

        try:
            dataset_defaults(request.get("data"))
        except DataError as exc:
            raise ConfigError(f"{PREFIX}data: {exc}") from None
        fill["data"] = request.get("data")
    if request.get("epochs") is not None:
        fill["epochs"] = request.get("epochs")
    return [dataclasses.replace(s, **fill) for s in subjects] if fill else subjects


def group_label(subject: Subject) -> str | None:
    """The across-seeds group of a fresh subject (its id without the seed), else None."""
    from fa_checks.evaluation import seed_group

    return seed_group(subject.to_dict()) if subject.kind == "fresh" else None


class CheckRun:
    """Subjects, settings and memoised outcomes for one pytest process (controller or worker)."""

    def __init__(self, config: pytest.Config, request: Request, *,
                 device: str | None = None, run_id: str | None = None) -> None:
        self.config = config
        self.request = request
        #: set on xdist workers: the id all workers of one test run share
        self.run_id = run_id
        with usage_errors():
            self.settings = build_settings(request, device)
            if self.settings.ray_address is not None:
                from fa_checks.cluster import check_settings

                check_settings(self.settings)  # Ray, its address and resources, before work
            elif run_id is None and self.settings.device.startswith("cuda"):
                self.settings.torch_device()  # the controller: fail before any worker starts
            subjects = build_subjects(request, self.settings, config.invocation_params.dir)
        self.subjects: dict[str, Subject] = {s.id: s for s in subjects}
        groups: dict[str, list[str]] = {}
        for subject in subjects:
            label = group_label(subject)
            if label is not None:
                groups.setdefault(label, []).append(subject.id)
        #: label -> subject ids, for every method trained with more than one seed
        self.seed_groups = {label: ids for label, ids in groups.items() if len(ids) > 1}
        self._cache: ArtifactCache | None = None
        self._reports: dict[str, Report | SubjectError] = {}
        #: subjects whose model could not be loaded for ``fa_model`` (and why)
        self._load_errors: dict[str, SubjectError] = {}
        self._gates: dict[str, AcrossSeeds | SubjectError] = {}
        #: whether this process trains and evaluates (not an xdist controller)
        self.computes = False
        self._threads_set = False

    @property
    def cache(self) -> ArtifactCache:
        if self._cache is None:
            self._cache = self.settings.open_cache(log.warning)
        return self._cache

    # -- reports -----------------------------------------------------------------------------
    def outcome(self, subject_id: str) -> Report | SubjectError | None:
        """The memoised report or error of a subject, None if not evaluated in this process.

        A subject only loaded (by ``fa_model``) has no report; if loading failed, that error.
        """
        return self._reports.get(subject_id, self._load_errors.get(subject_id))

    def report(self, subject_id: str) -> Report:
        """The subject's report, evaluated once per process; raises :class:`SubjectError`."""
        if subject_id not in self._reports:
            if self.settings.ray_address is not None:
                from .cluster import evaluate_on_cluster

                self.prepare_compute()
                self._reports.update(evaluate_on_cluster(self))  # every subject, in one call
            else:
                self._reports[subject_id] = self._evaluate(self.subjects[subject_id])
        outcome = self._reports[subject_id]
        if isinstance(outcome, SubjectError):
            raise outcome
        return outcome

    def _evaluate(self, subject: Subject) -> Report | SubjectError:
        from fa_checks.evaluation import Failure, outcome

        try:
            with self._retrain_claim(subject) as retrain:
                settings = dataclasses.replace(self.settings, retrain=retrain)
                result = outcome(subject, settings, self.cache, log=log.info,
                                 on_compute=self.prepare_compute)
        except Exception as exc:
            return internal_error(exc)
        return SubjectError(result.message) if isinstance(result, Failure) else result

    def serve_cached(self) -> bool:
        """Whether every subject's report is cached (decided without torch); if so they are
        this process's outcomes already, and no xdist worker need start to read them."""
        from fa_checks.evaluation import cached_reports

        if self.settings.retrain or self.settings.ray_address is not None:
            return False
        served = cached_reports(list(self.subjects.values()), self.settings, self.cache)
        if not served:
            return False
        self._reports.update(served)
        return True

    def prepare_compute(self) -> None:
        """Set torch's threads before this process's first real work, not at start-up: a
        rerun whose reports are all cached never imports torch."""
        if self.computes and not self._threads_set:
            from fa_checks.training.threads import use_threads

            use_threads(self.settings.threads)
            self._threads_set = True

    @contextlib.contextmanager
    def _retrain_claim(self, subject: Subject) -> Iterator[bool]:
        """Whether this evaluation recomputes (``--fa-retrain``): once per subject per test run.

        In one process the memo already evaluates each subject once.  Across xdist workers the
        first to claim a subject recomputes it while holding a lock; any other worker (the
        across-seeds item) waits for it and then reads the fresh artifacts.
        """
        if not self.settings.retrain or self.run_id is None:
            yield self.settings.retrain
            return
        from filelock import FileLock

        digest = hashlib.sha256(subject.id.encode()).hexdigest()[:20]
        claims = retrain_claims_dir(self.cache.root, self.run_id)
        claims.mkdir(parents=True, exist_ok=True)
        with FileLock(str(claims / f"{digest}.lock")):
            marker = claims / f"{digest}.done"
            first = not marker.exists()
            yield first
            marker.touch()

    def across_seeds(self, label: str) -> AcrossSeeds:
        """The across-seeds D3 gate of a method group; raises :class:`SubjectError`."""
        if label not in self._gates:
            self._gates[label] = self._gate(label)
        outcome = self._gates[label]
        if isinstance(outcome, SubjectError):
            raise outcome
        return outcome

    def gate_outcome(self, label: str) -> AcrossSeeds | SubjectError | None:
        return self._gates.get(label)

    def _gate(self, label: str) -> AcrossSeeds | SubjectError:
        from fa_checks.evaluation import across_seeds

        reports = []
        for subject_id in self.seed_groups[label]:
            try:
                reports.append(self.report(subject_id))
            except SubjectError as exc:
                return SubjectError(f"{label} cannot be gated across seeds: {subject_id} was "
                                    f"not evaluated ({exc})")
        try:
            return across_seeds(label, reports, self.settings.thresholds.min_margin_pp)
        except ConfigError as exc:
            return SubjectError(one_line(exc))
        except Exception as exc:
            return internal_error(exc)

    # -- models for users' tests -------------------------------------------------------------
    def load_model(self, subject_id: str) -> LoadedSubject:
        """The subject's trained model, method and dataset; raises :class:`SubjectError`."""
        from fa_checks.evaluation import load_subject

        subject = self.subjects[subject_id]
        settings = self.settings
        self.prepare_compute()
        try:
            if settings.ray_address is not None or (subject.kind == "fresh" and settings.retrain):
                # retrains at most once per test run (see _retrain_claim); with --fa-ray the
                # cluster trains it and this process loads it from the cache
                self.report(subject_id)
                settings = dataclasses.replace(settings, retrain=False)
            return load_subject(subject, settings, self.cache, log=log.info)
        except SubjectError as exc:
            error = exc
        except Exception as exc:
            user_error = as_user_error(exc)
            error = internal_error(exc) if user_error is None else SubjectError(
                one_line(user_error))
        self._load_errors[subject_id] = error
        raise error


def retrain_claims_dir(root: Path, run_id: str) -> Path:
    """Where the workers of one ``--fa-retrain`` test run record which subjects they redid."""
    return root / "retrain-claims" / run_id


def check_output(path: Path, flag: str, *, folder: bool = False) -> Path:
    """An output that cannot be written is a usage error now, not a traceback at the end."""
    from fa_checks.files import check_writable, check_writable_folder

    with usage_errors():
        if folder:
            return check_writable_folder(path, what=f"{PREFIX}{flag}")
        return check_writable(path, what=f"{PREFIX}{flag}")
