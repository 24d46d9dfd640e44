"""Reading a checkpoint: the bytes checked (:mod:`.torchfile`), ``torch.load`` with
``weights_only`` unless the file is trusted, the layout recognised, every field checked, and
the state compared with the architecture it names.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError, one_line
from ..limits import Limits, default_limits
from .architecture import check_state_fits
from .errors import TRUST_HINT, CheckpointError, is_allocation_failure, machine_fault, preview
from .fields import from_fa_checks
from .rebuild import FORMAT, Checkpoint
from .seed_formats import from_seed_dict, from_seed_state_dict
from .snapshot import Snapshot
from .torchfile import FileRefused, read_torch_file


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    map_location: Any = "cpu",
    limits: Limits | None = None,
    import_methods: Collection[str] = (),
    import_archs: Collection[str] = (),
    snapshot: Snapshot | None = None,
) -> Checkpoint:
    """Read a checkpoint (``fa-checks/1`` or the research code's formats) and validate it.

    Untrusted (the default), the file is data: it is checked as :mod:`.torchfile` says
    (a regular file, bounded, archive CRCs, a pickle that names no code, tensors that fit their
    storage) before ``torch.load(weights_only=True)`` reads it, and every field that sizes work
    (architecture keywords against the tensors actually present, seed, epochs, optimizer
    settings, data spec, history) is checked against ``limits`` (default
    :func:`fa_checks.limits.default_limits`) before any weight is allocated: the model the file
    declares is built on the meta device only (:mod:`.architecture`).  A method name it holds
    resolves later only to a built-in or an entry point (:meth:`Checkpoint.build_method`).

    ``trust=True`` loads with ``weights_only=False`` and lets the method name import its
    module: a trusted file can run any code.  ``import_methods``: method names the caller was
    given by the user (``--fa-method mypkg.rules:Rule`` for a fresh run whose file it then
    reads back); such a name may import its module even from an untrusted file, since the user
    named it, not the file.  Every problem is a :class:`CheckpointError` naming
    the file, raised here, including a failed allocation or read (``OSError``).
    ``snapshot``: the file's bytes already read once (:func:`.snapshot.take_snapshot`), so the
    bytes a cache key hashed are the bytes loaded; it is consumed (closed).
    """
    path = Path(path)
    limits = limits if limits is not None else default_limits()
    try:
        raw = _read(path, trust=trust, map_location=map_location, limits=limits,
                    snapshot=snapshot)
        checkpoint = _parse(path, raw, limits, None if trust else frozenset(import_archs))
        checkpoint.trusted, checkpoint.limits = bool(trust), limits
        checkpoint.importable_methods = frozenset(import_methods)
        checkpoint.importable_archs = frozenset(import_archs)
        check_state_fits(path, checkpoint.arch, checkpoint.arch_kwargs, checkpoint.model_state,
                         limits=limits, allow_import=checkpoint.may_import_arch)
        return checkpoint
    except CheckpointError as exc:
        if "\n" in str(exc):  # a value from the file slipped into the sentence
            raise CheckpointError(one_line(exc)) from None
        raise
    except UserError:
        raise
    except Exception as exc:
        raise machine_fault(path, exc, "loading it") from None


def _read(path: Path, *, trust: bool, map_location: Any, limits: Limits,
          snapshot: Snapshot | None = None) -> Any:
    opened = None if snapshot is None else (snapshot.handle, snapshot.size)
    try:
        checked = read_torch_file(path, trust=trust, limits=limits, opened=opened)
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


def _parse(path: Path, raw: Mapping[str, Any], limits: Limits,
           import_archs: Collection[str] | None) -> Checkpoint:
    if "format" in raw:
        return from_fa_checks(path, raw, limits, import_archs=import_archs)
    if "state_dict" in raw:
        return from_seed_dict(path, raw, limits)
    if raw and all(isinstance(v, Tensor) for v in raw.values()):
        return from_seed_state_dict(path, raw, limits)
    raise CheckpointError(
        f"{path}: not a checkpoint: missing key 'format' (a {FORMAT} file) or 'state_dict' "
        f"(the research code's layout); its keys are {preview(list(raw))}"
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
        if is_allocation_failure(exc):
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
