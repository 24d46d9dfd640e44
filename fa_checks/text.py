"""Strings that came from a file or a path, made safe to show on a terminal.

A report's ids, sentences and error entries, a checkpoint's file name, a value read from a
pickle: any of them may hold escape sequences (which repaint the table a person reads) or bidi
overrides (which reorder what they see).  :func:`printable` is the one place they are escaped;
every face shows such strings through it.  The HTML page escapes for HTML on its own.
"""

from __future__ import annotations

from typing import Any

from .values import printable


def printable_lines(lines: Any) -> list[str]:
    """Each line made :func:`printable` (the newlines between them are ours)."""
    return [printable(line) for line in lines]


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


__all__ = ["MAX_NAME", "printable", "printable_lines", "short_name"]
