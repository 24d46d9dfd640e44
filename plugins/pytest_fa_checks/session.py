"""The run-wide state of one pytest process: the subjects, their settings, and their reports.

A :class:`FaSession` exists (in ``config.stash``) only when the user named something to check.
It asks :mod:`fa_checks.engine` for everything: the subjects (validated while pytest
configures, so a bad option is a usage error), and each subject's report, computed at most once
per process here and once across processes by the engine's cache.  fa_checks and torch are
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

from .options import PREFIX, PluginOptions

if TYPE_CHECKING:
    from fa_checks.cache import ArtifactCache
    from fa_checks.engine import LoadedSubject, SeedSummary, Settings, Subject
    from fa_checks.protocol import Report

log = logging.getLogger("fa_checks.pytest")

CACHE_NAME = "fa-checks"
#: where the cache lives when pytest's cacheprovider is disabled (-p no:cacheprovider)
FALLBACK_CACHE_DIR = ".fa-checks-cache"


class SubjectError(Exception):
    """A subject that cannot be evaluated (bad checkpoint, missing data); ``str`` says why."""


def __getattr__(name: str) -> Any:
    # ``SubjectModel`` is the engine's LoadedSubject; imported on use, so that loading the
    # plugin imports no fa_checks
    if name == "SubjectModel":
        from fa_checks.engine import LoadedSubject

        return LoadedSubject
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The library's errors that mean "this subject cannot be checked" (they name the cause)."""
    from fa_checks.cache import CacheError
    from fa_checks.checkpoint import CheckpointError
    from fa_checks.data import DataError
    from fa_checks.engine import EngineError
    from fa_checks.methods import MethodError
    from fa_checks.models import ModelError

    return CheckpointError, DataError, EngineError, MethodError, ModelError, CacheError


def cache_root(config: pytest.Config) -> Path:
    """The artifact cache under pytest's cache dir, so ``--cache-clear`` clears it too."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir(CACHE_NAME))
    return config.rootpath / FALLBACK_CACHE_DIR


def retrain_claims_dir(root: Path, run_id: str) -> Path:
    """Where the workers of one ``--fa-retrain`` test run record which subjects they redid."""
    return root / "retrain-claims" / run_id


def group_label(subject: Subject) -> str:
    """A fresh subject's id without its seed: ``dfa-penalty=0.01-seed3`` -> ``dfa-penalty=0.01``."""
    suffix = f"-seed{subject.seed}"
    return subject.id[: -len(suffix)] if subject.id.endswith(suffix) else str(subject.method)


def _given(options: PluginOptions, *names: str) -> dict[str, Any]:
    """The options among ``names`` that the user gave (None: the library's default applies)."""
    return {name: getattr(options, name) for name in names
            if getattr(options, name) is not None}


def build_subjects(options: PluginOptions, cwd: Path) -> list[Subject]:
    """The subjects the options name, checked now; bad input is a ``pytest.UsageError``."""
    from fa_checks import engine

    try:
        subjects: list[Subject] = []
        if options.checkpoints:
            subjects += _checkpoint_subjects(options, cwd)
        method_options = engine.parse_options(options.method_args, what=f"{PREFIX}method-arg")
        arch_options = engine.parse_options(options.arch_args, what=f"{PREFIX}arch-arg")
        data_options = engine.parse_options(options.data_args, what=f"{PREFIX}data-arg")
        given = _given(options, "arch", "data", "epochs")
        for method in options.methods:
            subjects += engine.fresh_subjects(
                method,
                options.seeds or (0,),
                method_options=method_options,
                arch_options=arch_options,
                data_options=data_options,
                option_prefix=PREFIX,
                **given,
            )
        if options.methods:  # fresh runs read their data now; checkpoints name theirs later
            engine.check_data_root(options.data or engine.Subject.data,  # its default
                                   build_settings(options, "cpu"))
    except engine.EngineError as exc:
        raise pytest.UsageError(str(exc)) from None
    unique: dict[str, Subject] = {}
    for subject in subjects:
        unique.setdefault(subject.id, subject)
    return list(unique.values())


def _checkpoint_subjects(options: PluginOptions, cwd: Path) -> list[Subject]:
    """Checkpoints; ``--fa-data`` / ``--fa-epochs`` fill in what older files do not record."""
    from fa_checks import engine

    subjects = engine.checkpoint_subjects(options.checkpoints, cwd=cwd,
                                          what=f"{PREFIX}checkpoint")
    fill: dict[str, Any] = {}
    if options.data is not None:
        from fa_checks.data import DataError, dataset_defaults

        try:
            dataset_defaults(options.data)
        except DataError as exc:
            raise engine.EngineError(f"{PREFIX}data: {exc}") from None
        fill["data"] = options.data
    if options.epochs is not None:
        fill["epochs"] = options.epochs
    return [dataclasses.replace(s, **fill) for s in subjects] if fill else subjects


