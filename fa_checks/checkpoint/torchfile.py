"""Reading a file ``torch.save`` wrote, when someone else may have written it.

:func:`read_torch_file` checks the file before ``torch.load`` sees it, so that a file can only
be refused or read as the plain data it declares:

* **Only a regular file** is opened (it is ``stat``-ed first and opened with ``O_NONBLOCK``, so a
  FIFO cannot make the tool wait; a directory, device, socket or FIFO is refused), and its size
  is bounded (``Limits.max_file_bytes``).  The checks and ``torch.load`` read the same open file.
* **A zip archive** (every ``torch.save`` since torch 1.6) is verified member by member: no
  member is compressed (torch never compresses, and a stored member cannot inflate), every
  member's CRC-32 matches its bytes (torch does not check them: 64 random bytes written into a
  checkpoint would otherwise be read as weights), and the members, their data descriptors, the
  central directory and the end record tile the file with no byte left over (so the reader in
  zipfile and torch's own see the same archive).
* **The pickle is scanned** (untrusted files only; :mod:`fa_checks.checkpoint.pickle_scan`) by an
  unpickler that imports nothing and builds nothing: every global it names must be one a plain
  state dict needs (tensor rebuilders, storage types, ``OrderedDict``, numpy scalars), every
  storage must fit in the bytes present, and every tensor must fit its storage (a tensor whose
  shape needs more elements than its storage holds, such as an ``expand``-ed one with stride 0,
  is refused: a 7 KB file once made a process allocate 8.75 GB), with a real floating or integer
  dtype and a bounded count.  Only then does ``torch.load(weights_only=True)`` read it.

**The legacy format** (``_use_new_zipfile_serialization=False``, torch < 1.6) gets the same
regular-file, size, pickle and tensor checks, and each storage's length in the file is compared
with its declaration before anything is allocated; but it carries **no checksum**, so a flipped
byte inside a tensor's data cannot be detected and is read as a different weight.  The oldest
(tar) format is refused unless the file is trusted.

A trusted file (``trust=True``) skips the pickle scan and is loaded with
``weights_only=False``: it can run any code, and nothing here pretends otherwise.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..limits import LIMITS_VARIABLE, Limits
from .pickle_scan import (
    ALLOWED_DTYPES,
    FileRefused,
    PickleScan,
    check_metadata_size,
    check_scanned_tensors,
    check_view,
    element_size,
    first_line,
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_LOCAL_HEADER = struct.Struct(zipfile.structFileHeader)
_END_RECORD_SIZE = 22


@dataclass
class TorchFile:
    """What :func:`read_torch_file` checked, and the open file it checked."""

    handle: BinaryIO
    size: int
    is_zip: bool
    #: storage key -> (dtype, elements), from the scan (empty for a trusted file)
    storages: dict[str, tuple[str, int]] = field(default_factory=dict)
    tensors: int = 0


# -- the file itself ----------------------------------------------------------------------------
def open_regular_file(path: Path, limits: Limits) -> tuple[BinaryIO, int]:
    """``path`` opened for reading if it is a regular file within the size limit."""
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise FileRefused("no such checkpoint file") from None
    _require_regular(before.st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        after = os.fstat(descriptor)
        _require_regular(after.st_mode)  # replaced between stat and open
        if after.st_size > limits.max_file_bytes:
            raise FileRefused(
                f"is {after.st_size:,} bytes, above the limit max_file_bytes="
                f"{limits.max_file_bytes:,}; if you mean it, raise it with "
                f"{LIMITS_VARIABLE}=max_file_bytes={after.st_size}"
            )
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    return handle, after.st_size


def _require_regular(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise FileRefused(f"is {kind}, not a checkpoint file; give the path of a file")


def read_torch_file(path: Path, *, trust: bool, limits: Limits,
                    opened: tuple[BinaryIO, int] | None = None) -> TorchFile:
    """Open ``path`` and check it as the module docstring says; the caller closes ``handle``.

    ``opened``: the file already open (a :class:`~.snapshot.Snapshot`'s private copy and its
    size), checked and returned instead of opening ``path`` again.  Every refusal is a
    :class:`FileRefused` whose message follows the file's name.
    """
    if opened is not None and opened[1] > limits.max_file_bytes:
        opened[0].close()
        raise FileRefused(f"is {opened[1]:,} bytes, above the limit max_file_bytes="
                          f"{limits.max_file_bytes:,}")
    handle, size = opened if opened is not None else open_regular_file(path, limits)
    try:
        head = handle.read(4)
        handle.seek(0)
        check = _check_zip if head == b"PK\x03\x04" else _check_legacy
        try:
            checked = check(handle, size, trust=trust, limits=limits)
        except (FileRefused, MemoryError, OSError):
            raise
        except Exception as exc:  # parsers meet hostile bytes with many exception types
            raise FileRefused(
                f"is truncated or corrupt ({type(exc).__name__}: {first_line(exc)})"
            ) from None
        handle.seek(0)
        return checked
    except BaseException:
        handle.close()
        raise


# -- zip archives -------------------------------------------------------------------------------
def _check_zip(handle: BinaryIO, size: int, *, trust: bool, limits: Limits) -> TorchFile:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
            NotImplementedError) as exc:
        raise FileRefused(
            f"is truncated or corrupt: not a complete zip archive ({first_line(exc)})"
        ) from None
    members = archive.infolist()
    if len(members) > limits.max_tensors + 16:
        raise FileRefused(
            f"holds {len(members):,} archive members, above the limit max_tensors="
            f"{limits.max_tensors:,}; if you mean it, raise it with "
            f"{LIMITS_VARIABLE}=max_tensors={len(members)}"
        )
    _check_names(members)
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED:
            raise FileRefused(
                f"member {info.filename!r} is compressed, which torch.save never does; the "
                "archive was not written by torch.save"
            )
        if info.file_size != info.compress_size or info.file_size > size:
            raise FileRefused(f"member {info.filename!r} declares a size the file cannot hold")
    _check_tiling(handle, archive, members, size)
    for info in members:
        _check_crc(archive, info)
    pickles = [info for info in members if info.filename.endswith("/data.pkl")
               or info.filename == "data.pkl"]
    if len(pickles) != 1:
        raise FileRefused("is a zip archive but not a torch checkpoint (it needs one data.pkl)")
    # torch reads every record under the first member's folder: all must share it
    folders = {info.filename.partition("/")[0] for info in members}
    if len(folders) != 1 or "/" not in pickles[0].filename:
        raise FileRefused("is a zip archive whose members are not all in one folder, as "
                          "torch.save writes them")
    checked = TorchFile(handle=handle, size=size, is_zip=True)
    if trust:
        return checked
    check_metadata_size(pickles[0].file_size, limits)
    prefix = pickles[0].filename[: -len("data.pkl")]
    scan = PickleScan(io.BytesIO(archive.read(pickles[0])))
    scan.run()
    sizes = {info.filename: info.file_size for info in members}
    for key, (dtype, elements) in scan.storages.items():
        record = f"{prefix}data/{key}"
        need = elements * element_size(dtype)
        if record not in sizes:
            raise FileRefused(f"declares a tensor storage {key!r} that the archive lacks")
        if sizes[record] < need:
            raise FileRefused(
                f"storage {key!r} declares {need:,} bytes but its member holds "
                f"{sizes[record]:,}"
            )
    check_scanned_tensors(scan, limits)
    checked.storages, checked.tensors = scan.storages, len(scan.tensors)
    return checked


def _check_names(members: list[zipfile.ZipInfo]) -> None:
    """Every member name names one member, for every reader: torch's own reader (miniz) may
    match names without regard to case, so ``data.pkl`` beside ``DATA.PKL`` could be scanned
    as one and loaded as the other.  Refused: exact or case-insensitive duplicates, more than
    one pickle, and names that readers normalise differently (backslashes, ``..``, absolute
    paths, control characters)."""
    from ..values import printable

    seen: dict[str, str] = {}
    pickles = 0
    for info in members:
        name = info.filename
        folded = name.casefold()
        if folded in seen:
            raise FileRefused(
                f"holds two archive members named {printable(seen[folded])!r} and "
                f"{printable(name)!r}, which a reader may take for one another; torch.save "
                "never writes such an archive")
        seen[folded] = name
        parts = name.split("/")
        if ("\\" in name or name.startswith("/") or ".." in parts or "" in parts[:-1]
                or not name.isprintable()):
            raise FileRefused(f"holds an archive member with an ambiguous name "
                              f"{printable(name)!r}; torch.save never writes one")
        pickles += folded.endswith(".pkl")
    if pickles > 1:
        raise FileRefused(f"holds {pickles} pickles; a torch checkpoint holds one data.pkl, "
                          "and which one a reader loads would be ambiguous")


def _check_tiling(handle: BinaryIO, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo],
                  size: int) -> None:
    """Members, data descriptors, directory and end record cover the file, nothing else."""
    position = 0
    for info in sorted(members, key=lambda i: i.header_offset):
        if info.header_offset != position:
            raise FileRefused(
                f"holds bytes outside its archive members (before {info.filename!r}); it is "
                "damaged or was not written by torch.save"
            )
        handle.seek(position)
        header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size:
            raise FileRefused("is truncated inside its archive")
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != zipfile.stringFileHeader:
            raise FileRefused(f"member {info.filename!r} has a damaged header")
        position += _LOCAL_HEADER.size + fields[10] + fields[11] + info.compress_size
        if info.flag_bits & 0x08:  # a data descriptor follows: the CRC and sizes again
            position = _skip_descriptor(handle, info, position)
    start_dir = getattr(archive, "start_dir", position)
    if start_dir != position:
        raise FileRefused("holds bytes between its members and its directory; it is damaged")
    handle.seek(size - _END_RECORD_SIZE)
    end = handle.read(_END_RECORD_SIZE)
    if len(end) != _END_RECORD_SIZE or end[:4] != zipfile.stringEndArchive or end[-2:] != b"\0\0":
        raise FileRefused("holds bytes after its archive directory; it is damaged")


def _skip_descriptor(handle: BinaryIO, info: zipfile.ZipInfo, position: int) -> int:
    """The position after ``info``'s data descriptor, which must repeat its CRC and sizes."""
    handle.seek(position)
    descriptor = handle.read(28)
    if descriptor[:4] == b"PK\x07\x08":  # the optional signature
        descriptor, position = descriptor[4:], position + 4
    sizes = (info.compress_size, info.file_size)
    if len(descriptor) >= 12 and struct.unpack("<LLL", descriptor[:12]) == (info.CRC, *sizes):
        return position + 12
    if len(descriptor) >= 20 and struct.unpack("<LQQ", descriptor[:20]) == (info.CRC, *sizes):
        return position + 20  # zip64 sizes
    raise FileRefused(f"is corrupt: member {info.filename!r} has a damaged data descriptor")


