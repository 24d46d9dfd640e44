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
import time
import uuid
from pathlib import Path

from ..files import read_json

#: what may follow an artifact's key in its file name (``.pt``, ``.json``, ``.pt.sha256``)
SUFFIX_PATTERN = re.compile(r"(\.[A-Za-z0-9_-]+)*")
DIGEST_SUFFIX = ".sha256"
HOLDER_SUFFIX = ".holder"
DEFAULT_STALE_AFTER = 24 * 3600.0
#: this machine, as it appears in temporary names (a hash: host names may hold dots)
HOST_ID = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
# ".<name>.<host>.<pid>.<random>.tmp<suffix>"; older writers left ".<name>.<pid>.<random>.tmp"
_TEMPORARY = re.compile(r"\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
_OLD_TEMPORARY = re.compile(r"\.\d+\.[0-9a-f]{8}\.tmp")


# -- digests ----------------------------------------------------------------------------------
def digest_path(path: Path) -> Path:
    """Where the digest of the artifact at ``path`` lies."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def write_digest(source: Path, artifact: Path) -> None:
    """Record the digest of the bytes at ``source`` (the artifact's temporary file) as the
    digest of ``artifact``, atomically."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    record = json.dumps({"sha256": digest.hexdigest(), "bytes": size}, sort_keys=True)
    target = digest_path(artifact)
    tmp = temporary_name(target, "")
    try:
        tmp.write_text(record + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def digest_problem(path: Path, data: bytes) -> str | None:
    """Why ``data`` (the bytes at ``path``) does not match its recorded digest, or None."""
    try:
        record = read_json(digest_path(path).read_bytes())
        expected, size = record["sha256"], record["bytes"]
    except FileNotFoundError:
        return "it has no digest beside it"
    except (OSError, ValueError, KeyError, TypeError):
        return "its digest file is damaged"
    if size != len(data):
        return f"it holds {len(data):,} bytes, its digest says {size:,}: truncated or edited"
    if hashlib.sha256(data).hexdigest() != expected:
        return "its bytes do not match its digest: edited or corrupt"
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
    """Say that this process holds the lock of ``artifact`` (only a message depends on it)."""
    with contextlib.suppress(OSError):
        holder.write_text(json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "artifact": str(artifact)}), encoding="utf-8")


def describe_holder(holder: Path) -> str:
    """``"pid 123 on host (since ...)"``, or that the holder is not recorded."""
    try:
        record = read_json(holder.read_bytes())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(record["since"])))
        return f"pid {int(record['pid'])} on {record['host']} (since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (which one is not recorded)"


__all__ = ["DEFAULT_STALE_AFTER", "DIGEST_SUFFIX", "HOLDER_SUFFIX", "HOST_ID", "SUFFIX_PATTERN",
           "describe_holder", "digest_path", "digest_problem", "holder_path", "is_cache_file",
           "record_holder", "remove_stale_temporaries", "temporary_name", "write_digest"]
