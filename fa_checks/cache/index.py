"""The cache's index of what it wrote, and its own parts, which are never links.

Every computation appends one JSON line ``{"kind", "key", "pid", "time"}`` to
``root/created.jsonl``: a test can count what was computed, and :meth:`CacheIndex.clear`
removes only what this index names.  A part the cache writes through (a kind's folder, the
log, its lock, a lock holder) that is a symbolic link is refused in one line: its writes would
land outside the cache.  :class:`~.store.ArtifactCache` is a :class:`CacheIndex`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import UserError, one_line
from ..files import read_bounded, read_json
from .files import DIGEST_SUFFIX, HOLDER_SUFFIX, is_cache_file

CREATED_LOG = "created.jsonl"
KEY_LENGTH = 20
#: the creation log is read whole: a larger one is not the cache's
MAX_LOG_BYTES = 64 * 2**20
KIND_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESERVED_SUFFIXES = (DIGEST_SUFFIX, ".lock", HOLDER_SUFFIX)


class CacheError(UserError):
    """A spec that cannot be hashed, a bad kind or suffix, a ``create`` that wrote nothing, a
    freshly computed value that fails its check, or a lock held too long by another process."""


def check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not KIND_PATTERN.fullmatch(kind):
        raise CacheError(
            f"bad artifact kind {kind!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )



class CacheIndex:
    """The index and parts of a cache rooted at ``root`` (see the module docstring)."""

    root: Path
    lock_timeout: float

    # -- the cache's own parts: never links ----------------------------------------------------
    def _refuse_link(self, part: Path) -> None:
        if os.path.islink(part):
            from ..values import printable

            raise CacheError(printable(
                f"cache {self.root}: {part} is a symbolic link, which fa-checks never makes; "
                "its writes would land outside the cache. Remove it (or clear the cache)"))

    def check_parts(self, kind: str | None = None) -> None:
        """A CacheError (one line) when a part of the cache it writes through is a symbolic
        link: a kind's folder, the creation log or its lock.  The root may be a link (a
        cache placed on another disk): that is the user's choice, not a file's."""
        self.check_root()
        parts = [self.root / CREATED_LOG, self.root / f"{CREATED_LOG}.lock"]
        if kind is not None:
            check_kind(kind)
            parts.append(self.root / kind)
        for part in parts:
            self._refuse_link(part)

    def _make_folder(self, kind: str) -> None:
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        self._refuse_link(folder)  # made by someone else between the check and now

    # -- bookkeeping ------------------------------------------------------------------------
    def created(self) -> list[dict[str, Any]]:
        """Every creation logged so far, oldest first (a partial last line is skipped).

        The log is the cache's index of what it wrote: :meth:`clear` removes only what it
        names.  Read as a regular file under a size bound, never through a link."""
        self.check_parts()
        try:
            data = read_bounded(self.root / CREATED_LOG, limit=MAX_LOG_BYTES,
                                what="cache creation log", follow=False)
        except FileNotFoundError:
            return []
        except UserError as exc:
            raise CacheError(one_line(exc)) from None
        entries = []
        for line in data.decode("utf-8", "replace").splitlines():
            try:
                entry = read_json(line)
            except ValueError:
                continue  # a line cut short by a crash; the artifacts themselves are intact
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def written(self) -> dict[str, set[str]]:
        """Kind -> the keys the creation log says the cache wrote (valid names only)."""
        out: dict[str, set[str]] = {}
        for entry in self.created():
            kind, key = entry.get("kind"), entry.get("key")
            if (isinstance(kind, str) and KIND_PATTERN.fullmatch(kind)
                    and isinstance(key, str) and is_cache_file(key, KEY_LENGTH)
                    and len(key) == KEY_LENGTH):
                out.setdefault(kind, set()).add(key)
        return out

    def info(self) -> dict[str, dict[str, int]]:
        """Per kind: ``artifacts`` (count), ``bytes`` (the cache's files in its folder:
        artifacts, digests, locks, temporaries) and ``temporary_files`` (left by writers)."""
        out: dict[str, dict[str, int]] = {}
        self.check_root()
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            if folder.is_symlink() or not folder.is_dir() \
                    or not KIND_PATTERN.fullmatch(folder.name):
                continue
            artifacts = size = temporaries = 0
            ours = [e for e in folder.iterdir() if is_cache_file(e.name, KEY_LENGTH)]
            for entry in ours:
                try:
                    size += entry.lstat().st_size
                except OSError:
                    continue  # removed meanwhile
                if entry.name.startswith("."):
                    temporaries += 1
                elif not entry.name.endswith(RESERVED_SUFFIXES):
                    artifacts += 1
            if ours:  # a folder of someone else's beside the cache's is not a kind
                out[folder.name] = {"artifacts": artifacts, "bytes": size,
                                    "temporary_files": temporaries}
        return out

    def clear(self, kind: str | None = None) -> list[Path]:
        """Remove the artifacts of ``kind``, or every artifact and the creation log (None).

        Only what the cache's own index (the creation log) says it wrote is removed: each
        listed key's artifact, digest, lock, holder and temporaries, in its kind's folder.
        Nothing is followed: a kind folder that is a link is refused, a link inside a folder
        is left.  Everything else is returned, left in place (a cache pointed at a folder of
        the user's own deletes none of it).  A file that cannot be removed is an OSError
        naming it.  The root stays.  Clear when no run is using the cache.
        """
        self.check_root()
        if not self.root.exists():
            return []
        if kind is not None:
            check_kind(kind)
        self.check_parts(kind)
        written = self.written()
        kinds = [kind] if kind is not None else sorted(written)
        left: list[Path] = []
        for name in kinds:
            folder = self.root / name
            self._refuse_link(folder)
            if not folder.is_dir():
                continue
            keys = written.get(name, set())
            for entry in sorted(folder.iterdir()):
                if _written_by(entry, keys):
                    entry.unlink()
                else:
                    left.append(entry)
            if not any(folder.iterdir()):
                folder.rmdir()
        if kind is None:  # everything the index names is gone: so is the index
            for name in (CREATED_LOG, f"{CREATED_LOG}.lock"):
                part = self.root / name
                if part.is_file() and not part.is_symlink():
                    part.unlink()
            left += [entry for entry in sorted(self.root.iterdir())
                     if not (entry.name in written and entry.is_dir())]
        return left

    def check_root(self) -> None:
        """A CacheError when the root exists and is not a folder (``$FA_CHECKS_CACHE`` naming
        a file), before any work is done."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache {self.root}: not a folder; point FA_CHECKS_CACHE (or the "
                             "cache-dir option) at a folder")

    def log_creation(self, kind: str, key: str) -> None:
        """Record in the index that the cache wrote ``key`` of ``kind`` (what ``clear`` removes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.check_parts()
        log = self.root / CREATED_LOG
        entry = {"kind": kind, "key": key, "pid": os.getpid(), "time": time.time()}
        lock = FileLock(f"{log}.lock", timeout=min(self.lock_timeout, 300.0))
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))
        try:
            with lock:
                descriptor = os.open(log, flags, 0o644)
                with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, sort_keys=True) + "\n")
        except Timeout:
            raise CacheError(f"the cache's creation log {log} stayed locked for "
                             f"{lock.timeout:g} s; another process holds it") from None


def cleared_lines(root: Path, kind: str | None, left: list[Path]) -> list[str]:
    """What ``cache clear`` says: what it removed, and what it left (files it did not write)."""
    lines = [f"cleared {kind + ' artifacts' if kind else 'every artifact'} in {root}"]
    if left:
        shown = ", ".join(str(path) for path in left[:3]) + (", ..." if len(left) > 3 else "")
        lines.append(f"left {len(left)} entr{'y' if len(left) == 1 else 'ies'} fa-checks did "
                     f"not write: {shown}")
    return lines


def _written_by(entry: Path, keys: set[str]) -> bool:
    """Whether ``entry`` is a regular file (not a link) the cache wrote for one of ``keys``:
    its artifact, digest, lock, holder, or a writer's temporary file."""
    if entry.is_symlink() or not entry.is_file() or not is_cache_file(entry.name, KEY_LENGTH):
        return False
    name = entry.name[1:] if entry.name.startswith(".") else entry.name
    return name[:KEY_LENGTH] in keys


