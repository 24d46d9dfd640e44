"""Names of the user's own code: an entry point of a group, or ``module:attribute``.

One resolver serves training rules (group ``fa_checks.methods``) and model factories (group
``fa_checks.models``), so both follow the same trust rule: a name the user typed imports its
module (as ``pytest -p`` does); a name read from a file resolves only to an installed entry
point unless the user passed the trust flag, and is otherwise refused without importing
anything.  The current directory is searched last for a module the user typed, as
``python -m`` would find it, so ``fa-checks train --method myrule:Rule`` works from the folder
holding ``myrule.py``.  Nothing here imports torch.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import UserError

#: how the user says that names read from a file may import code (for the refusal's message)
TRUST_FLAGS = "--trust (fa-checks), --fa-trust (pytest) or trust=True (library)"

_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def entry_point(group: str, name: str, error: Callable[[str], UserError]) -> Any | None:
    """The object the entry point ``name`` of ``group`` names, or None if none is installed."""
    for ep in metadata.entry_points(group=group):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:  # an installed plugin that fails to import
                raise error(
                    f"the entry point {name!r} ({ep.value}) of {group!r} cannot be "
                    f"loaded: {type(exc).__name__}: {first_line(exc)}"
                ) from None
    return None


def entry_point_names(group: str) -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=group))


def is_reference(name: str) -> bool:
    """Whether ``name`` is spelt ``module:attribute`` (both dotted Python names)."""
    module_name, colon, attr = name.partition(":")
    return bool(colon) and bool(_DOTTED_NAME.fullmatch(module_name)) and bool(
        _DOTTED_NAME.fullmatch(attr))


def import_reference(
    name: str,
    *,
    what: str,
    example: str,
    spelled: str,
    group: str,
    allow_import: bool,
    error: Callable[[str], UserError],
) -> Any:
    """The object ``module:attribute`` names.  ``what`` words the messages ("method",
    "model factory"), ``spelled`` and ``example`` show the spelling ("module:Class"),
    ``group`` is the entry-point group a file's name may use instead."""
    module_name, _, attr = name.partition(":")
    if not is_reference(name):
        raise error(f"{what} {name!r} is not {spelled} (for example {example}): both parts "
                    "must be dotted Python names")
    if not allow_import:
        raise error(
            f"{what} {name!r} would import module {module_name!r}, which an untrusted file may "
            f"not do (nothing was imported); if you made the file, pass {TRUST_FLAGS}"
        )
    module = import_user_module(module_name, what=what, error=error)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise error(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


def import_user_module(module_name: str, *, what: str,
                       error: Callable[[str], UserError]) -> Any:
    """Import the user's module; the current directory is searched after ``sys.path``."""
    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            here = os.getcwd()
            top = module_name.partition(".")[0]
            if exc.name != top or here in sys.path or "" in sys.path:
                raise
            sys.path.append(here)  # last: never shadows an installed module
            return importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"cannot import {what} module {module_name!r}: {exc}") from None
    except UserError:
        raise
    except Exception as exc:  # the module's own top-level code failed
        raise error(
            f"importing {what} module {module_name!r} failed: {type(exc).__name__}: "
            f"{first_line(exc)}"
        ) from None


def is_library_code(obj: Any) -> bool:
    """Whether ``obj`` (a class or function) is fa-checks' own, versioned with the library."""
    return str(getattr(obj, "__module__", "")).partition(".")[0] == "fa_checks"


def defined_at(obj: Any) -> str:
    """``"file.py, line N"`` where ``obj`` is defined, or ``""`` when that cannot be told."""
    try:
        source = inspect.getsourcefile(obj)
        _, line = inspect.getsourcelines(obj)
    except (TypeError, OSError):
        return ""
    return f"{Path(source).name}, line {line}" if source else ""


def source_digest(obj: Any) -> str | None:
    """A digest of the file defining ``obj`` (a user's rule or model factory), so an edited
    one is retrained, not reused from the cache; None for the library's own code (versioned
    with it) and for code defined where no file exists."""
    if is_library_code(obj):
        return None
    from .cache.store import file_digest

    try:
        source = inspect.getsourcefile(obj)
    except TypeError:
        return None
    return None if source is None else file_digest(Path(source))


__all__ = ["TRUST_FLAGS", "defined_at", "entry_point", "entry_point_names", "first_line",
           "import_reference", "import_user_module", "is_library_code", "is_reference",
           "source_digest"]
