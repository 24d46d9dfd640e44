"""The one renderer of verdicts: the table every face prints, the per-layer table, the lines.

``fa-checks check``, ``fa-checks report``, ``fa-checks sweep``, the pytest terminal summary and
the HTML page all draw the verdict table here, from :class:`~fa_checks.report.Report` objects
(and error entries for subjects that could not be evaluated).  Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..report import (
    ERROR_VERDICT,
    MODE2_SENTENCE,
    AcrossSeeds,
    Report,
    format_number,
    format_percent,
    is_finite,
)
from ..values import printable

HEADER = ("subject", "accuracy", "D1 growth", "D2 |g_L|", "D3 margin", "verdict")

#: a row is a Report, or the JSON entry of a subject that could not be evaluated
Row = Report | Mapping[str, Any]


def mark(fires: bool | None) -> str:
    return "skip" if fires is None else ("FAIL" if fires else "ok")


def format_small(x: float | None) -> str:
    """A gradient norm: 5.07e-06 (non-finite as format_number writes it)."""
    return format_number(x) if x is None or not is_finite(x) else f"{x:.2e}"


def verdict_cell(report: Report, gated: Collection[str] | None = None) -> str:
    """``PASS``, ``FAIL(D1+D2+D3)  [mode 1]``, ``FAIL(D3)  [mode 2]``, ``FAIL(D1+D2+D3)
    [diverged]``, and what was not gated: ``PASS (D3 not checked)``; ``FAIL(D3) (not gated in
    this run)``."""
    text = report.verdict
    if report.d3.fires is None:
        text += " (D3 not checked)"
    if gated is not None and not set(report.failures) & set(gated) and report.failures:
        text += " (not gated in this run)"
    if report.divergence is not None:
        text += "  [diverged]"
    elif report.mode1:
        text += "  [mode 1]"
    elif report.mode2:
        text += "  [mode 2]"
    return text


def verdict_row(row: Row, gated: Collection[str] | None = None) -> list[str]:
    """The cells of one subject, as :data:`HEADER` names them."""
    if not isinstance(row, Report):
        reason = row.get("error") or "not evaluated"
        return [str(row.get("id") or "?"), "-", "-", "-", "-", f"{ERROR_VERDICT}: {reason}"]
    d1, d2, d3 = row.d1, row.d2, row.d3
    growth = format_number(d1.max_growth) + ("x" if is_finite(d1.max_growth) else "")
    margin = "-" if d3.margin_pp is None else (
        f"{d3.margin_pp:+.1f}pp" if is_finite(d3.margin_pp) else format_number(d3.margin_pp))
    return [
        row.id,
        format_percent(row.test_acc),
        f"{growth} {mark(d1.fires)}",
        f"{format_small(d2.g_L)} {mark(d2.fires)}",
        f"{margin} {mark(d3.fires)}",
        verdict_cell(row, gated),
    ]


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    # cells may come from a file (ids, error sentences): escaped before they are measured
    header = [printable(cell) for cell in header]
    body = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(header[i]), *(len(r[i]) for r in body)]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), *(line(r) for r in body)]


def verdict_table(rows: Sequence[Row], gated: Collection[str] | None = None) -> list[str]:
    """The verdict table as lines: one row per subject, in the order given.

    ``gated``: the diagnostics this run gated (None: every one it computed), so a table never
    reads as a verdict a run did not give.
    """
    return table(HEADER, [verdict_row(row, gated) for row in rows])


def gated_line(gated: Collection[str] | None) -> str | None:
    """The table's last line when a run gated less than every diagnostic, else None."""
    if gated is None:
        return None
    if not gated:
        return ("gated in this run: none of these diagnostics (your own tests ran; run without "
                "test paths for the built-in suite)")
    return f"gated in this run: {', '.join(sorted(gated))}"


def across_seeds_line(label: str, gate: AcrossSeeds | None, error: str | None = None) -> str:
    """``across seeds dfa: FAIL: mean D3 margin over 2 seeds is ...``."""
    if gate is None:
        return printable(f"across seeds {label}: {ERROR_VERDICT}: {error or 'not evaluated'}")
    return printable(f"across seeds {label}: {'FAIL' if gate.fires else 'PASS'}: "
                     f"{gate.explanation}")


_CREDIT_COLUMNS = ("cosine", "pooled_cosine", "rho", "nudging", "null_mean", "null_std",
                   "null_rho_mean", "null_rho_std")