def _check_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    try:
        with archive.open(info) as member:
            while member.read(1 << 20):
                pass
    except zipfile.BadZipFile as exc:
        if "CRC" in str(exc):
            raise FileRefused(f"is corrupt: member {info.filename!r} fails its CRC") from None
        raise FileRefused(f"is corrupt: member {info.filename!r}: {first_line(exc)}") from None
    except (EOFError, ValueError, struct.error, NotImplementedError, RuntimeError) as exc:
        raise FileRefused(f"is corrupt: member {info.filename!r}: {first_line(exc)}") from None


# -- the legacy format --------------------------------------------------------------------------
def _check_legacy(handle: BinaryIO, size: int, *, trust: bool, limits: Limits) -> TorchFile:
    checked = TorchFile(handle=handle, size=size, is_zip=False)
    if trust:
        return checked
    if _is_tar(handle):
        refusal = FileRefused(
            "is in torch's oldest (tar) format, which fa-checks reads only from a trusted file"
        )
        refusal.needs_trust = True
        raise refusal
    # the pickles come first and the storages' bytes after them: scan at most the first
    # max_metadata_bytes, so a huge pickle cannot make the scan itself large
    handle.seek(0)
    head = io.BytesIO(handle.read(limits.max_metadata_bytes))

    def scan_next() -> PickleScan:
        scan = PickleScan(head)
        try:
            scan.value = scan.run()
        except FileRefused:
            if size > limits.max_metadata_bytes and head.tell() >= limits.max_metadata_bytes:
                check_metadata_size(size, limits)  # ran out of the budget, not of the file
            raise
        return scan

    for what, expected in (("magic number", _LEGACY_MAGIC), ("protocol", _LEGACY_PROTOCOL)):
        if scan_next().value != expected:
            raise FileRefused(f"is not a torch checkpoint (its {what} is wrong)")
    scan_next()  # sys_info: a small dict of sizes
    scan = scan_next()
    keys = scan_next().value
    handle.seek(head.tell())
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
            or set(keys) != set(scan.storages) or len(set(keys)) != len(keys):
        raise FileRefused("is damaged: its list of storages does not match its tensors")
    for key in keys:
        dtype, elements = scan.storages[key]
        count = handle.read(8)
        if len(count) != 8:
            raise FileRefused("is truncated: a storage is missing")
        (declared,) = struct.unpack("<q", count)
        if declared != elements:
            raise FileRefused(
                f"is damaged: storage {key!r} is declared with {elements:,} elements but "
                f"stored with {declared:,}"
            )
        handle.seek(elements * element_size(dtype), os.SEEK_CUR)
        if handle.tell() > size:
            raise FileRefused("is truncated: a storage holds fewer bytes than it declares")
    if handle.tell() != size:
        raise FileRefused("holds bytes after its last storage; it is damaged")
    check_scanned_tensors(scan, limits)
    checked.storages, checked.tensors = scan.storages, len(scan.tensors)
    return checked


def _is_tar(handle: BinaryIO) -> bool:
    handle.seek(0)
    try:
        with tarfile.open(fileobj=handle, mode="r:"):
            return True
    except Exception:  # anything tarfile makes of bytes that are not a tar archive
        return False
    finally:
        handle.seek(0)


__all__ = ["ALLOWED_DTYPES", "FileRefused", "TorchFile", "check_view", "open_regular_file",
           "read_torch_file"]
