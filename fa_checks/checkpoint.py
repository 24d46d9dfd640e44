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
needs more than plain data is refused, naming the file and the trust flag.  The research code's
own files load too: ``{"state_dict", "Bs", "config", "test_acc"}`` and a bare ResMLP state_dict,
with the dimensions read off the tensor shapes.
"""

from __future__ import annotations

import math
import numbers
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import UserError
from .files import write_atomic

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

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arch_kwargs["input_shape"])

    def build_model(self, device: torch.device | str | None = None) -> nn.Module:
        """The model with its saved weights (loaded strictly), in eval mode, on ``device``."""
        from .models import ModelError, build_model

        try:
            model = build_model(self.arch, **self.arch_kwargs)
        except (ModelError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: cannot build {self.arch!r}: {exc}") from None
        _check_state_fits(self.path, self.arch, self.arch_kwargs, self.model_state, model)
        try:
            model.load_state_dict(self.model_state, strict=True)
        except RuntimeError as exc:  # e.g. a dtype that cannot be copied
            raise CheckpointError(f"{self.path}: the model state does not load: {exc}") from None
        if device is not None:
            model.to(device)
        return model.eval()

    def build_method(self, model: nn.Module) -> Any:
        """The training rule set up on ``model`` with its saved state, or None if none was saved.

        Feedback is first drawn from ``torch.Generator().manual_seed(seed or 0)`` by ``setup``,
        then replaced by the saved tensors, so the result does not depend on that draw.
        """
        if self.method is None:
            return None
        from .methods import MethodError, get_method

        try:
            method = get_method(self.method, **self.method_options)
            method.setup(model, self.num_classes, torch.Generator().manual_seed(self.seed or 0))
        except MethodError as exc:
            raise CheckpointError(
                f"{self.path}: cannot rebuild its method {self.method!r}: {exc}"
            ) from None
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        state = {k: v.to(device) for k, v in self.method_state.items()}
        try:
            method.load_state_dict(state)
        except (MethodError, KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: the saved state of method {self.method!r} does not load: {exc}"
            ) from None
        return method


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
) -> Checkpoint:
    """Read a checkpoint (``fa-checks/1`` or the research code's formats) and validate it.

    The file is read with ``torch.load(weights_only=True)``.  One that needs arbitrary
    unpickling (it could run code while loading) is refused unless ``trust=True``.  Every problem
    (missing, truncated or corrupt file, wrong layout, missing key, unknown format or
    architecture, tensors that do not fit the architecture) is a :class:`CheckpointError` naming
    the file, raised here rather than later when the model is built.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    raw = _torch_load(path, trust=trust, map_location=map_location)
    if isinstance(raw, nn.Module):  # only reachable with trust=True: a pickled whole model
        raw = dict(raw.state_dict())
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{path}: holds a {type(raw).__name__}, not a dict; a checkpoint is a dict "
            f"(format {FORMAT!r}) or one of the research code's state-dict layouts"
        )
    if "format" in raw:
        checkpoint = _from_fa_checks(path, raw)
    elif "state_dict" in raw:
        checkpoint = _from_seed_dict(path, raw)
    elif raw and all(isinstance(v, Tensor) for v in raw.values()):
        checkpoint = _from_seed_state_dict(path, raw)
    else:
        raise CheckpointError(
            f"{path}: not a checkpoint: missing key 'format' (a {FORMAT} file) or 'state_dict' "
            f"(the research code's layout); its keys are {_preview(list(raw))}"
        )
    _check_state_fits(path, checkpoint.arch, checkpoint.arch_kwargs, checkpoint.model_state)
    return checkpoint


def _torch_load(path: Path, *, trust: bool, map_location: Any) -> Any:
    if trust:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read ({_corruption(exc)})") from None
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        needed = _unsafe_globals(path, exc)
        if needed:
            raise CheckpointError(
                f"{path}: loading it would execute code from the file (it needs "
                f"{', '.join(needed)}), so it was not loaded; {TRUST_HINT}"
            ) from None
        raise CheckpointError(f"{path}: is corrupt or not a torch checkpoint") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read ({_corruption(exc)})") from None


