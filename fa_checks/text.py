"""Strings that came from a file or a path, made safe to show on a terminal.

A report's ids, sentences and error entries, a checkpoint's file name, a value read from a
pickle: any of them may hold escape sequences (which repaint the table a person reads) or bidi
overrides (which reorder what they see).  :func:`printable` is the one place they are escaped;
every face shows such strings through it.  The HTML page escapes for HTML on its own.
"""

from __future__ import annotations

import unicodedata
from typing import Any

#: Unicode categories that are not shown as themselves: controls (C0, DEL, C1), format
#: characters (bidi overrides and isolates, zero-width joiners), line and paragraph
#: separators, surrogates and unassigned code points
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: Any) -> str:
    """``text`` (any value: it is ``str``-ed) with every control, format, separator or
    unassigned character escaped as ``\\xNN`` / ``\\uNNNN``; printable text is unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in text)


def printable_lines(lines: Any) -> list[str]:
    """Each line made :func:`printable` (the newlines between them are ours)."""
    return [printable(line) for line in lines]


__all__ = ["printable", "printable_lines"]
