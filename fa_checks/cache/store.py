"""A content-addressed store of expensive artifacts (trained runs, baselines, reports).

An artifact is named by what it is: ``root/<kind>/<key><suffix>`` where ``key`` hashes the
canonical JSON of ``{"kind", "spec", "version"}``.  Any number of processes (pytest-xdist
workers, repeated runs, the command line) may ask for the same artifact at once: a file lock makes
one of them compute it, into a temporary file that is renamed into place, and the others wait and
read it.  Every computation appends one JSON line ``{"kind", "key", "pid", "time"}`` to
``root/created.jsonl``, so a test can count what was computed.

**The cache checks itself.**  Beside every artifact lies its digest, ``<artifact>.sha256``
(JSON ``{"sha256": hex, "bytes": n}``), written before the artifact is renamed into place.  An
artifact is served only when its bytes match that digest and, when the caller gives one, its
``validate`` callback accepts it (a JSON artifact's parsed value; a file artifact's path): a
truncated or edited file, ``{}`` or ``null`` where a report belongs, a baseline without
``test_acc``, a missing or mismatched digest are each said in one line through ``log`` (by
default a ``RuntimeWarning``) and the artifact is computed again.

**Nothing stale piles up.**  Temporary files carry their writer's host and pid; a writer that
was killed leaves one behind, and the next write in that folder removes it (its pid is gone on
this host, or it is older than ``stale_after``, one day by default).

**A lock never waits forever.**  Whoever computes an artifact records its pid, host and start
time beside the lock (``<artifact>.lock.holder``); a process that waits longer than
``lock_timeout`` (default ``$FA_CHECKS_LOCK_TIMEOUT`` seconds, else one hour) gets a
:class:`CacheError` naming the artifact and that process.

The files beside each artifact (digest, temporaries, lock holder) are written, read and tidied
by :mod:`fa_checks.cache.files`.  Neither module imports torch: artifacts are whatever files the
``create`` callbacks write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import Log, UserError, one_line
from ..files import read_json
from .files import (
    DEFAULT_STALE_AFTER,
    DIGEST_SUFFIX,
    HOLDER_SUFFIX,
    HOST_ID,
    SUFFIX_PATTERN,
    describe_holder,
    digest_problem,
    holder_path,
    is_cache_file,
    record_holder,
    remove_stale_temporaries,
    temporary_name,
    write_digest,
)

CREATED_LOG = "created.jsonl"
KEY_LENGTH = 20
#: the environment variable that sets how long to wait for another process's lock (seconds)
LOCK_TIMEOUT_VARIABLE = "FA_CHECKS_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 3600.0

_KIND_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_RESERVED_SUFFIXES = (DIGEST_SUFFIX, ".lock", HOLDER_SUFFIX)
_MISSING = object()

Validator = Callable[[Any], Any]


class CacheError(UserError):
    """A spec that cannot be hashed, a bad kind or suffix, a ``create`` that wrote nothing, a
    freshly computed value that fails its check, or a lock held too long by another process."""


def default_cache_root() -> Path:
    """``$FA_CHECKS_CACHE``, else ``$XDG_CACHE_HOME/fa-checks``, else ``~/.cache/fa-checks``."""
    explicit = os.environ.get("FA_CHECKS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fa-checks"


def file_digest(path: str | os.PathLike[str], *, length: int = KEY_LENGTH) -> str:
    """The first ``length`` hex digits of the SHA-256 of a file's bytes (a content address)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


