"""The one family of errors a user can cause, and how faults of the machine join it.

Every error that bad input can cause (an option, a name, a file, a dataset, a model) is a
:class:`UserError`: its message is one sentence that names the option or file and says what to
do.  Each face turns it into its answer in exactly one place: the command line exits 2, pytest
stops with a usage error (exit 4) while it configures, and an item whose subject cannot be
evaluated ERRORs with the sentence.  Anything else is a fault of fa-checks (exit 3 in both
faces); :func:`classify` tells the two apart, once, for every face and the Ray driver.  A subject
that cannot be evaluated is a :class:`fa_checks.evaluation.Failure` value carrying the same
distinction.  Nothing here imports torch.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from types import TracebackType

#: where progress and notes go: one line at a time (a face's stderr, a logger, a terminal)
Log = Callable[[str], None]


class UserError(ValueError):
    """Bad input: the message names the option or file and the fix, in one sentence."""


class ConfigError(UserError):
    """A request that cannot be run: an unknown name, a malformed or out-of-range value."""


class UsageError(ConfigError):
    """A command line that cannot be run (a bad flag, a missing argument): one line."""


class UserCodeError(UserError):
    """An exception raised in the user's own code (a rule given as ``module:Class`` or by entry
    point, a user's feedback hook): the sentence names the module, line and function."""


#: top-level packages whose frames are not the user's code: fa-checks, its plugin, and the
#: libraries its work runs through (a user's rule is reached through torch's autograd, pytest
#: and Ray; the standard library is added from ``sys.stdlib_module_names``)
_NOT_USER_CODE = frozenset({
    "fa_checks", "pytest_fa_checks", "torch", "numpy", "ray", "mnist1d", "sklearn",
    "matplotlib", "scipy", "pytest", "_pytest", "pluggy", "xdist", "execnet", "filelock",
    "hypothesis",
})


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (newlines and runs of spaces folded)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def as_user_error(exc: BaseException) -> UserError | None:
    """``exc`` as a :class:`UserError`, or None when it is a fault of the tool itself.

    Faults of the machine or the input are the user's to fix, not the method's: a file that
    cannot be read or written (``OSError``: a full disk, a read-only folder, permissions) and
    memory that runs out (``MemoryError``, torch's out-of-memory error) become a sentence, and
    so does an exception raised in the user's own code (a rule's ``step``): the user fixes it
    there, and it is no more a fault of fa-checks than a bad file is.
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
    where = user_code_frame(exc.__traceback__)
    if where is not None:
        error = UserCodeError(f"{type(exc).__name__} raised in your code ({where}): "
                              f"{one_line(exc)}; fix it there")
        error.__cause__ = exc
        return error
    return None


def classify(exc: BaseException) -> tuple[str, bool]:
    """``(sentence, ours)``: the one sentence a face shows for ``exc``, and whether it is a
    fault of fa-checks (``ours``: then the sentence is ``Type: message`` and the face adds
    "internal error" and the traceback) rather than the user's input, usage or code."""
    error = as_user_error(exc)
    if error is not None:
        return one_line(error), False
    return f"{type(exc).__name__}: {one_line(exc)}", True


def user_sentence(exc: BaseException) -> str:
    """The one sentence of an error the user can fix; ``exc`` raised again when it is a fault
    of fa-checks (call it in an ``except`` clause: the fault keeps its traceback)."""
    error = as_user_error(exc)
    if error is None:
        raise exc
    return one_line(error)


def user_code_frame(trace: TracebackType | None) -> str | None:
    """Where the innermost frame of the user's own code in ``trace`` stands (``"module, line
    N, in function"``), or None when the exception never passed through it: then it is a
    fault of fa-checks.  Frames are told apart by module, so a rule works the same from a
    file beside the tests, an installed package or a Ray worker's copy."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    where = None
    while trace is not None:
        frame = trace.tb_frame
        module = str(frame.f_globals.get("__name__", ""))
        top = module.partition(".")[0]
        if top and top not in _NOT_USER_CODE and top not in stdlib:
            where = f"{module}, line {trace.tb_lineno}, in {frame.f_code.co_name}"
        trace = trace.tb_next
    return where


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


__all__ = ["ConfigError", "Log", "UsageError", "UserCodeError", "UserError", "as_user_error",
           "classify", "one_line", "user_code_frame", "user_sentence"]
