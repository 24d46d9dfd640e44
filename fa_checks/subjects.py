"""Subjects: what is checked.  A checkpoint file, or a method trained fresh with one seed.

Both faces build their subjects here, and every name and option of a fresh run is checked now,
before any work (an unknown method, architecture or dataset, an option it does not take, a
size beyond the limits), so a bad request is a :class:`~fa_checks.errors.ConfigError` naming
the flag.  Nothing here imports torch at import time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import values
from .errors import ConfigError
from .globs import expand
from .settings import DEFAULT_ARCH, DEFAULT_DATA, DEFAULT_EPOCHS
from .values import format_key_values


@dataclass(frozen=True)
class Subject:
    """One thing to check: a checkpoint file or a method trained fresh with one seed."""

    id: str
    kind: str  # "checkpoint" | "fresh"
    path: str | None = None
    method: str | None = None
    method_options: Mapping[str, Any] = field(default_factory=dict)
    arch: str = DEFAULT_ARCH
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    data: str = DEFAULT_DATA
    data_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("checkpoint", "fresh"):
            raise ConfigError(f"subject kind must be 'checkpoint' or 'fresh', not {self.kind!r}")
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
            raise ConfigError(f"a subject has no field {', '.join(unknown)}")
        return cls(**dict(d))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))


def subject_id(method: str, method_options: Mapping[str, Any] | None, seed: int) -> str:
    """``"dfa-seed3"`` or ``"dfa-penalty=0.01-seed3"``."""
    parts = [method]
    if method_options:
        parts.append(format_key_values(method_options))
    parts.append(f"seed{seed}")
    return "-".join(parts)


_GLOB_CHARS = frozenset("*?[")


def checkpoint_subjects(
    patterns: Sequence[str], *, cwd: Path | None = None, what: str = "--fa-checkpoint"
) -> list[Subject]:
    """One subject per file ``patterns`` name, in the order given (each glob's matches sorted),
    each file once.

    A glob that matches nothing is a :class:`ConfigError` (a typo in the pattern).  A plain path
    is a subject even when no file is there: it is refused when it is evaluated, with a sentence
    naming the file, like a corrupt one, so the other subjects still run.  ``subject.id`` is the
    path as given (relative paths stay relative to ``cwd``); ``subject.path`` is absolute, so any
    process can load it.
    """
    base = Path.cwd() if cwd is None else Path(cwd)
    found: dict[str, str] = {}  # absolute path -> path as given, in the order given
    for pattern in patterns:
        expanded = str(Path(pattern).expanduser()) if pattern.startswith("~") else pattern
        matches = [expanded]
        if _GLOB_CHARS & set(expanded) and not (base / expanded).exists():
            root = None if Path(expanded).is_absolute() else base
            matches = sorted(m for m in expand(expanded, root or Path("/"))
                             if (base / m).is_file())
            if not matches:
                raise ConfigError(f"{what} {pattern!r} matches no file (looked in {base})")
        for match in matches:
            found.setdefault(str((base / match).resolve()), match)
    return [Subject(id=given, kind="checkpoint", path=absolute)
            for absolute, given in found.items()]


def fresh_subjects(
    method: str,
    seeds: Sequence[int],
    *,
    arch: str = DEFAULT_ARCH,
    data: str = DEFAULT_DATA,
    epochs: int = DEFAULT_EPOCHS,
    method_options: Mapping[str, Any] | None = None,
    arch_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    flag_prefix: str = "--",
) -> list[Subject]:
    """One subject per seed for ``method`` trained fresh; every name and option is checked now.

    ``flag_prefix`` is how the caller spells its options (``"--"`` for the command line's
    ``--method-arg``, ``"--fa-"`` for the plugin's ``--fa-method-arg``), for error messages.
    """
    from .limits import check_training

    method_options = dict(method_options or {})
    arch_options = dict(arch_options or {})
    data_options = dict(data_options or {})
    validate_training(method, method_options, arch, arch_options, data, data_options,
                      flag_prefix=flag_prefix)
    if not seeds:
        raise ConfigError(f"no seeds given for method {method!r}; give at least one")
    unique = list(dict.fromkeys(_checked(values.seed, seed, f"{flag_prefix}seeds")
                                for seed in seeds))
    epochs = check_training(epochs=epochs, names={"epochs": f"{flag_prefix}epochs"})["epochs"]
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
            epochs=epochs,
        )
        for seed in unique
    ]


def _checked(parse: Any, value: Any, flag: str) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{flag} {value!r} is not valid: {exc}") from None


def validate_training(
    method: str,
    method_options: Mapping[str, Any],
    arch: str,
    arch_options: Mapping[str, Any],
    data: str,
    data_options: Mapping[str, Any],
    *,
    flag_prefix: str = "--",
) -> None:
    """Raise :class:`ConfigError` for an unknown method, arch or dataset or a bad option.

    Each message names the option to change, spelt with ``flag_prefix``.
    """
    from .limits import check_arch_options, check_method_options
    from .methods import MethodError, get_method, method_class
    from .methods.base import method_option_names, method_takes_option
    from .models import ModelError, model_keywords, takes_any_keyword

    try:
        cls = method_class(method)
    except MethodError as exc:
        raise ConfigError(f"{flag_prefix}method: {exc}") from None
    unknown = [key for key in method_options if not method_takes_option(cls, key)]
    if unknown:
        takes = method_option_names(cls)
        raise ConfigError(
            f"{flag_prefix}method-arg {', '.join(unknown)}: method {method!r} takes no such "
            "option; " + (f"it takes {', '.join(takes)}" if takes else "it takes no options")
        )
    try:
        get_method(method, **method_options)
    except MethodError as exc:
        raise ConfigError(f"{flag_prefix}method-arg: {exc}") from None
    try:
        keywords = model_keywords(arch)
    except ModelError as exc:
        raise ConfigError(f"{flag_prefix}arch: {exc}") from None
    unknown = sorted(set(arch_options) - set(keywords))
    if unknown and not takes_any_keyword(arch):
        raise ConfigError(
            f"{flag_prefix}arch-arg {', '.join(unknown)}: architecture {arch!r} takes no "
            f"such option; it takes {', '.join(keywords)}"
        )
    check_method_options(method, method_options, prefix=f"{flag_prefix}method-arg ")
    check_arch_options(arch, arch_options, prefix=f"{flag_prefix}arch-arg ")
    applies_to = getattr(cls, "architectures", None)
    if applies_to is not None and arch not in applies_to:
        raise ConfigError(f"method {method!r} applies to {', '.join(applies_to)}, not {arch!r}; "
                          f"choose one of those with {flag_prefix}arch")
    _validate_data(data, data_options, flag_prefix)
    _validate_fit(arch, arch_options, data, data_options, flag_prefix)


def check_data_root(data: str, data_root: str | None, *, flag_prefix: str = "--") -> None:
    """A dataset read from a local folder needs ``--data-root``: refused before any work."""
    from .data import needs_root

    if data_root is None and needs_root(data):
        raise ConfigError(
            f"{flag_prefix}data {data} is read from a local folder: give it with "
            f"{flag_prefix}data-root DIR (fetch it once, on a machine with network, "
            f"with fa_checks.load_data({data!r}, root=DIR, download=True))"
        )


def _validate_fit(arch: str, arch_options: Mapping[str, Any], data: str,
                  data_options: Mapping[str, Any], flag_prefix: str) -> None:
    """The architecture can take the dataset's inputs (vit and resnet need images)."""
    from .data import data_shape
    from .models import ModelError, check_input_shape

    shape = data_shape(data, **data_options).input_shape
    try:
        check_input_shape(arch, shape, data, sizes=arch_options, flag_prefix=flag_prefix)
    except ModelError as exc:
        raise ConfigError(str(exc)) from None


def _validate_data(name: str, options: Mapping[str, Any], flag_prefix: str = "--") -> None:
    """Unknown datasets, parameters and out-of-range values, checked without loading."""
    from .data import DataError, dataset_defaults, resolve_spec

    try:
        dataset_defaults(name)
    except DataError as exc:
        raise ConfigError(f"{flag_prefix}data: {exc}") from None
    try:
        resolve_spec(name, **options)
    except DataError as exc:
        raise ConfigError(f"{flag_prefix}data-arg: {exc}") from None