def _unsafe_globals(path: Path, exc: Exception) -> list[str]:
    """The Python objects a refused pickle asks for; empty when the file is simply corrupt."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # the legacy (non-zip) format: read the name off torch's message
        return re.findall(r"GLOBAL ([\w.]+)", str(exc))


def _corruption(exc: Exception) -> str:
    if isinstance(exc, EOFError):
        return "the file is empty or truncated"
    if isinstance(exc, PermissionError):
        return "permission denied"
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


def _from_fa_checks(path: Path, raw: Mapping[str, Any]) -> Checkpoint:
    fmt = raw["format"]
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("fa-checks/"):
            raise CheckpointError(
                f"{path}: format {fmt!r} was written by another fa-checks version; this one "
                f"reads {FORMAT!r}"
            )
        raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r}; expected {FORMAT!r}")
    for key in _REQUIRED_KEYS:
        if key not in raw:
            raise CheckpointError(f"{path}: missing key {key!r}")
    arch = raw["arch"]
    if not isinstance(arch, str):
        raise CheckpointError(f"{path}: 'arch' must be an architecture name, got {arch!r}")
    arch_kwargs = _dict_of(path, raw, "arch_kwargs")
    for key in ("input_shape", "num_classes"):
        if key not in arch_kwargs:
            raise CheckpointError(f"{path}: missing key 'arch_kwargs.{key}'")
    method = raw.get("method")
    if method is not None and not isinstance(method, str):
        raise CheckpointError(f"{path}: 'method' must be a method name or None, got {method!r}")
    data = raw.get("data")
    if data is not None and not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: 'data' must be a dataset spec dict or None")
    history = raw.get("history")
    if history is not None and not isinstance(history, list):
        raise CheckpointError(f"{path}: 'history' must be a list, got {type(history).__name__}")
    version = raw.get("version")
    return Checkpoint(
        path=path,
        arch=arch,
        arch_kwargs=arch_kwargs,
        model_state=_tensor_dict(path, raw, "model_state"),
        method=method,
        method_options=_dict_of(path, raw, "method_options", default={}),
        method_state=_tensor_dict(path, raw, "method_state", default={}),
        data=None if data is None else dict(data),
        seed=_optional_int(path, raw, "seed"),
        epochs=_optional_int(path, raw, "epochs"),
        optimizer=_dict_of(path, raw, "optimizer", default=None),
        test_acc=_optional_float(path, raw, "test_acc"),
        history=history,
        version=None if version is None else str(version),
    )


def _from_seed_dict(path: Path, raw: Mapping[str, Any]) -> Checkpoint:
    state = _tensor_dict(path, raw, "state_dict")
    arch_kwargs, model_state = _seed_resmlp(path, state, "state_dict")
    config = raw.get("config")
    if config is not None and not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)  # an argparse.Namespace, readable only from a trusted file
    config = dict(config) if isinstance(config, Mapping) else None
    method, method_options, method_state = None, {}, {}
    feedback = raw.get("Bs")
    if feedback is not None:
        method, method_state = _seed_feedback(path, feedback, arch_kwargs)
        penalty = (config or {}).get("lam")
        if method == "dfa" and _is_number(penalty) and penalty > 0:
            method_options = {"penalty": float(penalty)}
    optimizer = None
    if config is not None:
        settings = {"lr": config.get("lr"), "weight_decay": config.get("wd")}
        optimizer = {k: float(v) for k, v in settings.items() if _is_number(v)} or None
    return Checkpoint(
        path=path,
        arch="resmlp",
        arch_kwargs=arch_kwargs,
        model_state=model_state,
        method=method,
        method_options=method_options,
        method_state=method_state,
        seed=_config_int(config, "seed"),
        epochs=_config_int(config, "epochs"),
        optimizer=optimizer,
        test_acc=_optional_float(path, raw, "test_acc"),
        source_format=SEED_DICT_FORMAT,
        data_hint=_data_hint(arch_kwargs),
        source_config=config,
    )


def _from_seed_state_dict(path: Path, raw: Mapping[str, Tensor]) -> Checkpoint:
    arch_kwargs, model_state = _seed_resmlp(path, dict(raw), "the state dict")
    return Checkpoint(
        path=path,
        arch="resmlp",
        arch_kwargs=arch_kwargs,
        model_state=model_state,
        source_format=SEED_STATE_DICT_FORMAT,
        data_hint=_data_hint(arch_kwargs),
    )


def _seed_resmlp(
    path: Path, state: dict[str, Tensor], what: str
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
    block_ids = {int(m.group(1)) for k in renamed if (m := re.match(r"blocks\.(\d+)\.", k))}
    arch_kwargs = {
        "input_shape": [int(embed.shape[1])],
        "num_classes": int(head.shape[0]),
        "d_hidden": int(embed.shape[0]),
        "num_blocks": max(block_ids) + 1 if block_ids else 0,
    }
    return arch_kwargs, renamed


def _seed_feedback(
    path: Path, feedback: Any, arch_kwargs: Mapping[str, Any]
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


def _check_state_fits(
    path: Path,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    state: Mapping[str, Tensor],
    model: nn.Module | None = None,
) -> None:
    """Raise a CheckpointError naming every key and shape where ``state`` misfits ``arch``."""
    from .models import MODELS, ModelError, build_model

    if arch not in MODELS:
        raise CheckpointError(
            f"{path}: unknown architecture {arch!r}; known architectures: "
            f"{', '.join(sorted(MODELS))}"
        )
    if model is None:
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                model = build_model(arch, **arch_kwargs)
        except (ModelError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path}: arch_kwargs {dict(arch_kwargs)} do not build {arch!r}: {exc}"
            ) from None
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
            f"{path}: the model state does not fit {arch} with {dict(arch_kwargs)}: "
            + " | ".join(problems)
        )


# -- small validators -----------------------------------------------------------------------
def _tensor_dict(
    path: Path, raw: Mapping[str, Any], key: str, default: Any = ...
) -> dict[str, Tensor]:
    value = raw.get(key, default)
    if value is ...:
        raise CheckpointError(f"{path}: missing key {key!r}")
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {key!r} must be a dict of tensors")
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {key!r} must map names to tensors; not {_preview(bad)}")
    return dict(value)


def _dict_of(path: Path, raw: Mapping[str, Any], key: str, default: Any = ...) -> Any:
    value = raw.get(key, default)
    if value is ...:
        raise CheckpointError(f"{path}: missing key {key!r}")
    if value is None and default is None:
        return None
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{path}: {key!r} must be a dict, got {type(value).__name__}")
    return dict(value)


def _optional_int(path: Path, raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CheckpointError(f"{path}: {key!r} must be an integer or None, got {value!r}")
    return int(value)


def _optional_float(path: Path, raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not _is_number(value):
        raise CheckpointError(f"{path}: {key!r} must be a number or None, got {value!r}")
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _config_int(config: Mapping[str, Any] | None, key: str) -> int | None:
    value = (config or {}).get(key)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return None


def _data_hint(arch_kwargs: Mapping[str, Any]) -> str | None:
    features = math.prod(int(s) for s in arch_kwargs["input_shape"])
    hint = _DATA_HINTS.get(features)
    if hint == "cifar10" and arch_kwargs["num_classes"] == 100:
        return "cifar100"
    return hint


def _preview(keys: list[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
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
