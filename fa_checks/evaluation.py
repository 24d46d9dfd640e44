"""From a subject to its report: load (or train) it, find its baseline, run the protocol.

:func:`evaluate_subject` is the one path from a subject to a :class:`~fa_checks.report.Report`
for every face.  A fresh subject is trained once (:mod:`.training.runs`), then evaluated like a
checkpoint; the frozen-blocks baseline is trained to match the checkpoint's own settings; the
report is cached, keyed by the subject, its file's content and the settings that change figures.
:func:`outcome` turns any error a user can cause into a :class:`Failure` with one sentence, so
one subject that cannot be evaluated never stops the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache.reports import as_subject, cached_report, report_spec
from .errors import ConfigError, Log, classify, user_sentence
from .files import regular_file
from .report import AcrossSeeds, Report, error_entry
from .settings import DEFAULT_DATA, Settings
from .subjects import Subject
from .training.runs import baseline_subject, frozen_baseline, train_subject

if TYPE_CHECKING:
    import torch

    from .cache.store import ArtifactCache
    from .checkpoint import Checkpoint
    from .checkpoint.snapshot import Snapshot
    from .data import Dataset
    from .methods import Method


@dataclass
class LoadedSubject:
    """A subject ready to use: its trained model, its rule and its data, on the device."""

    subject: Subject
    model: torch.nn.Module  # in eval mode
    method: Method | None  # set up with its saved feedback; None when none was saved (or asked)
    data: Dataset  # the data it was trained on
    checkpoint: Checkpoint
    path: Path


@dataclass
class Failure:
    """A subject that could not be evaluated, and why: the one failure type of every face.

    ``internal`` False: the user's to fix (input, usage, their rule's code); ``message`` is one
    sentence naming the file or flag.  ``internal`` True: a fault of fa-checks (exit 3, never
    1); ``message`` is ``Type: message``, ``cause`` the exception (None when a Ray worker could
    not send it back) and ``traceback`` its text, for the face to print or log.
    """

    subject: Subject
    message: str
    internal: bool = False
    cause: BaseException | None = None
    traceback: str = ""

    @property
    def id(self) -> str:
        return self.subject.id

    @classmethod
    def of(cls, subject: Subject, exc: BaseException) -> Failure:
        """``exc`` raised while evaluating ``subject``, as the user's failure or ours."""
        import traceback

        message, ours = classify(exc)
        trace = "".join(traceback.format_exception(exc)) if ours else ""
        return cls(subject, message, internal=ours, cause=exc if ours else None,
                   traceback=trace)

    @property
    def sentence(self) -> str:
        """What a report or an item shows: the user's sentence, or ours marked as ours."""
        if self.internal:
            return f"internal error in fa-checks (please report it): {self.message}"
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return error_entry(self.subject.to_dict(), self.sentence, internal=self.internal)


Outcome = Report | Failure


def outcome(subject: Subject, settings: Settings, cache: ArtifactCache, *,
            log: Log | None = None, on_compute: Callable[[], object] | None = None) -> Outcome:
    """The subject's report, or a :class:`Failure` for an error a user can cause (a bad file,
    a missing dataset, a full disk, memory that ran out).  A fault of the tool propagates.
    ``on_compute``: see :func:`evaluate_subject`."""
    try:
        return evaluate_subject(subject, settings, cache, log=log, on_compute=on_compute)
    except Exception as exc:
        return Failure(subject, user_sentence(exc))  # a fault of ours is raised again


def evaluate_subject(
    subject: Subject, settings: Settings, cache: ArtifactCache, *, log: Log | None = None,
    on_compute: Callable[[], object] | None = None,
) -> Report:
    """The protocol's report for ``subject``; every expensive step is cached.

    A checkpoint's errors (missing, corrupt, untrusted) propagate as a UserError naming the
    file.  The report is cached (kind ``"report"``), keyed by the subject, the settings that
    change figures and, for a checkpoint, the file's content.  A cached checkpoint report is
    served without importing torch (:func:`cached_report`); otherwise ``on_compute`` is called
    first (a face sets torch's threads there, so a cached rerun never imports torch).
    """
    from .claims import InForce, check_cached_report

    cached = cached_report(subject, settings, cache)
    if cached is not None:
        return cached
    if on_compute is not None:
        on_compute()
    from .checkpoint.snapshot import take_snapshot

    device = settings.torch_device()  # checked even when the report is cached
    path = _subject_file(subject, settings, cache, device, log)
    # read once: the bytes hashed into the key are the bytes checked and loaded (a file
    # replaced meanwhile is evaluated, and keyed, as the bytes read here)
    snapshot = take_snapshot(path, trust=settings.trust)
    try:
        if subject.kind == "fresh":
            _check_run_bytes(cache, path, snapshot.sha256)
        spec = report_spec(subject, settings, snapshot.digest)
        in_force = InForce.of(settings)
        computed: dict[str, Report] = {}

        def compute() -> dict[str, Any]:
            computed["report"] = _evaluate_file(subject, path, settings, cache, device, log,
                                                snapshot=snapshot)
            return computed["report"].to_dict()

        # a stored report is a claim too: served only when its figures agree with one
        # another and with the thresholds in force, under the key it is bound to
        stored = cache.get_or_create_json(
            "report", spec, compute, refresh=settings.retrain,
            validate=lambda value: check_cached_report(value, in_force))
        report = computed.get("report") or check_cached_report(stored, in_force)
    finally:
        snapshot.close()
    return as_subject(report, subject, path)


