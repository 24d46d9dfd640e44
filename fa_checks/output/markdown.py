"""The CI job's page: the verdict table, the comparison and the failing sentences as Markdown.

Both faces call :func:`write_job_page`: it writes ``--md PATH`` / ``--fa-md PATH`` when given,
appends the same text to ``$GITHUB_STEP_SUMMARY`` when that is set (GitHub Actions shows it on
the job's page), and returns ``::error`` workflow commands for the failing subjects and the
regressions when ``GITHUB_ACTIONS`` is ``true``.  Every string read from a report is escaped,
so a subject's id cannot draw a table, a link or HTML on the page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..compare.diff import Comparison

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
ACTIONS_ENV = "GITHUB_ACTIONS"
TITLE = "fa-checks"
#: what can start emphasis, code, a link or a cell inside a line (every string we write sits
#: after "| " or "- ", so line-start syntax such as "#" or "1." cannot apply)
_SPECIAL = re.compile(r"([\\`*_{}\[\]|~])")


def md_escape(text: Any) -> str:
    """Text as literal Markdown (GitHub flavour) inside a line: control characters and
    newlines folded, the punctuation of emphasis, code, links and tables backslash-escaped,
    ``<``, ``>`` and ``&`` as entities (no HTML)."""
    folded = "".join(c if c.isprintable() else " " for c in str(text))
    escaped = _SPECIAL.sub(r"\\\1", folded)
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return lines


def markdown_page(entries: Sequence[Mapping[str, Any]], comparison: Comparison | None = None,
                  *, title: str = TITLE) -> str:
    """The job page's section: verdicts, failing sentences, then the comparison."""
    from ..report import Report, read_entries
    from .render import HEADER, verdict_row

    items = read_entries([e for e in entries if isinstance(e, Mapping)])
    passed = sum(1 for i in items if isinstance(i, Report) and i.passed)
    lines = [f"## {md_escape(title)}: {passed} of {len(items)} subjects passed", ""]
    lines += md_table(HEADER, [verdict_row(item) for item in items])
    failing = []
    for item in items:
        if isinstance(item, Report):
            failing += [f"{item.id}: {sentence}" for sentence in item.failing_sentences()]
        else:
            failing.append(f"{item.get('id') or '?'}: ERROR: {item.get('error') or ''}")
    if failing:
        lines += ["", "**Failing**", ""] + [f"- {md_escape(s)}" for s in failing]
    if comparison is not None:
        lines += ["", comparison_markdown(comparison)]
    return "\n".join(lines) + "\n"


def comparison_markdown(comparison: Comparison) -> str:
    header, rows = comparison.table()
    lines = [f"### Comparison: {md_escape(comparison.new_name)} against "
             f"{md_escape(comparison.base_name)}", ""]
    lines += md_table(header, rows) if rows else ["(no subject in both reports)"]
    lines += [""] + [f"- {md_escape(n)}" for n in comparison.notes()]
    lines += ["", f"**{md_escape(comparison.summary())}**"]
    lines += [f"- REGRESSION {md_escape(r.sentence())}" for r in comparison.regressions]
    return "\n".join(lines)


def _command_text(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF encoded as the runner expects."""
    folded = "".join(c if c.isprintable() else " " for c in text)
    return folded.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotations(entries: Sequence[Mapping[str, Any]],
                comparison: Comparison | None = None) -> list[str]:
    """``::error`` commands: one per failing subject and one per regression."""
    from ..report import Report, read_entries

    lines = []
    for item in read_entries([e for e in entries if isinstance(e, Mapping)]):
        if isinstance(item, Report) and not item.passed:
            why = "; ".join(item.failing_sentences())
            lines.append(f"::error title=fa-checks {item.verdict}::"
                         + _command_text(f"{item.id}: {why}"))
    for regression in comparison.regressions if comparison is not None else ():
        lines.append("::error title=fa-checks regression::" + _command_text(regression.sentence()))
    return lines


def write_job_page(entries: Sequence[Mapping[str, Any]], comparison: Comparison | None = None,
                   *, md_path: str | Path | None = None,
                   environ: Mapping[str, str] | None = None) -> tuple[list[Path], list[str]]:
    """Write the page where it is asked for; returns the files written and the ``::error``
    lines to print (empty outside GitHub Actions)."""
    from ..files import write_atomic

    env = os.environ if environ is None else environ
    page = markdown_page(entries, comparison)
    written = []
    if md_path is not None:
        written.append(write_atomic(md_path, lambda tmp: tmp.write_text(page, encoding="utf-8"),
                                    suffix=".md"))
    summary = env.get(SUMMARY_ENV, "").strip()
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:  # the runner's file: append
            handle.write(page)
        written.append(Path(summary))
    commands = annotations(entries, comparison) if env.get(ACTIONS_ENV) == "true" else []
    return written, commands


__all__ = ["annotations", "comparison_markdown", "markdown_page", "md_escape", "md_table",
           "write_job_page"]