class FaSession:
    """Subjects, settings and memoised reports for one pytest process (controller or worker)."""

    def __init__(self, config: pytest.Config, options: PluginOptions, *,
                 device: str | None = None, run_id: str | None = None) -> None:
        self.config = config
        self.options = options
        self.device = device or options.device
        #: set on xdist workers: the id all workers of one test run share
        self.run_id = run_id
        if run_id is None:
            check_device(options.device)  # the controller: fail before any worker starts
        cwd = config.invocation_params.dir
        self.subjects: dict[str, Subject] = {s.id: s for s in build_subjects(options, cwd)}
        groups: dict[str, list[str]] = {}
        for subject in self.subjects.values():
            if subject.kind == "fresh":
                groups.setdefault(group_label(subject), []).append(subject.id)
        #: label -> subject ids, for every method trained with more than one seed
        self.seed_groups = {label: ids for label, ids in groups.items() if len(ids) > 1}
        self._settings: Settings | None = None
        self._cache: ArtifactCache | None = None
        self._outcomes: dict[str, Report | SubjectError] = {}
        #: subjects whose model could not be loaded for ``fa_model`` (and why)
        self._load_errors: dict[str, SubjectError] = {}
        self._summaries: dict[str, SeedSummary | SubjectError] = {}

    # -- lazily built library objects --------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = build_settings(self.options, self.device)
        return self._settings

    @property
    def cache(self) -> ArtifactCache:
        # made on first use: with xdist and --cache-clear every worker clears pytest's cache dir
        # while it configures, so a directory made then could vanish
        if self._cache is None:
            from fa_checks.cache import ArtifactCache

            self._cache = ArtifactCache(cache_root(self.config))
        return self._cache

    # -- reports -----------------------------------------------------------------------------
    def outcome(self, subject_id: str) -> Report | SubjectError | None:
        """The memoised report or error of a subject, None if not evaluated in this process.

        A subject only loaded (by ``fa_model``) has no report; if loading failed, that error.
        """
        return self._outcomes.get(subject_id, self._load_errors.get(subject_id))

    def report(self, subject_id: str) -> Report:
        """The subject's report, evaluated once per process; raises :class:`SubjectError`."""
        if subject_id not in self._outcomes:
            self._outcomes[subject_id] = self._evaluate(self.subjects[subject_id])
        outcome = self._outcomes[subject_id]
        if isinstance(outcome, SubjectError):
            raise outcome
        return outcome

    def _evaluate(self, subject: Subject) -> Report | SubjectError:
        from fa_checks import engine

        errors = _user_errors()
        try:
            with self._retrain_claim(subject) as retrain:
                settings = self.settings
                if retrain != settings.retrain:
                    settings = dataclasses.replace(settings, retrain=retrain)
                return engine.evaluate_subject(subject, settings, self.cache, log=log.info)
        except errors as exc:
            return SubjectError(str(exc))

    @contextlib.contextmanager
    def _retrain_claim(self, subject: Subject) -> Iterator[bool]:
        """Whether this evaluation recomputes (``--fa-retrain``): once per subject per test run.

        In one process the memo already evaluates each subject once.  Across xdist workers the
        first to claim a subject recomputes it while holding a lock; any other worker (the
        across-seeds item) waits for it and then reads the fresh artifacts.
        """
        if not self.options.retrain or self.run_id is None:
            yield self.options.retrain
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

    def seed_summary(self, label: str) -> SeedSummary:
        """The across-seeds D3 gate for a method group; raises :class:`SubjectError`."""
        if label not in self._summaries:
            self._summaries[label] = self._summarise(label)
        outcome = self._summaries[label]
        if isinstance(outcome, SubjectError):
            raise outcome
        return outcome

    def summary_outcome(self, label: str) -> SeedSummary | SubjectError | None:
        return self._summaries.get(label)

    def _summarise(self, label: str) -> SeedSummary | SubjectError:
        from fa_checks import engine

        reports = []
        for subject_id in self.seed_groups[label]:
            try:
                reports.append(self.report(subject_id))
            except SubjectError as exc:
                return SubjectError(
                    f"{label} cannot be gated across seeds: {subject_id} was not evaluated "
                    f"({exc})"
                )
        try:
            return engine.seed_summary(
                reports, min_margin_pp=self.settings.thresholds.min_margin_pp
            )
        except engine.EngineError as exc:
            return SubjectError(str(exc))

    # -- models for users' tests -------------------------------------------------------------
    def load_model(self, subject_id: str) -> LoadedSubject:
        """The subject's trained model, method and dataset; raises :class:`SubjectError`."""
        from fa_checks import engine

        subject = self.subjects[subject_id]
        settings = self.settings
        try:
            if subject.kind == "fresh" and settings.retrain:
                self.report(subject_id)  # retrains at most once per test run (see _retrain_claim)
                settings = dataclasses.replace(settings, retrain=False)
            return engine.load_subject(subject, settings, self.cache, log=log.info)
        except _user_errors() as exc:
            error = SubjectError(str(exc))
        self._load_errors[subject_id] = error
        raise error


def check_device(device: str) -> None:
    """``--fa-device cuda`` where CUDA is missing is a usage error, not an error per item."""
    if not device.startswith("cuda"):
        return
    from fa_checks import engine

    try:
        engine.resolve_device(device, what=f"{PREFIX}device")
    except engine.EngineError as exc:
        raise pytest.UsageError(str(exc)) from None


def check_report_path(path: Path) -> None:
    """``--fa-report`` that cannot be written is a usage error now, not a traceback at the end."""
    from fa_checks import engine

    try:
        engine.check_writable(path, what=f"{PREFIX}report")
    except engine.EngineError as exc:
        raise pytest.UsageError(str(exc)) from None


def build_settings(options: PluginOptions, device: str) -> Settings:
    """The engine's settings from the options (library defaults for what was not given)."""
    from fa_checks import engine
    from fa_checks.protocol import Thresholds

    given = _given(options, "data_root", "eval_size", "schedule", "lr", "batch_size",
                   "weight_decay")
    return engine.Settings(
        device=device,
        thresholds=build_thresholds(options, Thresholds),
        baseline_acc=options.baseline_acc,
        trust=options.trust,
        retrain=options.retrain,
        option_prefix=PREFIX,
        **given,
    )


def build_thresholds(options: PluginOptions, thresholds_class: type | None = None) -> Any:
    """``fa_checks.Thresholds`` with the given limits; a value it refuses is a UsageError."""
    if thresholds_class is None:
        from fa_checks.protocol import Thresholds as thresholds_class
    try:
        return thresholds_class(**options.thresholds)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