def _check_run_bytes(cache: ArtifactCache, path: Path, sha256: str) -> None:
    """A trained run read from the cache must be the bytes its digest records."""
    from .cache.files import recorded_sha256
    from .cache.store import CacheError

    recorded = recorded_sha256(path)
    if recorded is not None and recorded != sha256:
        raise CacheError(f"the cached run {path} changed after it was checked (its bytes no "
                         "longer match its digest); run again, or clear the cache")


def load_subject(
    subject: Subject,
    settings: Settings,
    cache: ArtifactCache,
    *,
    with_method: bool = True,
    device: torch.device | None = None,
    log: Log | None = None,
    path: Path | None = None,
    snapshot: Snapshot | None = None,
) -> LoadedSubject:
    """The subject's model, rule and dataset (a fresh subject is trained first, once).

    The dataset is the one the checkpoint records; for a file that records none (the research
    code's formats), the subject's, or the one the model's input size suggests.  Errors name
    the file and the flag that fixes them.  ``path``: the subject's file when it is known
    already (a fresh subject's trained run); ``snapshot``: its bytes, read once.
    """
    from .checkpoint import load_checkpoint
    from .data import DataError, load_data

    device = settings.torch_device() if device is None else device
    if path is None:
        path = _subject_file(subject, settings, cache, device, log)
    # a fresh run's method was named on the command line: it may import, as pytest -p does
    named = {subject.method} if subject.kind == "fresh" and subject.method else set()
    archs = {subject.arch} if subject.kind == "fresh" else set()
    checkpoint = load_checkpoint(path, trust=settings.trust, import_methods=named,
                                 import_archs=archs, snapshot=snapshot)
    model = checkpoint.build_model().to(device).eval()
    # a method that cannot be rebuilt is a CheckpointError naming the file
    method = checkpoint.build_method(model) if with_method and checkpoint.method else None
    data_name, data_options = checkpoint_data(checkpoint, subject)
    try:
        dataset = load_data(data_name, root=settings.data_root_for(data_name), **data_options)
    except DataError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    _check_data_fits(checkpoint, dataset, data_name, settings.flag("data"))
    return LoadedSubject(subject, model, method, dataset.to(device), checkpoint, path)


def _subject_file(subject: Subject, settings: Settings, cache: ArtifactCache,
                  device: torch.device, log: Log | None) -> Path:
    """The checkpoint file of a subject (a fresh one is trained first), a regular file."""
    if subject.kind == "fresh":
        return train_subject(subject, settings, cache, device=device, log=log)
    if subject.path is None:
        raise ConfigError(f"checkpoint subject {subject.id!r} has no path")
    return regular_file(subject.path, what="checkpoint")


def checkpoint_data(checkpoint: Checkpoint, subject: Subject) -> tuple[str, dict[str, Any]]:
    """The checkpoint's own data spec; else the subject's dataset, or, when the subject names
    only the default, the dataset the model's input size suggests (older formats)."""
    if checkpoint.data:
        spec = dict(checkpoint.data)
        name = spec.pop("name", None)
        if not name:
            raise ConfigError(f"{checkpoint.path}: its data spec names no dataset")
        return str(name), spec
    hint = checkpoint.data_hint
    if hint and subject.data == DEFAULT_DATA and not subject.data_options:
        return str(hint), {}
    return subject.data, dict(subject.data_options)


def _check_data_fits(checkpoint: Checkpoint, dataset: Any, name: str, flag: str) -> None:
    wanted = (math.prod(checkpoint.input_shape), checkpoint.num_classes)
    given = (math.prod(dataset.input_shape), dataset.num_classes)
    if wanted != given:
        raise ConfigError(
            f"{checkpoint.path}: the model takes {wanted[0]} input features and {wanted[1]} "
            f"classes, but dataset {name!r} has {given[0]} and {given[1]}; name the dataset it "
            f"was trained on ({flag})"
        )


