"""The one family of errors a user can cause, and how faults of the machine join it.

Every error that bad input can cause (an option, a name, a file, a dataset, a model) is a
:class:`UserError`: its message is one sentence that names the option or file and says what to
do.  Each face turns it into its answer in exactly one place: the command line exits 2, pytest
stops with a usage error (exit 4) while it configures, and an item whose subject cannot be
evaluated ERRORs with the sentence.  Nothing here imports torch.
"""

from __future__ import annotations

import errno


class UserError(ValueError):
    """Bad input: the message names the option or file and the fix, in one sentence."""


class ConfigError(UserError):
    """A request that cannot be run: an unknown name, a malformed or out-of-range value."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (newlines and runs of spaces folded)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def as_user_error(exc: BaseException) -> UserError | None:
    """``exc`` as a :class:`UserError`, or None when it is a fault of the tool itself.

    Faults of the machine or the input are the user's to fix, not the method's: a file that
    cannot be read or written (``OSError``: a full disk, a read-only folder, permissions) and
    memory that runs out (``MemoryError``, torch's out-of-memory error) become a sentence.
    """
    if isinstance(exc, UserError):
        return exc
    if isinstance(exc, OSError):
        return UserError(_os_sentence(exc))
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        detail = one_line(exc).split(". ")[0][:200]
        return UserError(
            f"out of memory ({detail}); use a smaller model, eval size or batch size, "
            "or another device"
        )
    return None


def _os_sentence(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or one_line(exc)
    hint = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "the file system is read-only: write elsewhere",
        errno.EACCES: "check the permissions or write elsewhere",
        errno.EPERM: "check the permissions or write elsewhere",
    }.get(exc.errno or -1, "check the path")
    return f"{where}: {reason}; {hint}" if where else f"{reason}; {hint}"


__all__ = ["ConfigError", "UserError", "as_user_error", "one_line"]
