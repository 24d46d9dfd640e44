"""Checkpoints: the ``fa-checks/1`` schema, safe atomic save, safe load, the seeds' older formats.

A ``fa-checks/1`` file is a ``torch.save`` of one dict holding only what
``torch.load(weights_only=True)`` accepts (tensors, dicts, lists, str, int, float, bool, None)::

    format          "fa-checks/1"
    arch            a built-in architecture name ("resmlp", "mlp", "vit", "resnet")
    arch_kwargs     its keywords, input_shape and num_classes included (``model.spec["kwargs"]``)
    model_state     the model's state_dict
    method          the training rule's name (or "module:Class"), or None
    method_options  its keyword options
    method_state    its state_dict (feedback matrices): {"feedback.0": B_0, ...}
    data            the dataset spec {"name": ..., **params} (root-independent), or None
    seed, epochs, optimizer (dict of settings), test_acc, history (per-epoch list), version

Loading never runs code from the file unless the caller says the file is trusted: a pickle that
needs more than plain data is refused, and a method name it holds resolves only to a built-in
or an entry point, naming the file and the trust flag.  Every size the file declares is checked
against :mod:`fa_checks.limits` and against the tensors actually present before any work (see
:mod:`fa_checks.torchfile` for what is checked of the bytes, and what the legacy format cannot
promise).  The research code's own files load too: ``{"state_dict", "Bs", "config",
"test_acc"}`` and a bare ResMLP state_dict, with the dimensions read off the tensor shapes.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import values
from .errors import UserError, as_user_error, one_line
from .files import write_atomic
from .limits import (
    LIMITS_VARIABLE,
    Limits,
    check_arch_options,
    check_method_options,
    check_training,
    default_limits,
    key_name,
    method_network_size,
    state_shapes,
)
from .torchfile import ALLOWED_DTYPES, FileRefused, check_view, read_torch_file

FORMAT = "fa-checks/1"

#: ``Checkpoint.source_format`` of the research code's two layouts
SEED_DICT_FORMAT = "seed-dict"
SEED_STATE_DICT_FORMAT = "seed-state-dict"

TRUST_HINT = (
    "pass trust=True (library), --fa-trust-checkpoint (pytest) or --trust (fa-checks) "
    "only for a file you made yourself"
)

_REQUIRED_KEYS = ("arch", "arch_kwargs", "model_state")

# input feature counts of the datasets the research code used, to suggest one for its files
_DATA_HINTS = {3072: "cifar10", 784: "mnist", 40: "mnist1d"}
_MAX_HISTORY_KEYS = 256
_MAX_LIST = 1024
# how far a method's declared network may exceed its saved state (the size is an estimate)
_BACKING, _BACKING_SLACK = 4, 1_000_000


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message names the file and the problem."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: everything needed to rebuild the model and its training rule."""

    path: Path
    arch: str
    arch_kwargs: dict[str, Any]
    model_state: dict[str, Tensor]
    method: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    method_state: dict[str, Tensor] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    seed: int | None = None
    epochs: int | None = None
    optimizer: dict[str, Any] | None = None
    test_acc: float | None = None
    history: list[Any] | None = None
    version: str | None = None
    #: FORMAT, SEED_DICT_FORMAT or SEED_STATE_DICT_FORMAT
    source_format: str = FORMAT
    #: a dataset name suggested by the input size when the file names no data (older formats)
    data_hint: str | None = None
    #: the research code's own ``config`` dict, when the file came with one
    source_config: dict[str, Any] | None = None
    #: whether it was loaded with trust=True: only then may its method name import a module
    trusted: bool = False
    #: method names the user gave the caller, which may import even when not trusted
    importable_methods: frozenset[str] = frozenset()
    #: the limits it was checked against (None: :func:`fa_checks.limits.default_limits`)
    limits: Limits | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arch_kwargs["input_shape"])

    def build_model(self, device: torch.device | str | None = None) -> nn.Module:
        """The model with its saved weights (loaded strictly), in eval mode, on ``device``."""
        from .models import ModelError, build_model

        limits = self.limits if self.limits is not None else default_limits()
        arch_kwargs = check_arch_options(self.arch, self.arch_kwargs, limits,
                                         where=f"{self.path}: ", prefix="arch_kwargs.",
                                         error=CheckpointError)
        try:
            model = build_model(self.arch, **arch_kwargs)
        except (ModelError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: cannot build {self.arch!r}: {one_line(exc)}") from None
        except Exception as exc:  # memory
            raise _machine_fault(self.path, exc, f"building its {self.arch}") from None
        _check_state_fits(self.path, self.arch, arch_kwargs, self.model_state, model)
        try:
            model.load_state_dict(self.model_state, strict=True)
            if device is not None:
                model.to(device)
        except RuntimeError as exc:  # e.g. a dtype that cannot be copied
            if _is_allocation_failure(exc):
                raise _machine_fault(self.path, exc, "loading its weights") from None
            raise CheckpointError(
                f"{self.path}: the model state does not load: {one_line(exc)}") from None
        return model.eval()

    def build_method(self, model: nn.Module) -> Any:
        """The training rule set up on ``model`` with its saved state, or None if none was saved.

        The stored name resolves to a built-in or an entry point of ``fa_checks.methods``; a
        ``module:Class`` imports its module only when the file was loaded with ``trust=True``.
        Feedback is first drawn from ``torch.Generator().manual_seed(seed or 0)`` by ``setup``,
        then replaced by the saved tensors, so the result does not depend on that draw.
        """
        if self.method is None:
            return None
        from .methods.base import method_from_name

        limits = self.limits if self.limits is not None else default_limits()
        options = check_method_options(self.method, self.method_options, limits,
                                       where=f"{self.path}: ", prefix="method_options.",
                                       error=CheckpointError)
        self._check_method_backed(options)
        try:
            allow_import = self.trusted or self.method in self.importable_methods
            method = method_from_name(self.method, options, allow_import=allow_import)
            method.setup(model, self.num_classes, torch.Generator().manual_seed(self.seed or 0))
        except (UserError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: cannot rebuild its method {_short(self.method)}: {one_line(exc)}"
            ) from None
        except Exception as exc:  # memory
            fault = _machine_fault(self.path, exc, f"setting up method {self.method!r}")
            raise fault from None
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        state = {k: v.to(device) for k, v in self.method_state.items()}
        try:
            method.load_state_dict(state)
        except (UserError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"{self.path}: the saved state of method {_short(self.method)} does not load: "
                f"{one_line(exc)}"
            ) from None
        return method


    def _check_method_backed(self, options: Mapping[str, Any]) -> None:
        """A network the options size (``vnet_width``, ``vnet_depth``) must be one the file's
        method state could hold: its setup allocates it before the state is compared."""
        declared = method_network_size(options)
        held = sum(t.numel() for t in self.method_state.values())
        if declared is not None and declared > _BACKING * held + _BACKING_SLACK:
            raise CheckpointError(
                f"{self.path}: method_options {_short(dict(options))} size a network of about "
                f"{declared:,} elements but its method_state holds {held:,}; the options do not "
                "match the saved state"
            )


# -- saving ---------------------------------------------------------------------------------
def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    method: Any = None,
    data: Mapping[str, Any] | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    optimizer: Mapping[str, Any] | None = None,
    test_acc: float | None = None,
    history: list[Any] | None = None,
) -> Path:
    """Write a ``fa-checks/1`` checkpoint atomically and return its path.

    ``model`` must carry ``model.spec`` (every model from :func:`fa_checks.build_model` does).
    The file appears complete or not at all: it is written to a temporary file in the same
    directory and renamed into place; on any failure the temporary file is removed and an
    existing file at ``path`` is left as it was.
    """
    path = Path(path)
    spec = getattr(model, "spec", None)
    if not isinstance(spec, Mapping) or "arch" not in spec or "kwargs" not in spec:
        raise CheckpointError(
            f"cannot save {path}: the model has no .spec naming its architecture; build it with "
            "fa_checks.build_model(arch, ...) so the checkpoint can rebuild it"
        )
    from . import __version__
    from .methods import method_reference

    payload = {
        "format": FORMAT,
        "arch": spec["arch"],
        "arch_kwargs": spec["kwargs"],
        "model_state": dict(model.state_dict()),
        "method": None if method is None else method_reference(method),
        "method_options": {} if method is None else dict(getattr(method, "options", {})),
        "method_state": {} if method is None else dict(method.state_dict()),
        "data": data,
        "seed": seed,
        "epochs": epochs,
        "optimizer": optimizer,
        "test_acc": test_acc,
        "history": history,
        "version": __version__,
    }
    plain = {key: _plain(value, path, key) for key, value in payload.items()}
    # what load_checkpoint would refuse is not written
    _checked_history(path, plain["history"], default_limits())
    _atomic_torch_save(plain, path)
    return path


