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


__all__ = ["printable", "printable_lines"]
