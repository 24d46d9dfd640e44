"""What the command line and the pytest plugin share: subjects, cached runs and baselines, reports.

A *subject* is one thing to check: a checkpoint file, or a method trained fresh with one seed.
:func:`evaluate_subject` turns a subject into a :class:`~fa_checks.protocol.Report`, training the
run and the frozen-blocks baseline when needed.  Every expensive artifact (a trained run, a
baseline accuracy, the report itself) goes through an :class:`~fa_checks.cache.ArtifactCache`, so
it is computed once across processes and reused by later runs.

This module knows nothing of pytest.  Heavy modules are imported where they are used, so that
importing it (for option parsing while pytest configures) costs almost nothing.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .files import copy_atomic, temporary_beside, write_atomic, write_json_atomic

if TYPE_CHECKING:
    import torch

    from .cache import ArtifactCache
    from .checkpoint import Checkpoint
    from .data import Dataset
    from .methods import Method
    from .protocol import Report, Thresholds
    from .training import Run

Log = Callable[[str], None]


class EngineError(ConfigError):
    """Bad user input: an unknown method, a malformed option, a pattern that matches nothing."""


# -- options ---------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"1e-2"`` -> 0.01, ``"true"`` -> True, ``"none"`` -> None, else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: Sequence[str], *, what: str) -> dict[str, Any]:
    """``["penalty=0.01", "residual=false"]`` -> ``{"penalty": 0.01, "residual": False}``.

    ``what`` names the option the pairs came from (``--fa-method-arg``), for the error message.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EngineError(f"{what} {pair!r} is not key=value (for example {what} penalty=0.01)")
        if key in options:
            raise EngineError(f"{what} gives {key!r} twice ({pair!r}); give each key once")
        options[key] = parse_value(value)
    return options


