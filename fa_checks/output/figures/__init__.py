"""The figures of a report: where and when a run failed, drawn from the report's own numbers.

Each function takes the plain JSON data of a report (a *subject entry*: ``Report.to_dict()``
plus ``id``, ``method``, ``seed``, ``path``, ``history``, ``error``; or an *across-seeds
entry*) and returns a :class:`matplotlib.figure.Figure` whose lines, bars and reference lines
hold exactly those numbers, so a test can read them back (``line.get_ydata()``).

=========  ============================================================================
profile    median per-sample ``||h_0..h_L||`` (log), each block's growth written on it,
           the growth per block against the D1 limit, the block that fired in red
history    ``||h_L||`` and ``||g_L||`` per epoch against the D2 floor, test accuracy
           against the frozen-blocks baseline, the largest block growth against D1
credit     cosine, pooled cosine and rho per layer over the fresh-feedback null band
           (layers at or under it ringed in red), and nudging per layer
seeds      each seed's D3 margin, their mean and the one-sided lower bound, against
           the threshold
=========  ============================================================================

Nothing here raises on a missing or non-finite number: what cannot be drawn is left out and
a note on the figure says what is missing.  matplotlib is imported inside the functions (a run
that asks for no figure never loads it), and no pyplot state is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .credit import at_or_under_null, credit_per_layer, d4_at_chance, invalid_layers
from .drawing import (
    RED,
    STYLE,
    SUBJECT_FIGURES,
    entry_section,
    fmt,
    notes,
    number,
    numbers,
)
from .history import history_series, training_history
from .profile import scale_profile
from .seeds import across_seeds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_FUNCTIONS: dict[str, Callable[[Mapping[str, Any]], Figure]] = {
    "profile": scale_profile,
    "history": training_history,
    "credit": credit_per_layer,
}


def missing_figures(entry: Mapping[str, Any]) -> dict[str, str]:
    """The subject figures that have nothing to show, with the sentence saying why."""
    if entry.get("error") or entry.get("verdict") == "ERROR":
        return {name: "the subject could not be evaluated" for name in SUBJECT_FIGURES}
    out = {}
    if not numbers(entry_section(entry, "D1").get("hidden_norms")):
        out["profile"] = "no hidden-state norms in this report"
    if not history_series(entry):
        out["history"] = "no training history: the checkpoint records none"
    if not isinstance(entry.get("credit"), Mapping):
        out["credit"] = ("no credit metrics: the method gives no credit signal, or they were "
                         "not computed")
    return out


def subject_figures(entry: Mapping[str, Any]) -> dict[str, Figure]:
    """The figures of one subject that have something to show, by name, in the page's order."""
    skip = missing_figures(entry)
    return {name: draw(entry) for name, draw in FIGURE_FUNCTIONS.items() if name not in skip}


__all__ = [
    "FIGURE_FUNCTIONS",
    "RED",
    "STYLE",
    "SUBJECT_FIGURES",
    "across_seeds",
    "at_or_under_null",
    "credit_per_layer",
    "d4_at_chance",
    "fmt",
    "invalid_layers",
    "missing_figures",
    "notes",
    "number",
    "numbers",
    "scale_profile",
    "subject_figures",
    "training_history",
]
