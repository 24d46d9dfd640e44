"""Writing a ``fa-checks/1`` checkpoint: only the plain types ``weights_only`` loading accepts,
nothing that loading would refuse, and atomically (complete or not at all)."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..files import write_atomic
from ..limits import default_limits
from .errors import CheckpointError
from .fields import checked_history
from .rebuild import FORMAT


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
    from .. import __version__
    from ..methods import method_reference

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
    checked_history(path, plain["history"], default_limits())
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