#: the layer table's note on its ``ref`` column (shown where the table has credit figures)
REFERENCE_NOTE = ("ref: whether ||g_l|| is at or above D2's floor; a layer's credit figures "
                  "mean something only where it is (below: they measure numerical noise)")


def layer_table(report: Report) -> list[str]:
    """Per hidden state: ``||h_l||``, ``||g_l||``, whether D2's floor holds there (``ref``),
    the growth into it, the credit figures and D4's judgement of each block."""
    hidden, grads = report.d1.hidden_norms, report.d2.grad_norms
    valid = report.d2.valid or []
    growth = report.d1.per_block_growth
    credit, d4 = report.credit, report.d4
    columns = {} if credit is None else {
        name: getattr(credit, name) for name in _CREDIT_COLUMNS
        if getattr(credit, name) is not None}
    d4_columns = {} if d4 is None else {"p_cos": d4.p_cosine, "p_rho": d4.p_rho}
    header = ["layer", "||h_l||", "||g_l||", "ref", "growth", *columns, *d4_columns]
    if d4 is not None:
        header.append("D4")
    rows = []
    for l in range(max(len(hidden), len(grads))):
        row = [
            f"h_{l}",
            _at(hidden, l, format_number),
            _at(grads, l, format_small),
            ("ok" if valid[l] else "below") if l < len(valid) else "-",
            _at(growth, l - 1, format_number) if l > 0 else "-",
        ]
        row += [_at(values, l, _three) for values in columns.values()]
        row += [_at(values, l, _p) for values in d4_columns.values()]
        if d4 is not None:
            row.append(_at(d4.at_chance, l, lambda c: "chance" if c else "beats"))
        rows.append(row)
    return table(header, rows)


def _p(x: float | None) -> str:
    return format_number(x) if x is None or not is_finite(x) else f"{x:.3g}"


def _three(x: float | None) -> str:
    return format_number(x) if x is None or not is_finite(x) else f"{x:.3f}"


def _at(values: Sequence[Any], index: int, fmt: Any) -> str:
    if 0 <= index < len(values) and values[index] is not None:
        return fmt(values[index])
    return "-"


def subject_lines(report: Report, *, layers: bool = True) -> list[str]:
    """A subject's block under the table: its verdict, failing sentences, per-layer figures."""
    lines = [printable(f"{report.id}: {verdict_cell(report)}")]
    lines += [f"  {printable(sentence)}" for sentence in report.failing_sentences()]
    if report.d4 is not None and not (report.d4.gated and report.d4.fires):
        lines.append(f"  D4: {printable(report.d4.explanation)}")
    if report.mode2 and report.divergence is None:
        lines.append(f"  {MODE2_SENTENCE}")
    if layers:
        lines += [f"  {line}" for line in layer_table(report)]
        if report.credit is not None:
            lines.append(f"  {REFERENCE_NOTE}")
    return lines


def outcome_lines(rows: Sequence[Row], *, quiet: bool = False) -> list[str]:
    """The verdict table, then each report's sentences and per-layer figures (quiet: only the
    failing reports' sentences); nothing when no subject could be evaluated (the errors say
    it all)."""
    if not any(isinstance(row, Report) for row in rows):
        return []
    lines = verdict_table(rows)
    for row in rows:
        if isinstance(row, Report) and not (quiet and row.passed):
            lines += ["", *subject_lines(row, layers=not quiet)]
    return lines


def write_visual_report(
    entries: Sequence[Mapping[str, Any]],
    across_seeds: Sequence[Mapping[str, Any]] = (),
    *,
    html: str | Path | None = None,
    plots: str | Path | None = None,
    gated: Collection[str] | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> list[Path]:
    """The visual report of subjects' JSON entries: one HTML page (its verdict table drawn by
    this module, as the terminal's) and/or the figures as PNG files; the paths written.
    ``comparison``: a comparison against a base report (``Comparison.to_dict()``), a section.
    matplotlib is imported only here, when a report is asked for."""
    from ..report import read_entries
    from .html import write_html, write_pngs

    written = []
    if html is not None:
        rows = [verdict_row(row, gated) for row in read_entries(entries)]
        written.append(write_html(html, entries, across_seeds, table_header=HEADER,
                                  table_rows=rows, comparison=comparison))
    if plots is not None:
        written += write_pngs(plots, entries, across_seeds)
    return written


__all__ = [
    "HEADER",
    "across_seeds_line",
    "gated_line",
    "layer_table",
    "outcome_lines",
    "subject_lines",
    "table",
    "verdict_cell",
    "verdict_row",
    "verdict_table",
    "write_visual_report",
]