def format_value(value: Any) -> str:
    """The inverse of :func:`parse_value`, for ids and file names."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_options(options: Mapping[str, Any]) -> str:
    """``{"penalty": 0.01}`` -> ``"penalty=0.01"`` (sorted, joined by ``-``)."""
    return "-".join(f"{k}={format_value(v)}" for k, v in sorted(options.items()))


# -- subjects --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """One thing to check: a checkpoint file or a method trained fresh with one seed."""

    id: str
    kind: str  # "checkpoint" | "fresh"
    path: str | None = None
    method: str | None = None
    method_options: Mapping[str, Any] = field(default_factory=dict)
    arch: str = "resmlp"
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    data: str = "mnist1d"
    data_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("checkpoint", "fresh"):
            raise EngineError(f"subject kind must be 'checkpoint' or 'fresh', not {self.kind!r}")
        # private copies, so a caller mutating its dict cannot change a subject
        for name in ("method_options", "arch_options", "data_options"):
            object.__setattr__(self, name, dict(getattr(self, name) or {}))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("method_options", "arch_options", "data_options"):
            out[name] = dict(out[name])
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Subject:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise EngineError(f"a subject has no field {', '.join(unknown)}")
        return cls(**dict(d))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))


def subject_id(method: str, method_options: Mapping[str, Any] | None, seed: int) -> str:
    """``"dfa-seed3"`` or ``"dfa-penalty=0.01-seed3"``."""
    parts = [method]
    if method_options:
        parts.append(format_options(method_options))
    parts.append(f"seed{seed}")
    return "-".join(parts)


_GLOB_CHARS = frozenset("*?[")


def checkpoint_subjects(
    patterns: Sequence[str], *, cwd: Path | None = None, what: str = "--fa-checkpoint"
) -> list[Subject]:
    """One subject per file matched by ``patterns`` (globs; sorted, deduplicated).

    A pattern that matches nothing and is not an existing path is an :class:`EngineError`; a
    file that exists but is corrupt is not (it fails when it is evaluated, naming the file).
    ``subject.id`` is the path as matched (relative paths stay relative to ``cwd``);
    ``subject.path`` is absolute, so any process can load it.
    """
    base = Path.cwd() if cwd is None else Path(cwd)
    found: dict[str, str] = {}  # absolute path -> path as given
    for pattern in patterns:
        expanded = str(Path(pattern).expanduser()) if pattern.startswith("~") else pattern
        matches: list[str] = []
        if _GLOB_CHARS & set(expanded):
            if Path(expanded).is_absolute():
                matches = glob.glob(expanded, recursive=True)
            else:
                matches = glob.glob(expanded, root_dir=base, recursive=True)
            matches = [m for m in matches if (base / m).is_file()]
        if not matches and (base / expanded).exists():
            matches = [expanded]
        if not matches:
            if _GLOB_CHARS & set(expanded):
                raise EngineError(f"{what} {pattern!r} matches no file (looked in {base})")
            raise EngineError(f"{what} {pattern!r}: no such file (looked in {base})")
        for match in sorted(matches):
            absolute = str((base / match).resolve())
            found.setdefault(absolute, match)
    return [
        Subject(id=given, kind="checkpoint", path=absolute)
        for absolute, given in sorted(found.items(), key=lambda item: item[1])
    ]


def fresh_subjects(
    method: str,
    seeds: Sequence[int],
    *,
    arch: str = "resmlp",
    data: str = "mnist1d",
    epochs: int = 20,
    method_options: Mapping[str, Any] | None = None,
    arch_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    option_prefix: str = "--",
) -> list[Subject]:
    """One subject per seed for ``method`` trained fresh; every name and option is checked now.

    ``option_prefix`` is how the caller spells its options (``"--"`` for the command line's
    ``--method-arg``, ``"--fa-"`` for the plugin's ``--fa-method-arg``), for error messages.
    """
    method_options = dict(method_options or {})
    arch_options = dict(arch_options or {})
    data_options = dict(data_options or {})
    validate_training(method, method_options, arch, arch_options, data, data_options,
                      option_prefix=option_prefix)
    if not seeds:
        raise EngineError(f"no seeds given for method {method!r}; give at least one")
    if int(epochs) < 1:
        raise EngineError(f"{option_prefix}epochs must be at least 1, not {epochs}")
    unique = list(dict.fromkeys(int(s) for s in seeds))
    return [
        Subject(
            id=subject_id(method, method_options, seed),
            kind="fresh",
            method=method,
            method_options=method_options,
            arch=arch,
            arch_options=arch_options,
            data=data,
            data_options=data_options,
            seed=seed,
            epochs=int(epochs),
        )
        for seed in unique
    ]


def validate_training(
    method: str,
    method_options: Mapping[str, Any],
    arch: str,
    arch_options: Mapping[str, Any],
    data: str,
    data_options: Mapping[str, Any],
    *,
    option_prefix: str = "--",
) -> None:
    """Raise :class:`EngineError` for an unknown method, arch or dataset or a bad option.

    Each message names the option to change, spelt with ``option_prefix``.
    """
    from .methods import MethodError, get_method, method_class
    from .methods.base import method_option_names, method_takes_option
    from .models import ModelError, model_keywords

    try:
        cls = method_class(method)
    except MethodError as exc:
        raise EngineError(f"{option_prefix}method: {exc}") from None
    unknown = [key for key in method_options if not method_takes_option(cls, key)]
    if unknown:
        takes = method_option_names(cls)
        raise EngineError(
            f"{option_prefix}method-arg {', '.join(unknown)}: method {method!r} takes no such "
            "option; " + (f"it takes {', '.join(takes)}" if takes else "it takes no options")
        )
    try:
        get_method(method, **method_options)
    except MethodError as exc:
        raise EngineError(f"{option_prefix}method-arg: {exc}") from None
    try:
        keywords = model_keywords(arch)
    except ModelError as exc:
        raise EngineError(f"{option_prefix}arch: {exc}") from None
    unknown = sorted(set(arch_options) - set(keywords))
    if unknown:
        raise EngineError(
            f"{option_prefix}arch-arg {', '.join(unknown)}: architecture {arch!r} takes no "
            f"such option; it takes {', '.join(keywords)}"
        )
    applies_to = getattr(cls, "architectures", None)
    if applies_to is not None and arch not in applies_to:
        raise EngineError(f"method {method!r} applies to {', '.join(applies_to)}, not {arch!r}; "
                          f"choose one of those with {option_prefix}arch")
    _validate_data(data, data_options, option_prefix)


def check_data_root(data: str, settings: Settings) -> None:
    """A dataset read from a local folder needs ``--data-root``: refused before any work."""
    from .data import needs_root

    if settings.data_root is None and needs_root(data):
        raise EngineError(
            f"{settings.option('data')} {data} is read from a local folder: give it with "
            f"{settings.option('data-root')} DIR (fetch it once, on a machine with network, "
            f"with fa_checks.load_data({data!r}, root=DIR, download=True))"
        )


def _validate_data(name: str, options: Mapping[str, Any], option_prefix: str = "--") -> None:
    """Unknown datasets, parameters and out-of-range values, checked without loading."""
    from .data import DataError, dataset_defaults, resolve_spec

    try:
        dataset_defaults(name)
    except DataError as exc:
        raise EngineError(f"{option_prefix}data: {exc}") from None
    try:
        resolve_spec(name, **options)
    except DataError as exc:
        raise EngineError(f"{option_prefix}data-arg: {exc}") from None


# -- settings and devices --------------------------------------------------------------------
def _default_thresholds() -> Thresholds:
    from .protocol import Thresholds

    return Thresholds()


@dataclass
class Settings:
    """How subjects are trained and evaluated (shared by every subject of one session)."""

    data_root: str | None = None
    eval_size: int = 1024
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    thresholds: Thresholds = field(default_factory=_default_thresholds)
    baseline_acc: float | None = None  # None: train (and cache) the frozen-blocks baseline
    trust: bool = False  # allow checkpoints that need arbitrary unpickling
    retrain: bool = False  # recompute cached artifacts
    credit: bool = True  # compute credit metrics when the method has credit
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    schedule: str = "cosine"  # learning-rate schedule of fresh runs and baselines
    progress: bool = False
    #: False skips D3 when no baseline_acc is given, instead of training the baseline
    depth_utility: bool = True
    #: how the caller spells its options in error messages: ``"--"`` (the command line's
    #: ``--device``, ``--data``) or ``"--fa-"`` (the plugin's ``--fa-device``, ``--fa-data``)
    option_prefix: str = "--"

    def option(self, name: str) -> str:
        """The caller's spelling of option ``name``: ``"device"`` -> ``"--fa-device"``."""
        return f"{self.option_prefix}{name}"

    def evaluation_key(self) -> dict[str, Any]:
        """The settings that change a report's figures (not where data lives or progress)."""
        return {
            "eval_size": int(self.eval_size),
            "thresholds": dataclasses.asdict(self.thresholds),
            "baseline_acc": self.baseline_acc,
            "depth_utility": bool(self.depth_utility),
            "credit": bool(self.credit),
            **self.training_key(),
        }

    def training_key(self) -> dict[str, Any]:
        return {
            "batch_size": int(self.batch_size),
            "lr": float(self.lr),
            "weight_decay": float(self.weight_decay),
            "schedule": str(self.schedule),
        }


def resolve_device(name: str, *, what: str = "--device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is an EngineError.

    ``what`` names the option the device came from, for the error message.
    """
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise EngineError(f"{what} {name}: CUDA is not available here; "
                              f"use {what} cpu or auto")
        index = text.partition(":")[2]
        if index:
            if not index.isdigit():
                raise EngineError(f"{what} {name}: the CUDA index must be a number (cuda:0)")
            if int(index) >= torch.cuda.device_count():
                raise EngineError(f"{what} {name}: only {torch.cuda.device_count()} CUDA "
                                  "device(s) are visible")
        return torch.device(text)
    raise EngineError(f"{what} {name!r} is not a device; use auto, cpu, cuda or cuda:N")


# -- files -----------------------------------------------------------------------------------
def check_writable(path: str | Path, *, what: str) -> Path:
    """Refuse, before any work, an output path that cannot be written (``what`` names the option).

    The folder is created if it is missing; a folder at ``path`` itself is refused.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise EngineError(f"{what} {path}: is a folder; give a file name inside it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_beside(target)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EngineError(f"{what} {path}: cannot write there ({reason}); choose a writable "
                          "path") from None
    return target


def check_writable_folder(path: str | Path, *, what: str) -> Path:
    """Like :func:`check_writable`, for an output folder (created if it is missing)."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise EngineError(f"{what} {path}: is a file; give a folder")
    check_writable(folder / "probe", what=what)
    return folder


# -- training --------------------------------------------------------------------------------
def _say(log: Log | None, message: str) -> None:
    if log is not None:
        log(message)


def train_fresh(
    subject: Subject,
    settings: Settings,
    *,
    checkpoint: str | Path | None = None,
    eval_size: int | None = None,
) -> Run:
    """Train a fresh subject with the settings' optimizer, schedule, device and data root.

    The one place the command line, the cached runs and the frozen baselines call the trainer.
    ``eval_size``: the samples of the history's ``||h_L||`` / ``||g_L||`` (trainer's default).
    """
    from .training import train

    if subject.kind != "fresh":
        raise EngineError(f"subject {subject.id!r} is a checkpoint, not a run to train")
    if subject.method is None or subject.seed is None or subject.epochs is None:
        raise EngineError(f"subject {subject.id!r} needs a method, a seed and epochs to train")
    extra = {} if eval_size is None else {"eval_size": int(eval_size)}
    return train(
        subject.method,
        subject.arch,
        subject.data,
        epochs=subject.epochs,
        seed=subject.seed,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        schedule=settings.schedule,
        device=str(resolve_device(settings.device, what=settings.option("device"))),
        method_options=dict(subject.method_options),
        arch_options=dict(subject.arch_options),
        data_root=settings.data_root,
        data_options=dict(subject.data_options),
        checkpoint=checkpoint,
        progress=settings.progress,
        **extra,
    )


def train_subject(
    subject: Subject, settings: Settings, cache: ArtifactCache, *, log: Log | None = None
) -> Path:
    """The checkpoint of a fresh subject, trained once (cache kind ``"run"``)."""
    if subject.kind != "fresh":
        raise EngineError(f"subject {subject.id!r} is a checkpoint, not a run to train")
    spec = {"subject": _training_spec(subject), **settings.training_key()}

    def create(path: Path) -> None:
        _say(log, f"training {subject.id} ({subject.arch} on {subject.data}, "
                  f"{subject.epochs} epochs)")
        train_fresh(subject, settings, checkpoint=path)

    return cache.get_or_create("run", spec, create, suffix=".pt", refresh=settings.retrain)


def _training_spec(subject: Subject) -> dict[str, Any]:
    """The subject's fields that define a trained run (not its id or path), with every
    default filled in, so ``d_hidden=256`` given or left out is the same run."""
    out = subject.to_dict()
    for name in ("id", "path", "kind"):
        out.pop(name)
    if subject.kind == "fresh":
        out["arch_options"] = canonical_arch_options(subject.arch, subject.arch_options)
        out["data_options"] = canonical_data_options(subject.data, subject.data_options)
        if subject.method is not None:
            out["method_source"] = method_source_digest(subject.method)
    return out


def method_source_digest(name: str) -> str | None:
    """A digest of a user rule's source file, so an edited rule is retrained, not reused.

    Built-in rules are versioned with the library (the cache key holds its version): None.
    """
    import inspect

    from .cache import file_digest
    from .methods.base import method_class

    cls = method_class(name)
    if cls.__module__.startswith("fa_checks."):
        return None
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:  # defined where no file exists (an interactive session)
        return None
    return None if source is None else file_digest(Path(source))


def canonical_arch_options(arch: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with the architecture's defaults filled in (a cache key's model part)."""
    import inspect

    from .models import MODELS

    merged = dict(options or {})
    cls = MODELS.get(arch)
    if cls is not None:
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name in ("self", "input_shape", "num_classes"):
                continue
            if param.default is not inspect.Parameter.empty:
                merged.setdefault(name, param.default)
    return merged


def canonical_data_options(data: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` with the dataset's defaults filled in (a cache key's data part)."""
    from .data import DataError, dataset_defaults

    try:
        defaults = dataset_defaults(data)
    except DataError:
        defaults = {}
    return {**defaults, **dict(options or {})}


def frozen_baseline_accuracy(
    arch: str,
    arch_options: Mapping[str, Any] | None,
    data: str,
    data_options: Mapping[str, Any] | None,
    seed: int,
    epochs: int,
    settings: Settings,
    cache: ArtifactCache,
    *,
    log: Log | None = None,
) -> float:
    """Test accuracy of the frozen-blocks baseline (random blocks; embed and head trained).

    Trained once per (arch, options, data, seed, epochs, optimizer settings) and cached
    (kind ``"baseline"``, JSON with the accuracy and the history).
    """
    spec = {
        "arch": arch,
        "arch_options": canonical_arch_options(arch, arch_options),
        "data": data,
        "data_options": canonical_data_options(data, data_options),
        "seed": int(seed),
        "epochs": int(epochs),
        **settings.training_key(),
    }
    baseline = Subject(id=f"frozen-seed{seed}", kind="fresh", method="frozen", arch=arch,
                       arch_options=arch_options or {}, data=data,
                       data_options=data_options or {}, seed=int(seed), epochs=int(epochs))

    def compute() -> dict[str, Any]:
        _say(log, f"training the frozen-blocks baseline ({arch} on {data}, seed {seed}, "
                  f"{epochs} epochs)")
        run = train_fresh(baseline, settings)
        return {"test_acc": run.test_acc, "spec": spec, "history": run.history}

    stored = cache.get_or_create_json("baseline", spec, compute, refresh=settings.retrain)
    return float(stored["test_acc"])


def evaluate_subject(
    subject: Subject, settings: Settings, cache: ArtifactCache, *, log: Log | None = None
) -> Report:
    """The protocol's report for ``subject``; every expensive step is cached.

    A checkpoint's errors (missing, corrupt, untrusted) propagate as ``CheckpointError`` naming
    the file.  A fresh subject is trained once (cache kind ``"run"``) and then evaluated like a
    checkpoint.  The report is cached too (kind ``"report"``), keyed by the subject, the settings
    that change figures and, for a checkpoint, the file's content.
    """
    from .cache import file_digest
    from .protocol import Report

    # checked even when the report is cached: a device that cannot be used is an error
    resolve_device(settings.device, what=settings.option("device"))
    if subject.kind == "fresh":
        checkpoint_path = train_subject(subject, settings, cache, log=log)
        content = None  # the run's key already pins its content
    else:
        if subject.path is None:
            raise EngineError(f"checkpoint subject {subject.id!r} has no path")
        checkpoint_path = Path(subject.path)
        content = file_digest(checkpoint_path) if checkpoint_path.is_file() else None
        if content is None:
            _load_checkpoint(checkpoint_path, settings)  # raises the checkpoint module's error

    spec = {
        "kind": subject.kind,
        "subject": _training_spec(subject),
        "content": content,
        **settings.evaluation_key(),
    }

    def compute() -> dict[str, Any]:
        return _evaluate_checkpoint(subject, checkpoint_path, settings, cache, log=log).to_dict()

    report = Report.from_dict(
        cache.get_or_create_json("report", spec, compute, refresh=settings.retrain)
    )
    # the same file may be reached by another path: the subject part is always this one's
    report.subject = {**(report.subject or {}), "id": subject.id, "kind": subject.kind,
                      "path": str(checkpoint_path)}
    return report


@dataclass
class LoadedSubject:
    """A subject ready to use: its trained model, its rule and its data, on the device."""

    subject: Subject
    model: torch.nn.Module  # in eval mode
    method: Method | None  # set up with its saved feedback; None when none was saved (or asked)
    data: Dataset  # the data it was trained on
    checkpoint: Checkpoint
    path: Path


def load_subject(
    subject: Subject,
    settings: Settings,
    cache: ArtifactCache,
    *,
    with_method: bool = True,
    log: Log | None = None,
) -> LoadedSubject:
    """The subject's model, rule and dataset (a fresh subject is trained first, once).

    The dataset is the one the checkpoint records; for a file that records none (the research
    code's formats), the subject's, or the one the model's input size suggests.  Errors name
    the file and the option that fixes them.
    """
    from .data import DataError, load_data

    device = resolve_device(settings.device, what=settings.option("device"))
    if subject.kind == "fresh":
        path = train_subject(subject, settings, cache, log=log)
    elif subject.path is None:
        raise EngineError(f"checkpoint subject {subject.id!r} has no path")
    else:
        path = Path(subject.path)
    checkpoint = _load_checkpoint(path, settings)
    model = checkpoint.build_model().to(device).eval()
    # a method that cannot be rebuilt is a CheckpointError naming the file
    method = checkpoint.build_method(model) if with_method and checkpoint.method else None
    data_name, data_options = _checkpoint_data(checkpoint, subject)
    try:
        dataset = load_data(data_name, root=settings.data_root, **data_options)
    except DataError as exc:
        raise EngineError(f"{path}: {exc}") from None
    _check_data_fits(checkpoint, dataset, data_name, settings.option("data"))
    return LoadedSubject(subject, model, method, dataset.to(device), checkpoint, path)


def _load_checkpoint(path: Path, settings: Settings, map_location: Any = "cpu") -> Checkpoint:
    from .checkpoint import load_checkpoint

    return load_checkpoint(path, trust=settings.trust, map_location=map_location)


def _without_shape(arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arch_kwargs.items() if k not in ("input_shape", "num_classes")}


def _checkpoint_data(checkpoint: Checkpoint, subject: Subject) -> tuple[str, dict[str, Any]]:
    """The checkpoint's own data spec; else the subject's dataset, or, when the subject names
    only the default, the dataset the model's input size suggests (older formats)."""
    if checkpoint.data:
        spec = dict(checkpoint.data)
        name = spec.pop("name", None)
        if not name:
            raise EngineError(f"{checkpoint.path}: its data spec names no dataset")
        return str(name), spec
    default = next(f.default for f in dataclasses.fields(Subject) if f.name == "data")
    hint = getattr(checkpoint, "data_hint", None)
    if hint and subject.data == default and not subject.data_options:
        return str(hint), {}
    return subject.data, dict(subject.data_options)


def _check_data_fits(checkpoint: Checkpoint, dataset: Any, name: str, option: str) -> None:
    wanted = (math.prod(checkpoint.input_shape), checkpoint.num_classes)
    given = (math.prod(dataset.input_shape), dataset.num_classes)
    if wanted != given:
        raise EngineError(
            f"{checkpoint.path}: the model takes {wanted[0]} input features and {wanted[1]} "
            f"classes, but dataset {name!r} has {given[0]} and {given[1]}; name the dataset it "
            f"was trained on ({option})"
        )


def _evaluate_checkpoint(
    subject: Subject,
    path: Path,
    settings: Settings,
    cache: ArtifactCache,
    *,
    log: Log | None = None,
) -> Report:
    import torch

    from .protocol import evaluate
    from .training import accuracy

    # the path is the evaluated file itself (a fresh subject's run is already trained)
    loaded = load_subject(dataclasses.replace(subject, kind="checkpoint", path=str(path)),
                          settings, cache, with_method=settings.credit, log=log)
    checkpoint, dataset = loaded.checkpoint, loaded.data
    x, y = dataset.eval_batch(int(settings.eval_size))
    with torch.no_grad():
        test_acc = accuracy(loaded.model, dataset.x_test, dataset.y_test)

    baseline_acc = settings.baseline_acc
    if baseline_acc is None and settings.depth_utility:
        baseline_acc = _baseline_for(checkpoint, subject, dict(dataset.spec), settings, cache,
                                     log=log)

    report = evaluate(
        loaded.model,
        x,
        y,
        baseline_acc=baseline_acc,
        thresholds=settings.thresholds,
        method=loaded.method,
        test_acc=test_acc,
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
    return report


def _baseline_for(
    checkpoint: Checkpoint,
    subject: Subject,
    data_spec: Mapping[str, Any],
    settings: Settings,
    cache: ArtifactCache,
    *,
    log: Log | None = None,
) -> float:
    """The frozen baseline trained like the checkpoint: its arch, data, seed, epochs, optimizer."""
    epochs = checkpoint.epochs if checkpoint.epochs is not None else subject.epochs
    seed = checkpoint.seed if checkpoint.seed is not None else subject.seed
    if epochs is None or seed is None:
        missing = "epochs" if epochs is None else "seed"
        raise EngineError(
            f"{checkpoint.path}: records no {missing}, so its frozen-blocks baseline cannot be "
            f"trained to match; give the baseline accuracy ({settings.option('baseline-acc')})"
        )
    recorded = dict(checkpoint.optimizer or {})
    matched = dataclasses.replace(
        settings,
        batch_size=int(recorded.get("batch_size", settings.batch_size)),
        lr=float(recorded.get("lr", settings.lr)),
        weight_decay=float(recorded.get("weight_decay", settings.weight_decay)),
        schedule=str(recorded.get("schedule", settings.schedule)),
    )
    data_options = {k: v for k, v in data_spec.items() if k != "name"}
    return frozen_baseline_accuracy(
        checkpoint.arch,
        _without_shape(checkpoint.arch_kwargs),
        str(data_spec["name"]),
        data_options,
        int(seed),
        int(epochs),
        matched,
        cache,
        log=log,
    )


# -- across seeds ----------------------------------------------------------------------------
@dataclass
class SeedSummary:
    """D3 over seeds: a one-sided Student-t lower confidence bound on the mean margin."""

    method: str
    n: int
    margins_pp: list[float]
    mean_margin_pp: float
    std_margin_pp: float
    lower_bound_pp: float
    confidence: float
    threshold_pp: float
    fires: bool
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def seed_summary(
    reports: Sequence[Report], *, min_margin_pp: float = 2.0, confidence: float = 0.95
) -> SeedSummary:
    """Gate the mean D3 margin over seeds: fires when ``mean - t * std / sqrt(n) < min_margin``.

    With one seed there is no spread to bound the mean by: the bound is ``-inf`` and the gate
    fires, and the explanation says that more seeds are needed.
    """
    if not reports:
        raise EngineError("a seed summary needs at least one report")
    if not 0.0 < confidence < 1.0:
        raise EngineError(f"confidence must be between 0 and 1, not {confidence}")
    margins: list[float] = []
    for report in reports:
        margin = getattr(report.d3, "margin_pp", None)
        if margin is None:
            who = (report.subject or {}).get("id", "a report")
            raise EngineError(f"{who} has no D3 margin (no baseline accuracy); a seed summary "
                              "needs one for every seed")
        margins.append(float(margin))
    methods = list(dict.fromkeys(str((r.subject or {}).get("method")) for r in reports))
    method = methods[0] if len(methods) == 1 else "+".join(methods)
    n = len(margins)
    mean = math.fsum(margins) / n
    if n == 1:
        std = 0.0
        bound = -math.inf
        fires = True
        explanation = (
            f"{method}: one seed, D3 margin {mean:.1f} pp; a single seed cannot bound the mean "
            f"margin, so the {confidence:.0%} gate against {min_margin_pp:g} pp cannot pass. "
            "Run two or more seeds."
        )
    else:
        from scipy import stats

        from .protocol import MARGIN_DECIMALS

        std = math.sqrt(math.fsum((m - mean) ** 2 for m in margins) / (n - 1))
        t = float(stats.t.ppf(confidence, n - 1))
        # rounded as D3 rounds one margin: a bound of exactly the threshold must pass
        bound = round(mean - t * std / math.sqrt(n), MARGIN_DECIMALS)
        fires = bool(bound < min_margin_pp) or math.isnan(bound)
        relation = "below" if fires else "at or above"
        explanation = (
            f"{method}: mean D3 margin over {n} seeds is {mean:.1f} pp (std {std:.1f}); its "
            f"one-sided {confidence:.0%} lower bound {bound:.1f} pp is {relation} the "
            f"{min_margin_pp:g} pp threshold."
        )
    return SeedSummary(
        method=method,
        n=n,
        margins_pp=margins,
        mean_margin_pp=mean,
        std_margin_pp=std,
        lower_bound_pp=bound,
        confidence=confidence,
        threshold_pp=float(min_margin_pp),
        fires=fires,
        explanation=explanation,
    )


__all__ = [
    "EngineError",
    "LoadedSubject",
    "SeedSummary",
    "Settings",
    "Subject",
    "canonical_arch_options",
    "canonical_data_options",
    "check_writable",
    "check_writable_folder",
    "checkpoint_subjects",
    "copy_atomic",
    "evaluate_subject",
    "format_options",
    "format_value",
    "fresh_subjects",
    "frozen_baseline_accuracy",
    "load_subject",
    "parse_options",
    "parse_value",
    "resolve_device",
    "seed_summary",
    "subject_id",
    "train_fresh",
    "train_subject",
    "validate_training",
    "write_atomic",
    "write_json_atomic",
]