def _plain(value: Any, path: Path, where: str) -> Any:
    """``value`` as the plain types ``weights_only`` loading accepts (tuples become lists)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Tensor):
        tensor = value.detach().cpu()
        # a view would otherwise drag its whole underlying storage into the file
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        return tensor
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CheckpointError(
                    f"cannot save {path}: {where} has a key {key!r} of type "
                    f"{type(key).__name__}; keys must be str or int"
                )
            out[key] = _plain(item, path, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item, path, f"{where}[{i}]") for i, item in enumerate(value)]
    raise CheckpointError(
        f"cannot save {path}: {where} holds a {type(value).__name__}, which a safe checkpoint "
        "cannot store; use tensors, dicts, lists, str, int, float, bool or None"
    )


def _atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    def save_synced(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename makes it visible

    write_atomic(path, save_synced)


# -- loading --------------------------------------------------------------------------------
def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    map_location: Any = "cpu",
    limits: Limits | None = None,
    import_methods: Collection[str] = (),
) -> Checkpoint:
    """Read a checkpoint (``fa-checks/1`` or the research code's formats) and validate it.

    Untrusted (the default), the file is data: it is checked as :mod:`fa_checks.torchfile` says
    (a regular file, bounded, archive CRCs, a pickle that names no code, tensors that fit their
    storage) before ``torch.load(weights_only=True)`` reads it, and every field that sizes work
    (architecture keywords against the tensors actually present, seed, epochs, optimizer
    settings, data spec, history) is checked against ``limits`` (default
    :func:`fa_checks.limits.default_limits`) before any model is built.  A method name it holds
    resolves later only to a built-in or an entry point (:meth:`Checkpoint.build_method`).

    ``trust=True`` loads with ``weights_only=False`` and lets the method name import its
    module: a trusted file can run any code.  ``import_methods``: method names the caller was
    given by the user (``--fa-method mypkg.rules:Rule`` for a fresh run whose file it then
    reads back); such a name may import its module even from an untrusted file, since the user
    named it, not the file.  Every problem is a :class:`CheckpointError` naming
    the file, raised here, including a failed allocation or read (``OSError``).
    """
    path = Path(path)
    limits = limits if limits is not None else default_limits()
    try:
        raw = _read(path, trust=trust, map_location=map_location, limits=limits)
        checkpoint = _parse(path, raw, limits)
        checkpoint.trusted, checkpoint.limits = bool(trust), limits
        checkpoint.importable_methods = frozenset(import_methods)
        _check_state_fits(path, checkpoint.arch, checkpoint.arch_kwargs, checkpoint.model_state,
                          limits=limits)
        return checkpoint
    except CheckpointError as exc:
        if "\n" in str(exc):  # a value from the file slipped into the sentence
            raise CheckpointError(one_line(exc)) from None
        raise
    except UserError:
        raise
    except Exception as exc:
        raise _machine_fault(path, exc, "loading it") from None


def _machine_fault(path: Path, exc: BaseException, doing: str) -> BaseException:
    """A CheckpointError for a failed read or allocation; ``exc`` itself for anything else."""
    if isinstance(exc, RuntimeError) and _is_allocation_failure(exc):
        exc = MemoryError(one_line(exc))
    user = as_user_error(exc)
    if user is None:
        return exc
    message = str(user)
    return CheckpointError(message if message.startswith(str(path)) else
                           f"{path}: {doing} failed: {message}")


def _is_allocation_failure(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return "allocate" in text or "out of memory" in text or "not enough memory" in text


def _read(path: Path, *, trust: bool, map_location: Any, limits: Limits) -> Any:
    try:
        checked = read_torch_file(path, trust=trust, limits=limits)
    except FileRefused as exc:
        hint = f"; {TRUST_HINT}" if exc.needs_trust else ""
        raise CheckpointError(f"{path}: {exc}{hint}") from None
    with checked.handle as handle:
        raw = _torch_load(path, handle, trust=trust, map_location=map_location)
    if isinstance(raw, nn.Module):  # only reachable with trust=True: a pickled whole model
        raw = dict(raw.state_dict())
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(raw).__name__}, not a dict; a checkpoint is a dict "
            f"(format {FORMAT!r}) or one of the research code's state-dict layouts"
        )
    return raw


def _parse(path: Path, raw: Mapping[str, Any], limits: Limits) -> Checkpoint:
    if "format" in raw:
        return _from_fa_checks(path, raw, limits)
    if "state_dict" in raw:
        return _from_seed_dict(path, raw, limits)
    if raw and all(isinstance(v, Tensor) for v in raw.values()):
        return _from_seed_state_dict(path, raw, limits)
    raise CheckpointError(
        f"{path}: not a checkpoint: missing key 'format' (a {FORMAT} file) or 'state_dict' "
        f"(the research code's layout); its keys are {_preview(list(raw))}"
    )


def _torch_load(path: Path, handle: Any, *, trust: bool, map_location: Any) -> Any:
    try:
        if trust:
            return torch.load(handle, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(handle, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # the scan passed it: torch's own reader refused it
        raise CheckpointError(
            f"{path}: torch's weights-only reader refused it ({_corruption(exc)}); "
            f"{TRUST_HINT}"
        ) from None
    except (MemoryError, OSError):
        raise
    except RuntimeError as exc:
        if _is_allocation_failure(exc):
            raise
        raise CheckpointError(f"{path}: cannot be read ({_corruption(exc)})") from None
    except Exception as exc:  # a trusted file's own objects may raise anything
        raise CheckpointError(f"{path}: cannot be read ({_corruption(exc)})") from None


def _corruption(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    lines = str(exc).strip().splitlines()
    detail = lines[0].split(". ")[0][:160] if lines else ""
    return f"the file is truncated or corrupt: {type(exc).__name__}: {detail}".rstrip(": ")


def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars (e.g. an accuracy saved as np.float64) rebuild from bytes: no code runs."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    core = getattr(np, "_core", None) or np.core
    dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [core.multiarray.scalar, np.dtype, *dtype_classes]


# -- the fa-checks/1 layout -----------------------------------------------------------------
def _from_fa_checks(path: Path, raw: Mapping[str, Any], limits: Limits) -> Checkpoint:
    fmt = raw["format"]
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("fa-checks/"):
            raise CheckpointError(
                f"{path}: format {fmt!r} was written by another fa-checks version; this one "
                f"reads {FORMAT!r}"
            )
        raise CheckpointError(f"{path}: unknown checkpoint format {_short(fmt)}; expected "
                              f"{FORMAT!r}")
    for key in _REQUIRED_KEYS:
        if key not in raw:
            raise CheckpointError(f"{path}: missing key {key!r}")
    arch = _architecture(path, raw["arch"])
    arch_kwargs = _dict_of(path, raw, "arch_kwargs")
    for key in ("input_shape", "num_classes"):
        if key not in arch_kwargs:
            raise CheckpointError(f"{path}: missing key 'arch_kwargs.{key}'")
    arch_kwargs = _checked_arch(path, arch, arch_kwargs, limits)
    method = raw.get("method")
    if method is not None and (not isinstance(method, str) or not method.strip()
                               or len(method) > 300):
        raise CheckpointError(
            f"{path}: 'method' must be a method name or None, got {_short(method)}")
    method_options = _dict_of(path, raw, "method_options", default={})
    method_options = check_method_options(
        str(method), method_options, limits, where=f"{path}: ", prefix="method_options.",
        error=CheckpointError)
    version = raw.get("version")
    if version is not None and not isinstance(version, (str, int, float)):
        raise CheckpointError(f"{path}: 'version' must be text, got {_short(version)}")
    training = _checked_training(path, {"seed": raw.get("seed"), "epochs": raw.get("epochs")},
                                 limits)
    return Checkpoint(
        path=path,
        arch=arch,
        arch_kwargs=arch_kwargs,
        model_state=_tensor_dict(path, raw, "model_state", limits),
        method=method,
        method_options=method_options,
        method_state=_tensor_dict(path, raw, "method_state", limits, default={}),
        data=_checked_data(path, raw.get("data")),
        seed=training.get("seed"),
        epochs=training.get("epochs"),
        optimizer=_checked_optimizer(path, _dict_of(path, raw, "optimizer", default=None),
                                     limits),
        test_acc=_test_acc(path, raw),
        history=_checked_history(path, raw.get("history"), limits),
        version=None if version is None else str(version)[:100],
    )


def _architecture(path: Path, arch: Any) -> str:
    from .models import MODELS

    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: 'arch' must be an architecture name, got {_short(arch)}")
    if arch not in MODELS:
        raise CheckpointError(
            f"{path}: unknown architecture {_short(arch)}; known architectures: "
            f"{', '.join(sorted(MODELS))}"
        )
    return arch


def _checked_arch(path: Path, arch: str, arch_kwargs: dict[str, Any],
                  limits: Limits) -> dict[str, Any]:
    from .models import model_keywords

    bad_keys = [k for k in arch_kwargs if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{path}: 'arch_kwargs' keys must be text, not {_preview(bad_keys)}")
    takes = model_keywords(arch)
    unknown = sorted(set(arch_kwargs) - {"input_shape", "num_classes", *takes})
    if unknown:
        raise CheckpointError(
            f"{path}: arch_kwargs {_preview(unknown)} do not build {arch!r}: it takes "
            f"{', '.join(takes)}")
    return check_arch_options(arch, arch_kwargs, limits, where=f"{path}: ",
                              prefix="arch_kwargs.", error=CheckpointError)


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
        return value is None or isinstance(value, bool) or _is_number(value) or (
            isinstance(value, str) and len(value) <= 100)

    for key, value in optimizer.items():
        short_list = isinstance(value, list) and len(value) <= 16 and all(map(plain, value))
        if not isinstance(key, str) or not (plain(value) or short_list):
            raise CheckpointError(
                f"{path}: optimizer[{_short(key)}] must be a plain setting (a number, short "
                f"text, true/false, none or a short list of them), got {_short(value)}")
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
    from .data import DataError, available_datasets, resolve_spec

    if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
        raise CheckpointError(f"{path}: 'data' must be a dataset spec dict or None, got "
                              f"{_short(data)}")
    params = dict(data)
    name = params.pop("name", None)
    if not isinstance(name, str) or not name or len(name) > 100:
        raise CheckpointError(f"{path}: 'data' must name its dataset as data.name (short "
                              f"text), got {_short(name)}")
    for key, value in params.items():
        if not (value is None or isinstance(value, bool) or _is_number(value)
                or (isinstance(value, str) and len(value) <= 100)):
            raise CheckpointError(f"{path}: data.{key_name(key)} must be a plain value, got "
                                  f"{_short(value)}")
    if name.lower() in available_datasets():
        try:
            resolve_spec(name, **params)
        except DataError as exc:
            raise CheckpointError(f"{path}: its data spec is refused: {one_line(exc)}") from None
    return dict(data)  # as written: resolving it again later gives the same dataset


def _checked_history(path: Path, history: Any, limits: Limits) -> list[dict[str, Any]] | None:
    """A list of per-epoch dicts of numbers, true/false or none, of bounded length."""
    if history is None:
        return None
    if not isinstance(history, list):
        raise CheckpointError(f"{path}: 'history' must be a list, got {type(history).__name__}")
    if len(history) > limits.max_history:
        raise CheckpointError(
            f"{path}: 'history' holds {len(history):,} entries, above the limit max_history="
            f"{limits.max_history:,}; if you mean it, raise it with "
            f"{LIMITS_VARIABLE}=max_history={len(history)}")
    for number, entry in enumerate(history):
        if not isinstance(entry, Mapping) or len(entry) > _MAX_HISTORY_KEYS:
            raise CheckpointError(
                f"{path}: history[{number}] must be a dict of at most {_MAX_HISTORY_KEYS} "
                f"figures, got {_short(entry)}")
        for key, value in entry.items():
            if not isinstance(key, str) or len(key) > 100 or not _figure(value):
                raise CheckpointError(
                    f"{path}: history[{number}][{_short(key)}] must be a number, true/false, "
                    f"none, short text or a flat list of numbers under a short name, got "
                    f"{_short(value)}")
    return [dict(entry) for entry in history]


def _figure(value: Any) -> bool:
    """A history value: a number, true/false, none, short text, or a flat list of numbers."""
    def scalar(item: Any) -> bool:
        return item is None or isinstance(item, (bool, float)) or (
            isinstance(item, int) and abs(item) < 2**63)

    if isinstance(value, list):
        return len(value) <= _MAX_LIST and all(scalar(item) for item in value)
    return scalar(value) or (isinstance(value, str) and len(value) <= 100)


def _test_acc(path: Path, raw: Mapping[str, Any]) -> float | None:
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
        raise CheckpointError(f"{path}: test_acc={_short(value)}: {exc}") from None


# -- the research code's layouts ------------------------------------------------------------
def _from_seed_dict(path: Path, raw: Mapping[str, Any], limits: Limits) -> Checkpoint:
    state = _tensor_dict(path, raw, "state_dict", limits)
    arch_kwargs, model_state = _seed_resmlp(path, state, "state_dict", limits)
    config = _seed_config(path, raw.get("config"))
    method, method_options, method_state = None, {}, {}
    feedback = raw.get("Bs")
    if feedback is not None:
        method, method_state = _seed_feedback(path, feedback, arch_kwargs, limits)
        penalty = (config or {}).get("lam")
        if method == "dfa" and _is_number(penalty) and penalty > 0:
            method_options = {"penalty": float(penalty)}
        method_options = check_method_options(method, method_options, limits,
                                              where=f"{path}: ", prefix="config.",
                                              error=CheckpointError)
    settings = {key: (config or {}).get(key) for key in ("seed", "epochs", "lr", "wd")}
    given = {key: value for key, value in settings.items() if value is not None}
    names = {"seed": "config.seed", "epochs": "config.epochs", "lr": "config.lr",
             "weight_decay": "config.wd"}
    if "wd" in given:
        given["weight_decay"] = given.pop("wd")
    training = check_training(**given, limits=limits, names=names, where=f"{path}: ",
                              error=CheckpointError)
    optimizer = {k: training[k] for k in ("lr", "weight_decay") if k in training} or None
    return Checkpoint(
        path=path,
        arch="resmlp",
        arch_kwargs=arch_kwargs,
        model_state=model_state,
        method=method,
        method_options=method_options,
        method_state=method_state,
        seed=training.get("seed"),
        epochs=training.get("epochs"),
        optimizer=optimizer,
        test_acc=_test_acc(path, raw),
        source_format=SEED_DICT_FORMAT,
        data_hint=_data_hint(arch_kwargs),
        source_config=config,
    )


def _seed_config(path: Path, config: Any) -> dict[str, Any] | None:
    """The research code's ``config`` (``vars(args)``): plain values and short lists of them."""
    if config is None:
        return None
    if not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)  # an argparse.Namespace, readable only from a trusted file
    if not isinstance(config, Mapping) or len(config) > 1000:
        raise CheckpointError(f"{path}: 'config' must be a dict of settings, got "
                              f"{_short(config)}")

    def plain(value: Any) -> bool:
        return value is None or isinstance(value, (bool, str, int, float))

    for key, value in config.items():
        ok = plain(value) or (isinstance(value, (list, tuple)) and len(value) <= 1000
                              and all(plain(v) for v in value))
        if not isinstance(key, str) or not ok:
            raise CheckpointError(f"{path}: config[{_short(key)}] must be a plain setting, got "
                                  f"{_short(value)}")
    return dict(config)


