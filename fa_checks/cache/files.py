"""The files the artifact cache keeps beside each artifact, and how it tidies them.

* ``<artifact>.sha256``: the artifact's digest, JSON ``{"sha256": hex, "bytes": n}``, written
  before the artifact is renamed into place; an artifact is served only when its bytes match.
* ``.<artifact>.<host>.<pid>.<random>.tmp<suffix>``: a writer's temporary file.  A writer that
  was killed leaves one behind; it is removed when its pid is gone on this host, or when it is
  older than ``stale_after``.
* ``<artifact>.lock.holder``: who holds the artifact's lock (pid, host, since), so a process
  that waits too long can say whom it waited for.

:mod:`fa_checks.cache.store` decides when each is written and read.  Imports no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import stat
import time
import uuid
from pathlib import Path

from ..errors import UserError
from ..files import read_bounded, read_json

#: what may follow an artifact's key in its file name (``.pt``, ``.json``, ``.pt.sha256``)
SUFFIX_PATTERN = re.compile(r"(\.[A-Za-z0-9_-]+)*")
DIGEST_SUFFIX = ".sha256"
HOLDER_SUFFIX = ".holder"
DEFAULT_STALE_AFTER = 24 * 3600.0
#: what every entry and digest records of the key it was written under (``binding``)
ENTRY_SCHEMA = "fa-checks-cache/2"
#: a digest or a lock holder's record is a line of JSON: anything larger is not one
MAX_RECORD_BYTES = 4096
#: the largest JSON artifact (a report with its history) the cache reads back
MAX_JSON_BYTES = 64 * 2**20
#: this machine, as it appears in temporary names (a hash: host names may hold dots)
HOST_ID = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# ".<name>.<host>.<pid>.<random>.tmp<suffix>"; older writers left ".<name>.<pid>.<random>.tmp"
_TEMPORARY = re.compile(r"\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
_OLD_TEMPORARY = re.compile(r"\.\d+\.[0-9a-f]{8}\.tmp")


# -- digests ----------------------------------------------------------------------------------
def digest_path(path: Path) -> Path:
    """Where the digest of the artifact at ``path`` lies."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def write_digest(source: Path, artifact: Path, binding: dict[str, str]) -> None:
    """Record the digest of the bytes at ``source`` (the artifact's temporary file) as the
    digest of ``artifact``, with the ``binding`` (schema, kind, key, version) it was written
    under, atomically."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    record = json.dumps({"sha256": digest.hexdigest(), "bytes": size, "binding": binding},
                        sort_keys=True)
    target = digest_path(artifact)
    tmp = temporary_name(target, "")
    try:
        write_exclusive(tmp, record + "\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_exclusive(path: Path, text: str) -> None:
    """Create ``path`` (it must not exist, and a link is never followed) and write ``text``."""
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    descriptor = os.open(path, flags, 0o644)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def file_problem(path: Path, binding: dict[str, str], limit: int) -> str | None:
    """Why the artifact at ``path`` may not be served, or None: it must be a regular file
    (not a link, FIFO or device) of at most ``limit`` bytes whose bytes match its digest, and
    the digest must be bound to the key it is read under."""
    record = _digest_record(path, binding)
    if isinstance(record, str):
        return record
    expected, size = record
    try:
        actual, length = _hash(path, min(limit, size))  # a larger file is refused unread
    except FileNotFoundError:
        return "it vanished"
    except UserError as exc:
        return str(exc)
    except OSError as exc:
        return f"it cannot be read: {exc.strerror}"
    if size != length:
        return f"it holds {length:,} bytes, its digest says {size:,}: truncated or edited"
    if actual != expected:
        return "its bytes do not match its digest: edited or corrupt"
    return None


def _digest_record(path: Path, binding: dict[str, str]) -> tuple[str, int] | str:
    """The (sha256, bytes) recorded beside ``path`` for ``binding``, or why there is none."""
    try:
        record = read_json(read_bounded(digest_path(path), limit=MAX_RECORD_BYTES,
                                        what="cache digest", follow=False))
        expected, size, bound = str(record["sha256"]), int(record["bytes"]), record["binding"]
    except FileNotFoundError:
        return "it has no digest beside it"
    except UserError as exc:
        return f"its digest file is not one: {exc}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its digest file is damaged"
    if bound != binding:
        return "its digest is bound to another key (copied from another entry or edited)"
    return expected, size


def data_problem(path: Path, data: bytes, binding: dict[str, str]) -> str | None:
    """Like :func:`file_problem`, for bytes already read (bounded) from ``path``."""
    record = _digest_record(path, binding)
    if isinstance(record, str):
        return record
    expected, size = record
    if size != len(data):
        return f"it holds {len(data):,} bytes, its digest says {size:,}: truncated or edited"
    if hashlib.sha256(data).hexdigest() != expected:
        return "its bytes do not match its digest: edited or corrupt"
    return None


def _hash(path: Path, limit: int) -> tuple[str, int]:
    """SHA-256 and length of a regular file's bytes, read in chunks, never a link, at most
    ``limit`` bytes (a UserError otherwise)."""
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise UserError("it is a symbolic link, which the cache never writes") from None
        raise UserError(f"it cannot be read: {exc.strerror}") from None
    try:
        mode = os.fstat(descriptor)
        if not stat.S_ISREG(mode.st_mode):
            raise UserError("it is not a regular file (a pipe, socket or device)")
        if mode.st_size > limit:
            raise UserError(f"it is {mode.st_size:,} bytes, above the limit {limit:,}")
        digest, size = hashlib.sha256(), 0
        while True:
            chunk = os.read(descriptor, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise UserError(f"it grew past the limit {limit:,} while it was read")
            digest.update(chunk)
        return digest.hexdigest(), size
    finally:
        os.close(descriptor)


def recorded_sha256(path: Path) -> str | None:
    """The full SHA-256 the digest beside ``path`` records, or None."""
    try:
        record = read_json(read_bounded(digest_path(path), limit=MAX_RECORD_BYTES,
                                        what="cache digest", follow=False))
        return str(record["sha256"])
    except (OSError, UserError, ValueError, KeyError, TypeError):
        return None


# -- temporary files --------------------------------------------------------------------------
def temporary_name(path: Path, suffix: str) -> Path:
    """A unique temporary file beside ``path`` that names this host and process."""
    return path.with_name(f".{path.name}.{HOST_ID}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
                          f".tmp{suffix}")


def remove_stale_temporaries(folder: Path, *, stale_after: float = DEFAULT_STALE_AFTER) -> int:
    """Remove the temporary files in ``folder`` whose writer is gone; return how many.

    A temporary file is stale when its writer ran on this host and its pid no longer runs, or
    when it is older than ``stale_after`` seconds (a writer on another host, or an older
    version's file that names no host).
    """
    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or ".tmp" not in name:
            continue
        ours = _TEMPORARY.search(name)
        if ours is None and _OLD_TEMPORARY.search(name) is None:
            continue
        try:
            age = now - entry.lstat().st_mtime
        except OSError:
            continue
        gone = ours is not None and ours["host"] == HOST_ID and not _running(int(ours["pid"]))
        if gone or age > stale_after:
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    return removed


def is_cache_file(name: str, key_length: int) -> bool:
    """Whether a file name is one the cache writes in a kind's folder: an artifact
    (``<key><suffix>``), its digest, lock or holder, or a writer's temporary file."""
    if name.startswith("."):
        return ".tmp" in name and (_TEMPORARY.search(name) is not None
                                   or _OLD_TEMPORARY.search(name) is not None)
    key, suffix = name[:key_length], name[key_length:]
    return (len(key) == key_length and all(c in "0123456789abcdef" for c in key)
            and SUFFIX_PATTERN.fullmatch(suffix) is not None)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a pid: leave its file to the age rule
    return True


# -- lock holders -----------------------------------------------------------------------------
def holder_path(lock_path: Path) -> Path:
    """Where the holder of the lock at ``lock_path`` is recorded."""
    return Path(f"{lock_path}{HOLDER_SUFFIX}")


def record_holder(holder: Path, artifact: Path) -> None:
    """Say that this process holds the lock of ``artifact`` (only a message depends on it).
    Whatever is at ``holder`` (a killed holder's record, a link someone put there) is
    removed, never written through: the record is created exclusively."""
    with contextlib.suppress(OSError):
        holder.unlink(missing_ok=True)
        write_exclusive(holder, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "artifact": str(artifact)}))


def describe_holder(holder: Path) -> str:
    """``"pid 123 on host (since ...)"``, or that the holder is not recorded."""
    from ..values import printable

    try:
        record = read_json(read_bounded(holder, limit=MAX_RECORD_BYTES, what="lock holder",
                                        follow=False))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["since"])))
        return printable(f"pid {int(record['pid'])} on {str(record['host'])[:100]} "
                         f"(since {since})")
    except (OSError, UserError, ValueError, KeyError, TypeError, OverflowError):
        return "another process (which one is not recorded)"


__all__ = ["DEFAULT_STALE_AFTER", "DIGEST_SUFFIX", "ENTRY_SCHEMA", "HOLDER_SUFFIX", "HOST_ID",
           "MAX_JSON_BYTES", "MAX_RECORD_BYTES", "SUFFIX_PATTERN", "data_problem",
           "describe_holder", "digest_path", "file_problem", "holder_path", "is_cache_file",
           "record_holder", "recorded_sha256", "remove_stale_temporaries", "temporary_name",
           "write_digest", "write_exclusive"]
