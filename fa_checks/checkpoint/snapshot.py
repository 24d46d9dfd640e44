"""A checkpoint read once: the bytes that are hashed are the bytes that are checked and loaded.

A report is cached under the digest of the checkpoint it was computed from.  Hashing the file
and then loading it by name would let a file replaced in between (by another process, or a
``pytest -n 2`` worker) be evaluated under the old bytes' digest, and its report later served
for them.  :func:`take_snapshot` copies the file once, hashing as it copies, into a private
temporary file (in memory when small) that nobody else can reach; the checks of
:mod:`.torchfile` and ``torch.load`` then read that copy.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..limits import Limits, default_limits
from .errors import CheckpointError
from .torchfile import FileRefused, open_regular_file

#: a checkpoint up to this size is copied into memory; a larger one into an unlinked temp file
SPOOL_BYTES = 256 * 2**20
KEY_LENGTH = 20


@dataclass
class Snapshot:
    """A private copy of a checkpoint's bytes, its SHA-256 and its size."""

    path: Path
    handle: IO[bytes]
    size: int
    sha256: str

    @property
    def digest(self) -> str:
        """The content address a cache key holds (the first 20 hex digits)."""
        return self.sha256[:KEY_LENGTH]

    def close(self) -> None:
        self.handle.close()


def take_snapshot(path: str | Path, limits: Limits | None = None, *,
                  trust: bool = False) -> Snapshot:
    """Copy ``path`` (a regular file within ``limits.max_file_bytes``) once, hashing it; a
    refusal is a :class:`CheckpointError` naming the file.  A file that cannot be a torch
    checkpoint at all (neither a zip archive with its end record nor a pickle: a sparse file
    of zeros, random bytes) is refused before it is copied, unless it is ``trust``-ed (torch's
    oldest format is a tar archive)."""
    from ..values import printable

    path = Path(path)
    limits = limits or default_limits()
    try:
        source, _ = open_regular_file(path, limits)
    except FileRefused as exc:
        raise CheckpointError(f"{printable(path)}: {exc}") from None
    problem = None if trust else _not_a_torch_file(source)
    if problem is not None:
        source.close()
        raise CheckpointError(f"{printable(path)}: {problem}")
    copy = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
    try:
        digest, size = hashlib.sha256(), 0
        with source:
            while chunk := source.read(1 << 20):
                size += len(chunk)
                if size > limits.max_file_bytes:  # it grew while it was read
                    raise CheckpointError(f"{printable(path)}: grew past the limit "
                                          f"max_file_bytes={limits.max_file_bytes:,} while "
                                          "it was read")
                digest.update(chunk)
                copy.write(chunk)
        copy.seek(0)
    except BaseException:
        copy.close()
        raise
    return Snapshot(path, copy, size, digest.hexdigest())


def _not_a_torch_file(handle: IO[bytes]) -> str | None:
    """Why the file cannot be a torch checkpoint, or None: it must be a zip archive (local
    header first, end record last: torch writes no comment) or begin with a pickle (the
    legacy format).  Read without moving the file's position."""
    import os

    descriptor = handle.fileno()
    size = os.fstat(descriptor).st_size
    head = os.pread(descriptor, 4, 0)
    if size == 0:
        return "is empty or truncated (it holds no bytes)"
    if head == b"PK\x03\x04":
        if size >= 22 and os.pread(descriptor, 4, size - 22) == b"PK\x05\x06":
            return None
        return "is truncated or corrupt: not a complete zip archive (no end record)"
    if head[:1] == b"\x80":
        return None
    return ("is not a torch checkpoint (neither a zip archive nor a pickle); give a file "
            "torch.save wrote")


__all__ = ["Snapshot", "take_snapshot"]