def _from_seed_state_dict(path: Path, raw: Mapping[str, Tensor], limits: Limits) -> Checkpoint:
    state = _tensor_dict(path, {"the state dict": raw}, "the state dict", limits)
    arch_kwargs, model_state = _seed_resmlp(path, state, "the state dict", limits)
    return Checkpoint(
        path=path,
        arch="resmlp",
        arch_kwargs=arch_kwargs,
        model_state=model_state,
        source_format=SEED_STATE_DICT_FORMAT,
        data_hint=_data_hint(arch_kwargs),
    )


_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")


def _block_count(path: Path, keys: list[str], limits: Limits) -> int:
    """The number of blocks the ``blocks.<i>.`` keys name: ids 0..n-1, every one, n bounded."""
    ids = set()
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match is None:
            continue
        digits = match.group(1)
        if len(digits) > 9 or int(digits) >= limits.max_blocks:
            raise CheckpointError(
                f"{path}: key {_short(key)} names block {digits[:24]}, beyond the limit "
                f"max_blocks={limits.max_blocks}; if you mean it, raise it with "
                f"{LIMITS_VARIABLE}=max_blocks={digits[:24]}")
        ids.add(int(digits))
    if ids != set(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - ids)
        raise CheckpointError(
            f"{path}: its blocks are not numbered 0..{max(ids)}: no keys for block(s) "
            f"{_preview(missing)}")
    return len(ids)


