"""What ``fa-checks cache info | clear`` prints: where the cache is, what it holds or what was
cleared, as lines."""

from __future__ import annotations

from typing import Any


def megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def cache_summary(cache: Any, action: str, kind: str | None = None) -> list[str]:
    """``clear`` (of ``kind``, or of everything) and say what was left; ``info``: a table of
    the artifacts by kind."""
    from ..output.render import table
    from .index import cleared_lines

    if action == "clear":
        return cleared_lines(cache.root, kind, cache.clear(kind))
    kinds = cache.info()
    lines = [f"cache: {cache.root}" + ("" if kinds else " (empty)")]
    if kinds:
        rows = [[name, str(k["artifacts"]), megabytes(k["bytes"]), str(k["temporary_files"])]
                for name, k in kinds.items()]
        lines += table(["kind", "artifacts", "size", "temporary files"], rows)
    return lines


__all__ = ["cache_summary", "megabytes"]
