"""Glob patterns over a tree that may hold symbolic-link loops.

``glob.glob(pattern, recursive=True)`` follows every link to a folder, so ``runs/**/*.pt``
over a link that points back up the tree walks the loop again and again (exponentially, with
two such links) until paths grow too long.  :func:`expand` walks each real folder once (a
visited set of ``(device, inode)``), and stops at a bound on the folders it visits.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from functools import lru_cache
from pathlib import Path

from .errors import ConfigError

#: how many folders one pattern may walk
MAX_FOLDERS = 100_000
_MAGIC = re.compile(r"[*?[]")


def expand(pattern: str, root: Path) -> list[str]:
    """The paths ``pattern`` matches (relative to ``root`` when it is relative), as
    ``glob.glob(pattern, root_dir=root, recursive=True)`` gives them, each real folder walked
    once; hidden names match only a pattern that names them with a dot."""
    if "**" not in pattern:
        return glob.glob(pattern, root_dir=root)  # no recursion: no loop to fall into
    absolute = Path(pattern).is_absolute()
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    rest = list(parts[len(fixed):])
    base = Path(*fixed) if fixed else Path(".")
    start = base if absolute else root / base
    found: list[str] = []
    visited: set[tuple[int, int]] = set()
    folders = 0
    stack = [(start, ())]
    while stack:
        folder, relative = stack.pop()
        try:
            info = folder.stat()
        except OSError:
            continue
        if (info.st_dev, info.st_ino) in visited:
            continue  # reached again through a link: walked already
        visited.add((info.st_dev, info.st_ino))
        folders += 1
        if folders > MAX_FOLDERS:
            raise ConfigError(f"{pattern!r} walks more than {MAX_FOLDERS:,} folders; give a "
                              "narrower pattern")
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            path = (*relative, entry.name)
            if _matches(tuple(rest), path):
                found.append(str(base.joinpath(*path)))
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir and _could_descend(tuple(rest), path):
                stack.append((Path(entry.path), path))
    return sorted(set(found))


@lru_cache(maxsize=4096)
def _segment(pattern: str, name: str) -> bool:
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        if _matches(rest, path):
            return True
        return bool(path) and not path[0].startswith(".") and _matches(pattern, path[1:])
    return bool(path) and _segment(head, path[0]) and _matches(rest, path[1:])


def _could_descend(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether a file below the folder ``path`` could still match ``pattern``."""
    if not path:
        return True
    if not pattern:
        return False
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return _could_descend(rest, path) or (not path[0].startswith(".")
                                              and _could_descend(pattern, path[1:]))
    return _segment(head, path[0]) and _could_descend(rest, path[1:])


__all__ = ["MAX_FOLDERS", "expand"]
