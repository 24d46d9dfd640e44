"""The comparison with a base report as a section of the HTML page (the cells are the text
the terminal shows; every string escaped)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def comparison_section(data: Mapping[str, Any] | None) -> str:
    """The comparison against a base report (``Comparison.to_dict()``: text cells)."""
    if not data:
        return ""
    header, rows = list(data.get("header") or []), list(data.get("rows") or [])
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        ('<tr class="fail">' if any(str(c).endswith(" !") for c in row) else "<tr>")
        + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    notes = "".join(f"<li>{_e(n)}</li>" for n in data.get("notes") or [])
    found = "".join(f'<li><span class="verdict fail">REGRESSION</span> {_e(r)}</li>'
                    for r in data.get("regressions") or [])
    return (f'<section id="comparison"><h2>Comparison: {_e(data.get("new"))} against '
            f'{_e(data.get("base"))}</h2><table class="verdicts comparison"><thead><tr>{head}'
            f"</tr></thead><tbody>{body}</tbody></table><ul>{notes}</ul>"
            f'<p class="meta">{_e(data.get("summary"))}</p><ul>{found}</ul></section>')


__all__ = ["comparison_section"]
