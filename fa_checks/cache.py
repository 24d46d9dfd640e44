"""A content-addressed store of expensive artifacts (trained runs, baselines, reports).

An artifact is named by what it is: ``root/<kind>/<key><suffix>`` where ``key`` hashes the
canonical JSON of ``{"kind", "spec", "version"}``.  Any number of processes (pytest-xdist
workers, repeated runs, the command line) may ask for the same artifact at once: a file lock makes
one of them compute it, into a temporary file that is renamed into place, and the others wait and
read it.  Every computation appends one JSON line ``{"kind", "key", "pid", "time"}`` to
``root/created.jsonl``, so a test can count what was computed.

This module imports no torch: artifacts are whatever files the ``create`` callbacks write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import UserError
from .files import write_atomic

CREATED_LOG = "created.jsonl"
KEY_LENGTH = 20

_KIND_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SUFFIX_PATTERN = re.compile(r"(\.[A-Za-z0-9_-]+)*")
_MISSING = object()


class CacheError(UserError):
    """A spec that cannot be hashed, a bad kind or suffix, or a ``create`` that wrote nothing."""


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
    reads an older one's artifacts.
    """

    def __init__(self, root: str | os.PathLike[str], *, version: str | None = None) -> None:
        if version is None:
            from . import __version__ as version
        self.root = Path(root)
        self.version = str(version)

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
        if not _SUFFIX_PATTERN.fullmatch(suffix):
            raise CacheError(f"bad artifact suffix {suffix!r}: use '' or something like '.pt'")
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
    ) -> Path:
        """The artifact's path, calling ``create(tmp_path)`` first if it does not exist yet.

        ``create`` must write a file at ``tmp_path`` (in the artifact's own directory, ending in
        ``suffix``); it is then renamed into place.  If ``create`` raises, nothing is left behind
        and the exception propagates.  Processes asking at the same time wait for one another:
        ``create`` runs once.  ``refresh=True`` recomputes even if the artifact exists.
        """
        path = self.path_for(kind, spec, suffix)
        if not refresh and path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if not refresh and path.is_file():  # another process made it while we waited
                return path
            _write_atomically(path, suffix, create, what=f"the {kind!r} artifact")
            self._log_creation(kind, path.stem)
        return path

    def get_or_create_json(
        self, kind: str, spec: Any, compute: Callable[[], Any], *, refresh: bool = False
    ) -> Any:
        """``compute()``'s JSON value, computed once across processes and kept as ``.json``."""
        if not refresh:
            cached = _read_json_file(self.path_for(kind, spec, ".json"))
            if cached is not _MISSING:
                return cached

        def create(tmp: Path) -> None:
            tmp.write_text(_dump_json(compute()), encoding="utf-8")

        path = self.get_or_create(kind, spec, create, suffix=".json", refresh=refresh)
        value = _read_json_file(path)
        if value is _MISSING:  # the file is damaged (edited by hand): compute it afresh
            path = self.get_or_create(kind, spec, create, suffix=".json", refresh=True)
            value = _read_json_file(path)
        return value

    # -- small JSON artifacts ---------------------------------------------------------------
    def read_json(self, kind: str, spec: Any) -> Any | None:
        """The stored JSON value, or None when it is absent or unreadable (recompute it)."""
        value = _read_json_file(self.path_for(kind, spec, ".json"))
        return None if value is _MISSING else value

    def write_json(self, kind: str, spec: Any, value: Any) -> Path:
        """Store ``value`` as JSON, atomically; counted in ``created.jsonl`` like any artifact."""
        path = self.path_for(kind, spec, ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _dump_json(value)
        _write_atomically(
            path, ".json", lambda tmp: tmp.write_text(text, encoding="utf-8"), what="JSON"
        )
        self._log_creation(kind, path.stem)
        return path

    # -- bookkeeping ------------------------------------------------------------------------
    def created(self) -> list[dict[str, Any]]:
        """Every creation logged so far, oldest first (a partial last line is skipped)."""
        log = self.root / CREATED_LOG
        if not log.is_file():
            return []
        entries = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash; the artifacts themselves are intact
        return entries

    def clear(self) -> None:
        """Remove every artifact and the creation log; the root directory itself stays."""
        if not self.root.is_dir():
            return
        for child in self.root.iterdir():
            _remove(child)

    def _log_creation(self, kind: str, key: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.root / CREATED_LOG
        entry = {"kind": kind, "key": key, "pid": os.getpid(), "time": time.time()}
        with FileLock(f"{log}.lock"), open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or not _KIND_PATTERN.fullmatch(kind):
        raise CacheError(
            f"bad artifact kind {kind!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )


def _write_atomically(
    path: Path, suffix: str, write: Callable[[Path], None], *, what: str
) -> None:
    """:func:`fa_checks.files.write_atomic`, refusing a writer that wrote no file."""

    def checked(tmp: Path) -> None:
        write(tmp)
        if not tmp.is_file():
            raise CacheError(f"creating {what} wrote no file at the path it was given ({tmp})")

    write_atomic(path, checked, suffix=suffix)


def _dump_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise CacheError(f"cannot store as JSON: {exc}") from None


def _read_json_file(path: Path) -> Any:
    """The parsed file, or ``_MISSING`` when it is absent or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return _MISSING


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


__all__ = [
    "CREATED_LOG",
    "KEY_LENGTH",
    "ArtifactCache",
    "CacheError",
    "canonical_json",
    "default_cache_root",
    "file_digest",
]