def canonical_json(value: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal specs give equal text.

    Tuples are written as lists and paths as strings; ``1`` and ``1.0`` stay different.
    """
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_jsonable
        )
    except (TypeError, ValueError) as exc:
        raise CacheError(f"cache spec is not JSON data: {exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    if type(value).__module__ == "torch" and type(value).__name__ in ("dtype", "device"):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} cannot be part of a cache key")


class ArtifactCache:
    """Artifacts under ``root``, each computed once across processes; see the module docstring.

    ``version`` (default: the library version) is part of every key, so a new release never
    reads an older one's artifacts.  ``log`` receives one line for each damaged artifact that is
    recomputed (default: ``warnings.warn(line, RuntimeWarning)``).  ``lock_timeout`` (seconds):
    how long to wait for another process computing the same artifact.  ``stale_after``
    (seconds): age after which any leftover temporary file is removed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        version: str | None = None,
        log: Log | None = None,
        lock_timeout: float | None = None,
        stale_after: float = DEFAULT_STALE_AFTER,
    ) -> None:
        if version is None:
            from .. import __version__ as version
        self.root = Path(root)
        self.version = str(version)
        self.log = log
        self.lock_timeout = default_lock_timeout() if lock_timeout is None else float(
            lock_timeout)
        self.stale_after = float(stale_after)

    def __repr__(self) -> str:
        return f"ArtifactCache({str(self.root)!r})"

    # -- naming -----------------------------------------------------------------------------
    def key(self, kind: str, spec: Any) -> str:
        """The first KEY_LENGTH hex digits of the SHA-256 of the canonical kind+spec+version."""
        _check_kind(kind)
        text = canonical_json({"kind": kind, "spec": spec, "version": self.version})
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:KEY_LENGTH]

    def path_for(self, kind: str, spec: Any, suffix: str = ".pt") -> Path:
        """``root/kind/<key><suffix>``; the file may not exist yet."""
        if not SUFFIX_PATTERN.fullmatch(suffix) or suffix.endswith(_RESERVED_SUFFIXES):
            raise CacheError(f"bad artifact suffix {suffix!r}: use '' or something like '.pt' "
                             f"(not {', '.join(_RESERVED_SUFFIXES)}, which the cache uses)")
        return self.root / kind / f"{self.key(kind, spec)}{suffix}"

    # -- computing once ---------------------------------------------------------------------
    def get_or_create(
        self,
        kind: str,
        spec: Any,
        create: Callable[[Path], None],
        *,
        suffix: str = ".pt",
        refresh: bool = False,
        validate: Callable[[Path], Any] | None = None,
    ) -> Path:
        """The artifact's path, calling ``create(tmp_path)`` first if it does not exist yet.

        ``create`` must write a file at ``tmp_path`` (in the artifact's own directory, ending in
        ``suffix``); it is then renamed into place.  If ``create`` raises, nothing is left behind
        and the exception propagates.  Processes asking at the same time wait for one another:
        ``create`` runs once.  ``refresh=True`` recomputes even if the artifact exists.  A stored
        artifact is served only if it matches its digest and ``validate(path)`` (when given)
        does not raise; otherwise it is logged and created again.
        """
        path = self.path_for(kind, spec, suffix)
        if not refresh and self._usable(kind, path, validate, say=True):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(kind, path):
            # another process may have made it while we waited
            if not refresh and self._usable(kind, path, validate, say=False):
                return path
            self._write(kind, path, suffix, create)
            if validate is not None:
                self._check_fresh(kind, path, lambda: validate(path))
            self._log_creation(kind, path.stem)
        return path

    def get_or_create_json(
        self,
        kind: str,
        spec: Any,
        compute: Callable[[], Any],
        *,
        refresh: bool = False,
        validate: Validator | None = None,
    ) -> Any:
        """``compute()``'s JSON value, computed once across processes and kept as ``.json``.

        ``validate(value)`` (when given) is the caller's schema: it raises (any ``Exception``)
        for a value that is not what this kind holds.  A stored value that fails it, or its
        digest, is logged and computed again; a freshly computed value that fails it is a
        :class:`CacheError` (a fault of ``compute``).  The return value is the stored JSON read
        back (tuples become lists).
        """
        path = self.path_for(kind, spec, ".json")
        if not refresh:
            value = self._read_json(kind, path, validate, say=True)
            if value is not _MISSING:
                return value

        def create(tmp: Path) -> None:
            value = compute()
            if validate is not None:
                self._check_fresh(kind, path, lambda: validate(value))
            tmp.write_text(_dump_json(value), encoding="utf-8")

        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(kind, path):
            if not refresh:
                value = self._read_json(kind, path, validate, say=False)
                if value is not _MISSING:
                    return value
            self._write(kind, path, ".json", create)
            self._log_creation(kind, path.stem)
        value = self._read_json(kind, path, None, say=False)
        if value is _MISSING:  # what was just written does not read back: the disk is at fault
            raise CacheError(f"the {kind!r} artifact {path} does not read back after writing; "
                             "check the disk, or clear the cache")
        return value

    # -- small JSON artifacts ---------------------------------------------------------------
    def read_json(self, kind: str, spec: Any, *, validate: Validator | None = None,
                  quiet: bool = False) -> Any | None:
        """The stored JSON value, or None when it is absent or damaged (logged: recompute it;
        ``quiet`` for a caller whose next step, computing it, says so itself)."""
        value = self._read_json(kind, self.path_for(kind, spec, ".json"), validate,
                                say=not quiet)
        return None if value is _MISSING else value

    # -- checking what is stored ------------------------------------------------------------
    def stored(self, kind: str, spec: Any, *, suffix: str = ".pt",
               validate: Callable[[Path], Any] | None = None) -> Path | None:
        """The artifact's path when it is stored and intact (its digest matches and
        ``validate(path)``, when given, accepts it), else None; computes nothing.  A damaged
        one is said through ``log``, as :meth:`get_or_create` would say it."""
        path = self.path_for(kind, spec, suffix)
        return path if self._usable(kind, path, validate, say=True) else None

    def _usable(self, kind: str, path: Path, validate: Callable[[Path], Any] | None, *,
                say: bool) -> bool:
        if not path.is_file():
            return False
        try:
            data = path.read_bytes()
        except OSError as exc:
            return self._damaged(kind, path, f"it cannot be read: {exc.strerror}", say)
        problem = digest_problem(path, data)
        if problem is None and validate is not None:
            try:
                validate(path)
            except Exception as exc:  # the caller's check, whatever it raises
                problem = f"it fails its check: {one_line(exc)}"
        return problem is None or self._damaged(kind, path, problem, say)

    def _read_json(self, kind: str, path: Path, validate: Validator | None, *,
                   say: bool) -> Any:
        """The verified value at ``path``, or ``_MISSING`` (absent or damaged)."""
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return _MISSING
        except OSError as exc:
            self._damaged(kind, path, f"it cannot be read: {exc.strerror}", say)
            return _MISSING
        problem = digest_problem(path, data)
        value = _MISSING
        if problem is None:
            try:
                value = read_json(data)
            except ValueError as exc:
                problem = f"it is not JSON fa-checks wrote: {exc}"
        if problem is None and validate is not None:
            try:
                validate(value)
            except Exception as exc:  # the caller's schema, whatever it raises
                problem = f"it fails its schema: {one_line(exc)}"
        if problem is not None:
            self._damaged(kind, path, problem, say)
            return _MISSING
        return value

    def _damaged(self, kind: str, path: Path, problem: str, say: bool) -> bool:
        if say:
            self._say(f"fa-checks cache: the {kind!r} artifact {path} is damaged ({problem}); "
                      "computing it again")
        return False

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)
        else:
            warnings.warn(line, RuntimeWarning, stacklevel=5)

    def _check_fresh(self, kind: str, path: Path, check: Callable[[], Any]) -> None:
        try:
            check()
        except Exception as exc:  # the caller's check, whatever it raises
            raise CacheError(
                f"the {kind!r} artifact {path.name} just computed fails its own check "
                f"({one_line(exc)}); this is a fault of the tool, please report it"
            ) from None

    # -- writing ----------------------------------------------------------------------------
    def _write(self, kind: str, path: Path, suffix: str, create: Callable[[Path], None]) -> None:
        """``create(tmp)``, its digest beside it, then the rename that makes it visible."""
        remove_stale_temporaries(path.parent, stale_after=self.stale_after)
        tmp = temporary_name(path, suffix)
        try:
            create(tmp)
            if not tmp.is_file():
                raise CacheError(
                    f"creating the {kind!r} artifact wrote no file at the path it was given "
                    f"({tmp})")
            write_digest(tmp, path)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- locks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, kind: str, path: Path) -> Iterator[None]:
        lock_path = Path(f"{path}.lock")
        holder = holder_path(lock_path)
        lock = FileLock(str(lock_path), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except Timeout:
            raise CacheError(
                f"the {kind!r} artifact {path.name} is locked by {describe_holder(holder)} and "
                f"{self.lock_timeout:g} s of waiting have passed; wait for that process, stop "
                f"it, or set {LOCK_TIMEOUT_VARIABLE} to more seconds"
            ) from None
        try:
            record_holder(holder, path)
            yield
        finally:
            holder.unlink(missing_ok=True)  # before the release: the next holder writes its own
            lock.release()

    # -- bookkeeping ------------------------------------------------------------------------
    def created(self) -> list[dict[str, Any]]:
        """Every creation logged so far, oldest first (a partial last line is skipped)."""
        log = self.root / CREATED_LOG
        if not log.is_file():
            return []
        entries = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(read_json(line))
            except ValueError:
                continue  # a line cut short by a crash; the artifacts themselves are intact
        return entries

    def info(self) -> dict[str, dict[str, int]]:
        """Per kind: ``artifacts`` (count), ``bytes`` (the cache's files in its folder:
        artifacts, digests, locks, temporaries) and ``temporary_files`` (left by writers)."""
        out: dict[str, dict[str, int]] = {}
        self.check_root()
        if not self.root.is_dir():
            return out
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not _KIND_PATTERN.fullmatch(folder.name):
                continue
            artifacts = size = temporaries = 0
            ours = [e for e in folder.iterdir() if is_cache_file(e.name, KEY_LENGTH)]
            for entry in ours:
                try:
                    size += entry.stat().st_size
                except OSError:
                    continue  # removed meanwhile
                if entry.name.startswith("."):
                    temporaries += 1
                elif not entry.name.endswith(_RESERVED_SUFFIXES):
                    artifacts += 1
            if ours:  # a folder of someone else's beside the cache's is not a kind
                out[folder.name] = {"artifacts": artifacts, "bytes": size,
                                    "temporary_files": temporaries}
        return out

    def clear(self, kind: str | None = None) -> list[Path]:
        """Remove the artifacts of ``kind``, or every artifact and the creation log (None).

        Only files the cache writes are removed (a cache pointed at a folder of the user's
        own deletes none of it); the others are returned, left in place.  A file that cannot
        be removed is an OSError naming it.  The root directory stays.  Clear when no run is
        using the cache: a writer whose folder is removed under it fails.
        """
        self.check_root()
        if not self.root.exists():
            return []
        if kind is not None:
            _check_kind(kind)
            folders = [self.root / kind]
        else:
            folders = [f for f in sorted(self.root.iterdir())
                       if f.is_dir() and not f.is_symlink() and _KIND_PATTERN.fullmatch(f.name)]
        left: list[Path] = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and is_cache_file(entry.name, KEY_LENGTH):
                    entry.unlink()
                else:
                    left.append(entry)
            if not any(folder.iterdir()):
                folder.rmdir()
        if kind is None:
            for name in (CREATED_LOG, f"{CREATED_LOG}.lock"):
                (self.root / name).unlink(missing_ok=True)
            left += [entry for entry in sorted(self.root.iterdir())
                     if not (entry.is_dir() and _KIND_PATTERN.fullmatch(entry.name))]
        return left

    def check_root(self) -> None:
        """A CacheError when the root exists and is not a folder (``$FA_CHECKS_CACHE`` naming
        a file), before any work is done."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache {self.root}: not a folder; point FA_CHECKS_CACHE (or the "
                             "cache-dir option) at a folder")

    def _log_creation(self, kind: str, key: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / CREATED_LOG
        entry = {"kind": kind, "key": key, "pid": os.getpid(), "time": time.time()}
        lock = FileLock(f"{log}.lock", timeout=min(self.lock_timeout, 300.0))
        try:
            with lock, open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        except Timeout:
            raise CacheError(f"the cache's creation log {log} stayed locked for "
                             f"{lock.timeout:g} s; another process holds it") from None


def default_lock_timeout() -> float:
    """``$FA_CHECKS_LOCK_TIMEOUT`` seconds, else one hour; a bad value is a CacheError."""
    text = os.environ.get(LOCK_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT
    from .. import values

    try:
        return values.positive_float(text)
    except ValueError as exc:
        raise CacheError(f"{LOCK_TIMEOUT_VARIABLE}={text!r}: {exc} (seconds)") from None


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not _KIND_PATTERN.fullmatch(kind):
        raise CacheError(
            f"bad artifact kind {kind!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def _dump_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise CacheError(f"cannot store as JSON: {exc}") from None


__all__ = [
    "CREATED_LOG",
    "DIGEST_SUFFIX",
    "HOST_ID",
    "KEY_LENGTH",
    "LOCK_TIMEOUT_VARIABLE",
    "ArtifactCache",
    "CacheError",
    "canonical_json",
    "default_cache_root",
    "default_lock_timeout",
    "file_digest",
    "remove_stale_temporaries",
]
