"""The ``fa-checks/1`` layout, field by field: each is checked by type, against the limits and
against the tensors actually present, before any work; the result is a :class:`Checkpoint`.

The tensor checks here serve the research code's layouts too (:mod:`.seed_formats`).
"""

from __future__ import annotations

import numbers
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import values
from ..errors import one_line
from ..limits import Limits, beyond, check_method_options, check_training, key_name
from .architecture import architecture, checked_arch
from .errors import CheckpointError, preview, short
from .rebuild import FORMAT, Checkpoint
from .torchfile import ALLOWED_DTYPES, FileRefused, check_view

_REQUIRED_KEYS = ("arch", "arch_kwargs", "model_state")
_MAX_HISTORY_KEYS = 256
_MAX_LIST = 1024

#: the dtypes a state's tensors may have: real floating point, integers and bool
_TENSOR_DTYPES = frozenset(getattr(torch, name) for name in ALLOWED_DTYPES)


def from_fa_checks(path: Path, raw: Mapping[str, Any], limits: Limits, *,
                   import_archs: Collection[str] | None = ()) -> Checkpoint:
    """The checkpoint a ``fa-checks/1`` dict holds, every field checked."""
    fmt = raw["format"]
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("fa-checks/"):
            raise CheckpointError(
                f"{path}: format {fmt!r} was written by another fa-checks version; this one "
                f"reads {FORMAT!r}"
            )
        raise CheckpointError(f"{path}: unknown checkpoint format {short(fmt)}; expected "
                              f"{FORMAT!r}")
    for key in _REQUIRED_KEYS:
        if key not in raw:
            raise CheckpointError(f"{path}: missing key {key!r}")
    # a model factory's module may be imported for a trusted file (None) or a name the user gave
    arch = architecture(path, raw["arch"], allow_import=import_archs is None or (
        isinstance(raw["arch"], str) and raw["arch"] in import_archs))
    arch_kwargs = dict_of(path, raw, "arch_kwargs")
    for key in ("input_shape", "num_classes"):
        if key not in arch_kwargs:
            raise CheckpointError(f"{path}: missing key 'arch_kwargs.{key}'")
    arch_kwargs = checked_arch(path, arch, arch_kwargs, limits)
    method = raw.get("method")
    if method is not None and (not isinstance(method, str) or not method.strip()
                               or len(method) > 300):
        raise CheckpointError(
            f"{path}: 'method' must be a method name or None, got {short(method)}")
    method_options = dict_of(path, raw, "method_options", default={})
    method_options = check_method_options(
        str(method), method_options, limits, where=f"{path}: ", prefix="method_options.",
        error=CheckpointError)
    version = raw.get("version")
    if version is not None and not isinstance(version, (str, int, float)):
        raise CheckpointError(f"{path}: 'version' must be text, got {short(version)}")
    training = _checked_training(path, {"seed": raw.get("seed"), "epochs": raw.get("epochs")},
                                 limits)
    return Checkpoint(
        path=path,
        arch=arch,
        arch_kwargs=arch_kwargs,
        model_state=tensor_dict(path, raw, "model_state", limits),
        method=method,
        method_options=method_options,
        method_state=tensor_dict(path, raw, "method_state", limits, default={}),
        data=_checked_data(path, raw.get("data")),
        seed=training.get("seed"),
        epochs=training.get("epochs"),
        optimizer=_checked_optimizer(path, dict_of(path, raw, "optimizer", default=None),
                                     limits),
        test_acc=checked_test_acc(path, raw),
        history=checked_history(path, raw.get("history"), limits),
        version=None if version is None else str(version)[:100],
    )