def _seed_resmlp(
    path: Path, state: dict[str, Tensor], what: str, limits: Limits
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The research code's ResMLP state (``embed.*``) renamed to ours, and its dimensions."""
    renamed = {
        ("embed_layer." + key[len("embed."):]) if key.startswith("embed.") else key: tensor
        for key, tensor in state.items()
    }
    for key in ("embed_layer.weight", "out_head.weight"):
        if key not in renamed:
            seed_key = key.replace("embed_layer.", "embed.")
            raise CheckpointError(
                f"{path}: {what} is not a ResMLP state dict: missing key {seed_key!r} "
                f"(its keys are {_preview(list(state))})"
            )
    embed, head = renamed["embed_layer.weight"], renamed["out_head.weight"]
    if embed.dim() != 2 or head.dim() != 2:
        raise CheckpointError(
            f"{path}: {what} is not a ResMLP state dict: 'embed.weight' {tuple(embed.shape)} "
            f"and 'out_head.weight' {tuple(head.shape)} must be matrices"
        )
    arch_kwargs = {
        "input_shape": [int(embed.shape[1])],
        "num_classes": int(head.shape[0]),
        "d_hidden": int(embed.shape[0]),
        "num_blocks": _block_count(path, list(renamed), limits),
    }
    return _checked_arch(path, "resmlp", arch_kwargs, limits), renamed


def _seed_feedback(
    path: Path, feedback: Any, arch_kwargs: Mapping[str, Any], limits: Limits
) -> tuple[str, dict[str, Tensor]]:
    """``Bs`` of shape (d, C) are DFA's feedback, (d, d) FA's."""
    d, classes = arch_kwargs["d_hidden"], arch_kwargs["num_classes"]
    blocks = arch_kwargs["num_blocks"]
    if not isinstance(feedback, (list, tuple)) or not all(
        isinstance(b, Tensor) for b in feedback
    ):
        raise CheckpointError(f"{path}: 'Bs' must be a list of feedback matrices")
    if len(feedback) != blocks:
        raise CheckpointError(
            f"{path}: 'Bs' holds {len(feedback)} feedback matrices for {blocks} blocks"
        )
    for i, b in enumerate(feedback):
        _check_tensor(path, f"Bs[{i}]", b)
    shapes = {tuple(b.shape) for b in feedback}
    if shapes <= {(d, d)}:
        method = "fa"
    elif shapes <= {(d, classes)}:
        method = "dfa"
    else:
        raise CheckpointError(
            f"{path}: 'Bs' shapes {sorted(shapes)} are neither DFA's (d_hidden, num_classes) = "
            f"{(d, classes)} nor FA's (d_hidden, d_hidden) = {(d, d)}"
        )
    return method, {f"feedback.{i}": b for i, b in enumerate(feedback)}


# -- the state against the architecture -----------------------------------------------------
def _check_state_fits(
    path: Path,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    state: Mapping[str, Tensor],
    model: nn.Module | None = None,
    *,
    limits: Limits | None = None,
) -> None:
    """Raise a CheckpointError naming every key and shape where ``state`` misfits ``arch``.

    Without ``model``, the shapes the keywords declare come from
    :func:`fa_checks.limits.state_shapes`: nothing is built, not even on the meta device, so a
    file declaring a model larger than the tensors it holds costs nothing to refuse.
    """
    _architecture(path, arch)
    if model is None:
        limits = limits if limits is not None else default_limits()
        checked = _checked_arch(path, arch, dict(arch_kwargs), limits)
        expected = state_shapes(arch, checked)
    else:
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and expected[k] != found[k]]
    if missing:
        problems.append(f"missing {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {_preview(unexpected)}")
    if wrong:
        shown = [f"{k}: file {found[k]}, architecture {expected[k]}" for k in wrong[:6]]
        more = f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""
        problems.append(f"shape mismatch {'; '.join(shown)}{more}")
    if problems:
        raise CheckpointError(
            f"{path}: the model state does not fit {arch} with {_short(dict(arch_kwargs))}: "
            + " | ".join(problems)
        )


