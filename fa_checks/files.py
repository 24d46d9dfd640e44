"""Atomic file writes: a reader never sees a half-written file, and a failure leaves none.

Every file the library writes (checkpoints, cached artifacts, generated data, JSON reports)
goes through :func:`write_atomic`.  Imports nothing heavy, so the pytest plugin may use it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError, UserError, one_line


def temporary_beside(path: Path, suffix: str = "") -> Path:
    """A unique temporary name in ``path``'s folder (so the final rename is atomic).

    Not ``tempfile.mkstemp``: its files are private (0600) and the renamed file keeps that mode.
    ``suffix`` keeps an extension for writers that look at it.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


def write_atomic(path: str | Path, write: Callable[[Path], None], *, suffix: str = "") -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it into place.

    On any failure (an interrupt included) the temporary file is removed and ``path`` is left
    as it was.  The folder is created when missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(target, suffix)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN -> "NaN", inf -> "Infinity", -inf -> "-Infinity"; lists/dicts recurse.

    Strict JSON has no non-finite numbers, and an exploded model has plenty of them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode_non_finite(value: Any) -> Any:
    """The inverse of :func:`json_safe`: "NaN", "Infinity", "-Infinity" back to floats."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: decode_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_non_finite(v) for v in value]
    return value


#: deeper than any JSON fa-checks writes (a report nests about six levels)
MAX_JSON_DEPTH = 32


def read_json(data: bytes | str) -> Any:
    """JSON read back from a file anyone may have edited (a report, a cache entry).

    ValueError, with the reason, for text that is not JSON, that nests deeper than
    :data:`MAX_JSON_DEPTH` (the parser and every walk over the value would run out of stack),
    or that holds a number of thousands of digits.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer too long to convert
        if "integer string conversion" in str(exc):
            raise ValueError("it holds a number of thousands of digits") from None
        raise ValueError(one_line(exc)) from None
    level = [value]
    for _ in range(MAX_JSON_DEPTH):
        level = [child for item in level if isinstance(item, (dict, list))
                 for child in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return value
    raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels")


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """``payload`` as strict JSON (no bare NaN), written atomically."""
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_atomic(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` to ``target`` atomically."""
    return write_atomic(target, lambda tmp: shutil.copyfile(source, tmp))


def check_writable(path: str | Path, *, what: str) -> Path:
    """Refuse, before any work, an output path that cannot be written (``what`` names the flag).

    The folder is created if it is missing; a folder at ``path`` itself is refused.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file name inside it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = temporary_beside(target)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what} {path}: cannot write there ({reason}); choose a writable "
                          "path") from None
    return target


def check_writable_folder(path: str | Path, *, what: str) -> Path:
    """Like :func:`check_writable`, for an output folder (created if it is missing)."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {path}: is a file; give a folder")
    check_writable(folder / "probe", what=what)
    return folder


def regular_file(path: str | Path, *, what: str) -> Path:
    """``path`` if it is a regular file, else a UserError naming it (``what``: "checkpoint").

    Only regular files are read: a FIFO would hang the reader and a device never ends.  A
    symbolic link to a regular file is fine.
    """
    target = Path(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        raise UserError(f"{target}: no such {what} file") from None
    except OSError as exc:
        raise UserError(f"{target}: cannot read this {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{target}: is a folder, not a {what} file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{target}: is not a regular file (a pipe, socket or device); "
                        f"give a {what} file")
    return target


def read_bounded(path: str | Path, *, limit: int, what: str, follow: bool = True) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, read once.

    A FIFO, device or socket is refused without waiting (opened non-blocking, checked with
    ``fstat`` on the open descriptor, so a file swapped after a check is still checked), and so
    is a file above ``limit`` (a sparse file of gigabytes costs nothing to refuse); at most
    ``limit + 1`` bytes are ever read, so a file that grows while it is read is refused too.
    ``follow=False``: a symbolic link is refused (``O_NOFOLLOW``), for files inside the cache.
    A refusal is a UserError naming the file and ``what`` it was meant to be.
    """
    target = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        descriptor = os.open(target, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not follow and os.path.islink(target):
            raise UserError(f"{target}: is a symbolic link, not a {what}; fa-checks does not "
                            "follow links inside its cache (remove it)") from None
        raise UserError(f"{target}: cannot read this {what} ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(descriptor)
        if stat.S_ISDIR(mode.st_mode):
            raise UserError(f"{target}: is a folder, not a {what}")
        if not stat.S_ISREG(mode.st_mode):
            raise UserError(f"{target}: is not a regular file (a pipe, socket or device); "
                            f"it cannot be a {what}")
        if mode.st_size > limit:
            raise UserError(f"{target}: is {mode.st_size:,} bytes, more than a {what} can be "
                            f"({limit:,})")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(descriptor, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UserError(f"{target}: grew past {limit:,} bytes while it was read; it "
                            f"cannot be a {what}")
        return b"".join(chunks)
    finally:
        os.close(descriptor)


#: the longest name a subject gives a file (plus "-credit.png" and a counter: far below 255)
MAX_NAME = 80


def short_name(name: str, identity: str, limit: int = MAX_NAME) -> str:
    """``name`` (made of ``identity``: a subject id, a deep path) when it fits ``limit``
    characters, else its end and a digest of the whole ``identity``: unique and short."""
    if len(name) <= limit:
        return name
    import hashlib

    digest = hashlib.sha256(identity.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{name[-(limit - 13):].lstrip('-.')}-{digest}"