# -- settings ---------------------------------------------------------------------------------
def _checked_training(path: Path, settings: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    given = {key: value for key, value in settings.items() if value is not None}
    if isinstance(given.get("lr"), Tensor) or isinstance(given.get("seed"), Tensor):
        raise CheckpointError(f"{path}: training settings must be plain numbers, not tensors")
    return check_training(**given, limits=limits, where=f"{path}: ", error=CheckpointError)


def _checked_optimizer(path: Path, optimizer: dict[str, Any] | None,
                       limits: Limits) -> dict[str, Any] | None:
    if optimizer is None:
        return None
    def plain(value: Any) -> bool:
        return value is None or isinstance(value, bool) or is_number(value) or (
            isinstance(value, str) and len(value) <= 100)

    for key, value in optimizer.items():
        short_list = isinstance(value, list) and len(value) <= 16 and all(map(plain, value))
        if not isinstance(key, str) or not (plain(value) or short_list):
            raise CheckpointError(
                f"{path}: optimizer[{short(key)}] must be a plain setting (a number, short "
                f"text, true/false, none or a short list of them), got {short(value)}")
    known = {key: optimizer.get(key) for key in ("lr", "weight_decay", "batch_size", "schedule")}
    return {**optimizer, **_checked_settings(path, known, limits)}


def _checked_settings(path: Path, settings: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """The optimizer's settings, named in messages as ``optimizer.<key>``."""
    given = {key: value for key, value in settings.items() if value is not None}
    names = {key: f"optimizer.{key}" for key in given}
    return check_training(**given, limits=limits, names=names, where=f"{path}: ",
                          error=CheckpointError)


def _checked_data(path: Path, data: Any) -> dict[str, Any] | None:
    """A dataset spec of plain values.  A name the data registry knows has its parameters
    checked now (ranges and limits); another name (a run trained on the user's own
    ``Dataset``) is kept as written: it can only ever be loaded through the registry, which
    refuses it when the data is needed."""
    if data is None:
        return None
    from ..data import DataError, available_datasets, resolve_spec

    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise CheckpointError(f"{path}: 'data' must be a dataset spec dict or None, got "
                              f"{short(data)}")
    params = dict(data)
    name = params.pop("name", None)
    if not isinstance(name, str) or not name or len(name) > 100:
        raise CheckpointError(f"{path}: 'data' must name its dataset as data.name (short "
                              f"text), got {short(name)}")
    for key, value in params.items():
        if not (value is None or isinstance(value, bool) or is_number(value)
                or (isinstance(value, str) and len(value) <= 100)):
            raise CheckpointError(f"{path}: data.{key_name(key)} must be a plain value, got "
                                  f"{short(value)}")
    if name.lower() in available_datasets():
        try:
            resolve_spec(name, **params)
        except DataError as exc:
            raise CheckpointError(f"{path}: its data spec is refused: {one_line(exc)}") from None
    return dict(data)  # as written: resolving it again later gives the same dataset


def checked_history(path: Path, history: Any, limits: Limits) -> list[dict[str, Any]] | None:
    """A list of per-epoch dicts of numbers, true/false or none, of bounded length."""
    if history is None:
        return None
    if not isinstance(history, list):
        raise CheckpointError(f"{path}: 'history' must be a list, got {type(history).__name__}")
    if len(history) > limits.max_history:
        raise CheckpointError(f"{path}: 'history' holds {len(history):,} entries, above "
                              f"{beyond('max_history', limits, len(history))}")
    for number, entry in enumerate(history):
        if not isinstance(entry, Mapping) or len(entry) > _MAX_HISTORY_KEYS:
            raise CheckpointError(
                f"{path}: history[{number}] must be a dict of at most {_MAX_HISTORY_KEYS} "
                f"figures, got {short(entry)}")
        for key, value in entry.items():
            if not isinstance(key, str) or len(key) > 100 or not _figure(value):
                raise CheckpointError(
                    f"{path}: history[{number}][{short(key)}] must be a number, true/false, "
                    f"none, short text or a flat list of numbers under a short name, got "
                    f"{short(value)}")
    return [dict(entry) for entry in history]


def _figure(value: Any) -> bool:
    """A history value: a number, true/false, none, short text, or a flat list of numbers."""
    def scalar(item: Any) -> bool:
        return item is None or isinstance(item, (bool, float)) or (
            isinstance(item, int) and abs(item) < 2**63)

    if isinstance(value, list):
        return len(value) <= _MAX_LIST and all(scalar(item) for item in value)
    return scalar(value) or (isinstance(value, str) and len(value) <= 100)


def checked_test_acc(path: Path, raw: Mapping[str, Any]) -> float | None:
    """``raw["test_acc"]`` as a fraction from 0 to 1, or None when absent."""
    value = raw.get("test_acc")
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype.is_floating_point:
        value = value.item()
    try:
        if isinstance(value, (bool, str, Tensor)):
            raise ValueError("it must be a number")
        return values.fraction(value)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: test_acc={short(value)}: {exc}") from None


# -- tensors and dicts ------------------------------------------------------------------------
def tensor_dict(
    path: Path, raw: Mapping[str, Any], key: str, limits: Limits, default: Any = ...
) -> dict[str, Tensor]:
    """``raw[key]``: a bounded dict of names to tensors, each checked by :func:`check_tensor`."""
    value = raw.get(key, default)
    if value is ...:
        raise CheckpointError(f"{path}: missing key {key!r}")
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {key!r} must be a dict of tensors")
    if len(value) > limits.max_tensors:
        raise CheckpointError(f"{path}: {key!r} holds {len(value):,} tensors, above "
                              f"{beyond('max_tensors', limits, len(value))}")
    bad = [k for k, v in value.items() if not isinstance(k, str) or len(k) > 1000
           or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {key!r} must map names to tensors; not {preview(bad)}")
    for name, tensor in value.items():
        check_tensor(path, f"{key}[{name!r}]", tensor)
    return dict(value)


def check_tensor(path: Path, label: str, tensor: Tensor) -> None:
    """A dense tensor of a real dtype whose storage holds every element its shape needs."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested \
            or tensor.dtype not in _TENSOR_DTYPES:
        raise CheckpointError(
            f"{path}: {short(label)} is a {tensor.layout} tensor of {tensor.dtype}; a state "
            f"holds dense tensors of {', '.join(sorted(ALLOWED_DTYPES))}")
    if tensor.is_meta:
        return  # no storage to compare with (map_location="meta")
    available = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
    try:
        check_view(available, tensor.storage_offset(), tuple(tensor.shape),
                   tuple(tensor.stride()), what=short(label))
    except FileRefused as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def dict_of(path: Path, raw: Mapping[str, Any], key: str, default: Any = ...) -> Any:
    """``raw[key]`` as a dict (None only when ``default`` is None and the value is None)."""
    value = raw.get(key, default)
    if value is ...:
        raise CheckpointError(f"{path}: missing key {key!r}")
    if value is None and default is None:
        return None
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {key!r} must be a dict, got {type(value).__name__}")
    return dict(value)


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