# -- small validators -----------------------------------------------------------------------
def _tensor_dict(
    path: Path, raw: Mapping[str, Any], key: str, limits: Limits, default: Any = ...
) -> dict[str, Tensor]:
    value = raw.get(key, default)
    if value is ...:
        raise CheckpointError(f"{path}: missing key {key!r}")
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {key!r} must be a dict of tensors")
    if len(value) > limits.max_tensors:
        raise CheckpointError(
            f"{path}: {key!r} holds {len(value):,} tensors, above the limit max_tensors="
            f"{limits.max_tensors:,}; if you mean it, raise it with "
            f"{LIMITS_VARIABLE}=max_tensors={len(value)}")
    bad = [k for k, v in value.items() if not isinstance(k, str) or len(k) > 1000
           or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {key!r} must map names to tensors; not {_preview(bad)}")
    for name, tensor in value.items():
        _check_tensor(path, f"{key}[{name!r}]", tensor)
    return dict(value)


#: the dtypes a state's tensors may have: real floating point, integers and bool
_TENSOR_DTYPES = frozenset(getattr(torch, name) for name in ALLOWED_DTYPES)


def _check_tensor(path: Path, label: str, tensor: Tensor) -> None:
    """A dense tensor of a real dtype whose storage holds every element its shape needs."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_nested \
            or tensor.dtype not in _TENSOR_DTYPES:
        raise CheckpointError(
            f"{path}: {_short(label)} is a {tensor.layout} tensor of {tensor.dtype}; a state "
            f"holds dense tensors of {', '.join(sorted(ALLOWED_DTYPES))}")
    if tensor.is_meta:
        return  # no storage to compare with (map_location="meta")
    available = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
    try:
        check_view(available, tensor.storage_offset(), tuple(tensor.shape),
                   tuple(tensor.stride()), what=_short(label))
    except FileRefused as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _dict_of(path: Path, raw: Mapping[str, Any], key: str, default: Any = ...) -> Any:
    value = raw.get(key, default)
    if value is ...:
        raise CheckpointError(f"{path}: missing key {key!r}")
    if value is None and default is None:
        return None
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {key!r} must be a dict, got {type(value).__name__}")
    return dict(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _data_hint(arch_kwargs: Mapping[str, Any]) -> str | None:
    features = math.prod(int(s) for s in arch_kwargs["input_shape"])
    hint = _DATA_HINTS.get(features)
    if hint == "cifar10" and arch_kwargs["num_classes"] == 100:
        return "cifar100"
    return hint


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a file's values may be huge)."""
    text = " ".join(repr(value).split())  # a tensor's repr spans lines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _preview(keys: list[Any], limit: int = 8) -> str:
    shown = ", ".join(_short(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


__all__ = [
    "FORMAT",
    "SEED_DICT_FORMAT",
    "SEED_STATE_DICT_FORMAT",
    "TRUST_HINT",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
]
