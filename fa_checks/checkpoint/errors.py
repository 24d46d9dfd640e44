"""How a checkpoint's problems are said: a :class:`CheckpointError`, one sentence naming the file.

Values read from a file are cut short before they go into a sentence (a file's value may be huge
or span lines), and a failed read or allocation becomes a refusal of the file rather than a
traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError, as_user_error, one_line

TRUST_HINT = (
    "pass trust=True (library), --fa-trust (pytest) or --trust (fa-checks) "
    "only for a file you made yourself"
)


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message names the file and the problem."""


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a file's values may be huge)."""
    text = " ".join(repr(value).split())  # a tensor's repr spans lines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def preview(keys: list[Any], limit: int = 8) -> str:
    """The first ``limit`` of ``keys``, and how many more there are."""
    shown = ", ".join(short(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def machine_fault(path: Path, exc: BaseException, doing: str) -> BaseException:
    """A CheckpointError for a failed read or allocation; ``exc`` itself for anything else."""
    if isinstance(exc, RuntimeError) and is_allocation_failure(exc):
        exc = MemoryError(one_line(exc))
    user = as_user_error(exc)
    if user is None:
        return exc
    message = str(user)
    return CheckpointError(message if message.startswith(str(path)) else
                           f"{path}: {doing} failed: {message}")


def is_allocation_failure(exc: RuntimeError) -> bool:
    text = str(exc).lower()
    return "allocate" in text or "out of memory" in text or "not enough memory" in text
