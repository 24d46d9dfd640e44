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
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import Log, UserError, one_line
from ..files import read_bounded, read_json
from .files import (
    DEFAULT_STALE_AFTER,
    DIGEST_SUFFIX,
    ENTRY_SCHEMA,
    HOST_ID,
    MAX_JSON_BYTES,
    SUFFIX_PATTERN,
    data_problem,
    describe_holder,
    file_problem,
    holder_path,
    record_holder,
    remove_stale_temporaries,
    temporary_name,
    write_digest,
    write_exclusive,
)
from .index import CREATED_LOG, KEY_LENGTH, RESERVED_SUFFIXES, CacheError, CacheIndex, check_kind

#: the environment variable that sets how long to wait for another process's lock (seconds)
LOCK_TIMEOUT_VARIABLE = "FA_CHECKS_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 3600.0

_MISSING = object()

Validator = Callable[[Any], Any]


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


class ArtifactCache(CacheIndex):
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
        from ..limits import default_limits

        #: the largest file artifact read back (a trained run is a checkpoint: its limit)
        self.max_artifact_bytes = int(default_limits().max_file_bytes)

    def __repr__(self) -> str:
        return f"ArtifactCache({str(self.root)!r})"

    # -- naming -----------------------------------------------------------------------------
    def key(self, kind: str, spec: Any) -> str:
        """The first KEY_LENGTH hex digits of the SHA-256 of the canonical kind+spec+version."""
        check_kind(kind)
        text = canonical_json({"kind": kind, "spec": spec, "version": self.version})
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:KEY_LENGTH]

    def path_for(self, kind: str, spec: Any, suffix: str = ".pt") -> Path:
        """``root/kind/<key><suffix>``; the file may not exist yet."""
        if not SUFFIX_PATTERN.fullmatch(suffix) or suffix.endswith(RESERVED_SUFFIXES):
            raise CacheError(f"bad artifact suffix {suffix!r}: use '' or something like '.pt' "
                             f"(not {', '.join(RESERVED_SUFFIXES)}, which the cache uses)")
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
        self.check_parts(kind)
        if not refresh and self._usable(kind, path, validate, say=True):
            return path
        self._make_folder(kind)
        with self._locked(kind, path):
            # another process may have made it while we waited
            if not refresh and self._usable(kind, path, validate, say=False):
                return path
            self._write(kind, path, suffix, create)
            if validate is not None:
                self._check_fresh(kind, path, lambda: validate(path))
            self.log_creation(kind, path.name[:KEY_LENGTH])
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
        self.check_parts(kind)
        if not refresh:
            value = self._read_json(kind, spec, path, validate, say=True)
            if value is not _MISSING:
                return value

        def create(tmp: Path) -> None:
            value = compute()
            if validate is not None:
                self._check_fresh(kind, path, lambda: validate(value))
            write_exclusive(tmp, self._dump_entry(kind, spec, path, value))

        self._make_folder(kind)
        with self._locked(kind, path):
            if not refresh:
                value = self._read_json(kind, spec, path, validate, say=False)
                if value is not _MISSING:
                    return value
            self._write(kind, path, ".json", create)
            self.log_creation(kind, path.name[:KEY_LENGTH])
        value = self._read_json(kind, spec, path, None, say=False)
        if value is _MISSING:  # what was just written does not read back: the disk is at fault
            raise CacheError(f"the {kind!r} artifact {path} does not read back after writing; "
                             "check the disk, or clear the cache")
        return value

    # -- small JSON artifacts ---------------------------------------------------------------
    def read_json(self, kind: str, spec: Any, *, validate: Validator | None = None,
                  quiet: bool = False) -> Any | None:
        """The stored JSON value, or None when it is absent or damaged (logged: recompute it;
        ``quiet`` for a caller whose next step, computing it, says so itself)."""
        self.check_parts(kind)
        value = self._read_json(kind, spec, self.path_for(kind, spec, ".json"), validate,
                                say=not quiet)
        return None if value is _MISSING else value

    # -- checking what is stored ------------------------------------------------------------
    def stored(self, kind: str, spec: Any, *, suffix: str = ".pt",
               validate: Callable[[Path], Any] | None = None) -> Path | None:
        """The artifact's path when it is stored and intact (its digest matches and
        ``validate(path)``, when given, accepts it), else None; computes nothing.  A damaged
        one is said through ``log``, as :meth:`get_or_create` would say it."""
        path = self.path_for(kind, spec, suffix)
        self.check_parts(kind)
        return path if self._usable(kind, path, validate, say=True) else None

    # -- what binds an entry to its key -----------------------------------------------------
    def binding(self, kind: str, path: Path) -> dict[str, str]:
        """What an artifact's digest records of the key it was written under: a file copied
        over from another entry (another subject's report, another run) is bound to that
        entry's name, and refused here."""
        return {"schema": ENTRY_SCHEMA, "kind": kind, "name": path.name,
                "version": self.version}

    def _dump_entry(self, kind: str, spec: Any, path: Path, value: Any) -> str:
        """A JSON artifact as stored: its value inside its binding (kind, key, spec, version,
        schema), so the entry itself says which key it answers."""
        binding = {**self.binding(kind, path), "spec": spec}
        return _dump_json({"binding": binding, "value": value})

    def _unbound(self, kind: str, spec: Any, path: Path, entry: Any) -> Any:
        """The value of a stored entry, or ``_MISSING`` when its binding is not this key's."""
        if not isinstance(entry, dict) or set(entry) != {"binding", "value"}:
            return _MISSING
        bound = entry["binding"]
        expected = {**self.binding(kind, path), "spec": spec}
        if not isinstance(bound, dict) or canonical_json(bound) != canonical_json(expected):
            return _MISSING
        return entry["value"]

    def _usable(self, kind: str, path: Path, validate: Callable[[Path], Any] | None, *,
                say: bool) -> bool:
        if not os.path.lexists(path):
            return False
        problem = file_problem(path, self.binding(kind, path), self.max_artifact_bytes)
        if problem is None and validate is not None:
            try:
                validate(path)
            except Exception as exc:  # the caller's check, whatever it raises
                problem = f"it fails its check: {one_line(exc)}"
        return problem is None or self._damaged(kind, path, problem, say)

    def _read_json(self, kind: str, spec: Any, path: Path, validate: Validator | None, *,
                   say: bool) -> Any:
        """The verified value at ``path``, or ``_MISSING`` (absent or damaged): a regular
        file under a size bound (never a link), matching its digest, bound to this key."""
        try:
            data = read_bounded(path, limit=MAX_JSON_BYTES, what="cache entry", follow=False)
        except FileNotFoundError:
            return _MISSING
        except (OSError, UserError) as exc:
            self._damaged(kind, path, one_line(exc), say)
            return _MISSING
        problem = data_problem(path, data, self.binding(kind, path))
        value = _MISSING
        if problem is None:
            try:
                value = self._unbound(kind, spec, path, read_json(data))
            except ValueError as exc:
                problem = f"it is not JSON fa-checks wrote: {exc}"
            else:
                if value is _MISSING:
                    problem = ("it is bound to another key (copied from another entry, or "
                               "edited)")
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
            from ..values import printable

            self._say(printable(f"fa-checks cache: the {kind!r} artifact {path} is damaged "
                                f"({problem}); computing it again"))
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
            if os.path.islink(tmp) or not os.path.isfile(tmp):
                raise CacheError(f"creating the {kind!r} artifact wrote no regular file ({tmp})")
            write_digest(tmp, path, self.binding(kind, path))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- locks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, kind: str, path: Path) -> Iterator[None]:
        lock_path = Path(f"{path}.lock")
        holder = holder_path(lock_path)
        for part in (lock_path, holder):  # a lock opens its file for writing: never a link
            self._refuse_link(part)
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
