"""The session itself: the checks before any work, a checkpoint's data, the memoised outcomes
and the across-seeds gates of one run (see the package's docstring)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, Log
from ..evaluation import Failure, Outcome, across_seeds
from ..report import AcrossSeeds
from ..settings import DEFAULT_DATA, Settings
from ..subjects import Subject
from .groups import cached_checkpoint_identity, fresh_identity, group_subjects
from .outputs import Outputs

if TYPE_CHECKING:
    from ..cache.store import ArtifactCache
    from ..evaluation import LoadedSubject

#: ``claim(subject)``: a context that yields whether this evaluation recomputes (``--retrain``
#: once per subject across the processes of one test run)
Claim = Callable[[Subject], contextlib.AbstractContextManager[bool]]


def prepare(settings: Settings, *, device: bool | None = True, threads: bool = True) -> None:
    """The checks made before any work: Ray, its address and resources (``--ray``), else the
    device (``device``: resolved now, which imports torch; None: only a device that can fail,
    not ``auto`` or ``cpu``; False leaves it to the first evaluation), and the torch threads
    of this process (``threads``)."""
    if device is None:
        device = settings.device.strip().lower() not in ("auto", "cpu")
    if settings.ray_address is not None:
        from ..cluster import check_settings

        check_settings(settings)
    elif device:
        settings.torch_device()
    if threads:
        from ..training.threads import use_threads

        use_threads(settings.threads)


def fill_checkpoints(subjects: Sequence[Subject], *, data: str | None = None,
                     data_options: Mapping[str, Any] | None = None, epochs: int | None = None,
                     flag_prefix: str = "--") -> list[Subject]:
    """The one rule for a checkpoint's data, in both faces: ``data`` / ``data_options`` /
    ``epochs`` (the flags ``data``, ``data-arg``, ``epochs``) fill in what a checkpoint file does
    not record (a file that records its data spec keeps it).  The dataset and its options are
    checked now, before any work; fresh subjects are left as they are."""
    fill: dict[str, Any] = {}
    if data is not None or data_options:
        from ..data import DataError, dataset_defaults, resolve_spec  # imports torch: when asked

        name = data or DEFAULT_DATA
        try:
            dataset_defaults(name)
        except DataError as exc:
            raise ConfigError(f"{flag_prefix}data: {exc}") from None
        try:
            resolve_spec(name, **dict(data_options or {}))
        except DataError as exc:
            raise ConfigError(f"{flag_prefix}data-arg: {exc}") from None
        fill.update(data=name, data_options=dict(data_options or {}))
    if epochs is not None:
        fill["epochs"] = epochs
    if not fill:
        return list(subjects)
    return [dataclasses.replace(s, **fill) if s.kind == "checkpoint" else s for s in subjects]


class CheckSession:
    """Subjects, settings and outputs of one run; each subject's outcome computed once here
    (and once across processes by the cache)."""

    def __init__(self, settings: Settings, subjects: Sequence[Subject],
                 outputs: Outputs | None = None, *, log: Log | None = None,
                 cache: ArtifactCache | None = None, claim: Claim | None = None,
                 on_compute: Callable[[], object] | None = None, jobs: int = 1) -> None:
        self.settings = settings
        #: called before this process's first real work (a face sets torch's threads), never
        #: for a report served from the cache: a cached rerun imports no torch
        self.on_compute = on_compute
        #: subjects evaluated at a time in parallel processes here (``sweep -j``)
        self.jobs = jobs
        unique: dict[str, Subject] = {}
        for subject in subjects:
            unique.setdefault(subject.id, subject)
        self.subjects: dict[str, Subject] = unique
        self.outputs = outputs or Outputs()
        self.log = log
        self._cache = cache
        self._claim = claim
        self._outcomes: dict[str, Outcome] = {}
        self._load_failures: dict[str, Failure] = {}
        self._groups: dict[str, list[str]] | None = None
        self._gates: dict[str, AcrossSeeds | Failure] = {}

    @property
    def cache(self) -> ArtifactCache:
        if self._cache is None:
            self._cache = self.settings.open_cache(self.log or (lambda line: None))
        return self._cache

    # -- outcomes ------------------------------------------------------------------------------
    def known(self, subject_id: str) -> Outcome | None:
        """The memoised outcome of a subject (or why its model could not be loaded); None if
        it was not evaluated in this process."""
        return self._outcomes.get(subject_id, self._load_failures.get(subject_id))

    def outcome(self, subject_id: str) -> Outcome:
        """The subject's report or failure, computed once: in this process, or (``--ray``)
        every subject's at once as tasks on the cluster."""
        if subject_id not in self._outcomes:
            if self.settings.ray_address is not None:
                self._outcomes.update(self._on_ray())
            else:
                self._outcomes[subject_id] = self._evaluate(self.subjects[subject_id])
        return self._outcomes[subject_id]

    def serve_cached(self) -> bool:
        """Whether every subject's report is in the cache (decided from the files' digests and
        the settings, without torch); if so they are this session's outcomes already."""
        from ..cache.reports import cached_reports

        if self.settings.retrain or self.settings.ray_address is not None:
            return False
        served = cached_reports(list(self.subjects.values()), self.settings, self.cache)
        if not served:
            return False
        self._outcomes.update(served)
        return True

    def generate_data_meanwhile(self) -> threading.Thread | None:
        """Generate the fresh subjects' MNIST-1D on a thread of this process, while it does
        something else (the controller of parallel workers, while they start): the first
        worker to need the data finds it in the cache, or waits on its lock for this thread
        instead of generating it while the other waits.  Nothing else is generated
        (other datasets are read, not made); a failure is left for the workers to report."""
        fresh = [subject for subject in self.subjects.values() if subject.kind == "fresh"]
        if not fresh:
            return None  # checkpoints only: the data module's import would bring torch in
        from ..data.mnist1d import NAME as GENERATED  # the one dataset made into a cache file

        specs: dict[str, tuple[str, dict[str, Any]]] = {}
        for subject in fresh:
            if str(subject.data).lower() == GENERATED:
                options = dict(subject.data_options or {})
                specs.setdefault(repr(sorted(options.items())), (subject.data, options))
        if not specs:
            return None

        def generate() -> None:
            from ..data import load_data

            for name, options in specs.values():
                try:
                    load_data(name, root=self.settings.data_root_for(name), **options)
                except Exception:  # noqa: BLE001 - the workers meet it again and report it
                    return

        thread = threading.Thread(target=generate, name="fa-checks-data", daemon=True)
        thread.start()
        return thread

    def outcomes(self) -> list[Outcome]:
        """Every subject's outcome, in order (with ``jobs`` > 1, those not yet known computed
        in parallel processes first: :mod:`fa_checks.session.processes`)."""
        waiting = [s for sid, s in self.subjects.items() if sid not in self._outcomes]
        if self.jobs > 1 and len(waiting) > 1 and self.settings.ray_address is None:
            from .processes import evaluate_in_processes

            done = evaluate_in_processes(waiting, self.settings, self.jobs, log=self.log)
            self._outcomes.update(zip([s.id for s in waiting], done, strict=True))
        return [self.outcome(subject_id) for subject_id in self.subjects]

    def _evaluate(self, subject: Subject) -> Outcome:
        from ..evaluation import evaluate_subject

        try:
            with self._claimed(subject) as retrain:
                settings = dataclasses.replace(self.settings, retrain=retrain)
                return evaluate_subject(subject, settings, self.cache, log=self.log,
                                        on_compute=self.on_compute)
        except Exception as exc:
            return Failure.of(subject, exc)

    @contextlib.contextmanager
    def _claimed(self, subject: Subject) -> Iterator[bool]:
        if self._claim is None:
            yield bool(self.settings.retrain)
            return
        with self._claim(subject) as retrain:
            yield retrain

    def _on_ray(self) -> dict[str, Outcome]:
        from ..cluster import evaluate_on_ray

        subjects = list(self.subjects.values())
        try:
            done = evaluate_on_ray(subjects, self.settings, self.cache, log=self.log)
        except Exception as exc:  # no cluster answers (or a fault): every subject says so
            return {s.id: Failure.of(s, exc) for s in subjects}
        return {s.id: done.get(s.id) or Failure(
            s, f"RuntimeError: the cluster gave no outcome for {s.id}", internal=True)
            for s in subjects}

    def load_model(self, subject_id: str) -> LoadedSubject | Failure:
        """The subject's trained model, rule and data (for a user's own tests)."""
        from ..evaluation import load_subject

        subject = self.subjects[subject_id]
        settings = self.settings
        try:
            if settings.ray_address is not None or (subject.kind == "fresh" and settings.retrain):
                # retrains at most once (see the claim); with --ray the cluster trains it and
                # this process loads it from the cache
                done = self.outcome(subject_id)
                if isinstance(done, Failure):
                    self._load_failures[subject_id] = done
                    return done
                settings = dataclasses.replace(settings, retrain=False)
            if self.on_compute is not None:
                self.on_compute()
            return load_subject(subject, settings, self.cache, log=self.log)
        except Exception as exc:
            failure = Failure.of(subject, exc)
        self._load_failures[subject_id] = failure
        return failure

    # -- across seeds --------------------------------------------------------------------------
    @property
    def seed_groups(self) -> dict[str, list[str]]:
        """label -> subject ids of every group of two or more seeds (see
        :func:`group_subjects`); a checkpoint's identity is read from its file, when two or
        more checkpoints are checked.  None without D3 (``--baseline none``): there is no
        margin to gate."""
        if self._groups is None and not self.settings.depth_utility:
            self._groups = {}
        if self._groups is None:
            checkpoints = sum(s.kind == "checkpoint" for s in self.subjects.values())
            identities = {}
            for subject in self.subjects.values():
                if subject.kind == "fresh":
                    identities[subject.id] = fresh_identity(subject)
                elif checkpoints >= 2:
                    identities[subject.id] = cached_checkpoint_identity(subject, self.settings,
                                                                         self.cache)
            self._groups = group_subjects(identities)
        return self._groups

    def across_seeds(self, label: str) -> AcrossSeeds | Failure:
        """The across-seeds D3 gate of a group, with the threshold in force; a Failure when a
        seed could not be evaluated or has no D3 margin."""
        if label not in self._gates:
            self._gates[label] = self._gate(label)
        return self._gates[label]

    def known_gate(self, label: str) -> AcrossSeeds | Failure | None:
        return self._gates.get(label)

    def _gate(self, label: str) -> AcrossSeeds | Failure:
        ids = self.seed_groups[label]
        group = Subject(id=label, kind="fresh", method=self.subjects[ids[0]].method)
        reports = []
        for subject_id in ids:
            done = self.outcome(subject_id)
            if isinstance(done, Failure):
                return Failure(group, f"{label} cannot be gated across seeds: {subject_id} "
                                      f"was not evaluated ({done.message})",
                               internal=done.internal, traceback=done.traceback)
            reports.append(done)
        try:
            return across_seeds(label, reports, self.settings.thresholds.min_margin_pp)
        except Exception as exc:
            return Failure.of(group, exc)

    def gates(self) -> list[tuple[str, AcrossSeeds | Failure]]:
        """Every group's gate, in order."""
        return [(label, self.across_seeds(label)) for label in self.seed_groups]

    # -- outputs -------------------------------------------------------------------------------
    def write_outputs(self, entries: Sequence[Mapping[str, Any]] | None = None,
                      across: Sequence[Mapping[str, Any]] | None = None,
                      **kwargs: Any) -> list[Path]:
        """The outputs asked for, of this session's outcomes and gates (or of ``entries`` and
        ``across`` given by a face that gathered them elsewhere, as the plugin's controller)."""
        if entries is None:
            entries = [o.to_dict() for o in self.outcomes()]
        if across is None:
            across = [gate_entry(label, gate) for label, gate in self.gates()]
        return self.outputs.write(entries, across, **kwargs)


def gate_entry(label: str, gate: AcrossSeeds | Failure) -> dict[str, Any]:
    """A gate's JSON entry: its figures, or its error."""
    if isinstance(gate, Failure):
        return {"label": label, "error": gate.message}
    return {"label": label, **gate.to_dict()}


def describe_failure(failure: Failure, prog: str) -> str:
    """The one line a face prints for a failure: the user's sentence, or ours, marked."""
    if failure.internal:
        return (f"{prog}: internal error (a fault of fa-checks, not of your method or input; "
                f"please report it): {failure.message}")
    return f"{prog}: error: {failure.message}"


__all__ = ["CheckSession", "Claim", "describe_failure", "fill_checkpoints", "gate_entry", "prepare"]