def _evaluate_file(subject: Subject, path: Path, settings: Settings, cache: ArtifactCache,
                   device: torch.device, log: Log | None, *,
                   snapshot: Snapshot | None = None) -> Report:
    from .diagnostics.protocol import accuracy, evaluate

    # the path is the evaluated file itself (a fresh subject's run is already trained); the
    # subject stays fresh, so the rule it names on the command line may import
    loaded = load_subject(subject, settings, cache, with_method=settings.credit, device=device,
                          log=log, path=path, snapshot=snapshot)
    checkpoint, dataset = loaded.checkpoint, loaded.data
    baseline_acc = settings.baseline_acc
    if baseline_acc is None and settings.depth_utility:
        baseline_acc = _baseline_for(checkpoint, subject, dict(dataset.spec),
                                     len(dataset.y_train), settings, cache, device, log)
    x, y = dataset.eval_batch(int(settings.eval_size))
    report = evaluate(
        loaded.model,
        x,
        y,
        baseline_acc=baseline_acc,
        thresholds=settings.thresholds,
        method=loaded.method,
        test_acc=accuracy(loaded.model, dataset.x_test, dataset.y_test),
    )
    report.subject = {
        "id": subject.id,
        "kind": subject.kind,
        "path": str(path),
        "method": checkpoint.method or subject.method,
        "seed": checkpoint.seed if checkpoint.seed is not None else subject.seed,
        "arch": checkpoint.arch,
        "data": dataset.spec.get("name"),
        "epochs": checkpoint.epochs if checkpoint.epochs is not None else subject.epochs,
    }
    report.history = checkpoint.history
    return report


def _baseline_for(checkpoint: Checkpoint, subject: Subject, data_spec: Mapping[str, Any],
                  train_samples: int, settings: Settings, cache: ArtifactCache,
                  device: torch.device, log: Log | None) -> float:
    """The frozen baseline trained like the checkpoint: its arch, data, seed, epochs, optimiser
    (``train_samples``: the size of its training set)."""
    epochs = checkpoint.epochs if checkpoint.epochs is not None else subject.epochs
    seed = checkpoint.seed if checkpoint.seed is not None else subject.seed
    if epochs is None or seed is None:
        missing = "epochs" if epochs is None else "seed"
        raise ConfigError(
            f"{checkpoint.path}: records no {missing}, so its frozen-blocks baseline cannot be "
            f"trained to match; give the baseline accuracy ({settings.flag('baseline-acc')})"
        )
    if subject.kind == "checkpoint":
        _check_baseline_work(checkpoint, int(epochs), train_samples, settings)
    shape_free = {k: v for k, v in checkpoint.arch_kwargs.items()
                  if k not in ("input_shape", "num_classes")}
    data_options = {k: v for k, v in data_spec.items() if k != "name"}
    baseline = baseline_subject(checkpoint.arch, shape_free, str(data_spec["name"]),
                                data_options, int(seed), int(epochs))
    return frozen_baseline(baseline, settings.with_optimizer(checkpoint.optimizer), cache,
                           device=device, log=log)


def _check_baseline_work(checkpoint: Checkpoint, epochs: int, train_samples: int,
                         settings: Settings) -> None:
    """A file from someone else chooses its baseline's epochs and data: refuse, before any
    training, more work than the limit (a run the user trained is the user's choice)."""
    from .limits import beyond, default_limits

    limits, passes = default_limits(), epochs * train_samples
    if passes > limits.max_sample_passes:
        raise ConfigError(
            f"{checkpoint.path}: its frozen-blocks baseline would train {epochs:,} epochs x "
            f"{train_samples:,} samples = {passes:,} sample passes, above "
            f"{beyond('max_sample_passes', limits, passes)}; or give the baseline accuracy "
            f"({settings.flag('baseline-acc')})")


# -- across seeds ----------------------------------------------------------------------------------
def seed_group(subject: Mapping[str, Any]) -> str | None:
    """The across-seeds group of a subject: its id without the seed (``dfa-penalty=0.01`` for
    ``dfa-penalty=0.01-seed3``), or None for a subject that is not a seed of a method."""
    identity, seed = str(subject.get("id") or ""), subject.get("seed")
    suffix = f"-seed{seed}"
    if seed is None or not identity.endswith(suffix) or not subject.get("method"):
        return None
    return identity[: -len(suffix)]


def seed_groups(reports: Sequence[Report]) -> dict[str, list[Report]]:
    """Reports grouped by :func:`seed_group`, keeping groups of two or more seeds."""
    groups: dict[str, list[Report]] = {}
    for report in reports:
        label = seed_group(report.subject)
        if label is not None:
            groups.setdefault(label, []).append(report)
    return {label: group for label, group in groups.items() if len(group) >= 2}


def across_seeds(label: str, reports: Sequence[Report], min_margin_pp: float) -> AcrossSeeds:
    """The across-seeds D3 gate of one group; a seed without a D3 margin is a ConfigError."""
    from .diagnostics.seeds import gate_across_seeds

    margins = []
    for report in reports:
        if report.d3.margin_pp is None:
            raise ConfigError(f"{report.id} has no D3 margin (no baseline accuracy); the "
                              "across-seeds gate needs one for every seed")
        margins.append(report.d3.margin_pp)
    methods = dict.fromkeys(str(report.subject.get("method")) for report in reports)
    return gate_across_seeds(margins, method="+".join(methods), min_margin_pp=min_margin_pp,
                             label=label)


__all__ = [
    "Failure",
    "LoadedSubject",
    "Outcome",
    "across_seeds",
    "checkpoint_data",
    "evaluate_subject",
    "load_subject",
    "outcome",
    "seed_group",
    "seed_groups",
]
