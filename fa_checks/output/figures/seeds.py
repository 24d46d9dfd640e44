"""4. Across seeds: each seed's D3 margin, the mean and the one-sided lower bound."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .drawing import (
    BLUE,
    GREEN,
    RED,
    add_legend,
    add_note,
    fmt,
    is_finite_number,
    mark_empty,
    new_figure,
    number,
    numbers,
    plotted,
    set_title,
    styled,
)


# -- 4. across seeds ---------------------------------------------------------------------------
@styled
def across_seeds(summaries: Sequence[Mapping[str, Any]]) -> Figure:
    """Each seed's D3 margin per method, the mean, and the one-sided lower bound on the mean
    against the threshold (red when the gate fires)."""
    summaries = [s for s in summaries if isinstance(s, Mapping)]
    figure, (ax,) = new_figure(1, 2.8)
    set_title(figure, "D3 margin across seeds")
    if not summaries:
        mark_empty(ax, "no across-seeds summary")
        return figure
    missing = []
    thresholds: dict[float, None] = {}
    for i, summary in enumerate(summaries):
        name = str(summary.get("label") or summary.get("method") or f"group {i}")
        margins = numbers(summary.get("margins_pp"))
        offsets = ([0.0] if len(margins) == 1 else
                   [-0.18 + 0.36 * k / (len(margins) - 1) for k in range(len(margins))])
        (points,) = ax.plot([i + o for o in offsets], plotted(margins), linestyle="none",
                            marker="o", color=BLUE, alpha=0.8,
                            label="one seed's margin" if i == 0 else None)
        points.set_gid(f"margins_{i}")
        mean = number(summary.get("mean_margin_pp"))
        bound = number(summary.get("lower_bound_pp"))
        fires = summary.get("fires") is True
        if is_finite_number(mean):
            (line,) = ax.plot([i - 0.3, i + 0.3], [mean, mean], color="black", linewidth=2,
                              label="mean" if i == 0 else None)
            line.set_gid(f"mean_{i}")
        if is_finite_number(bound):
            (mark,) = ax.plot([i], [bound], marker="v", markersize=7, linestyle="none",
                              color=RED if fires else GREEN,
                              label="one-sided lower bound" if i == 0 else None)
            mark.set_gid(f"bound_{i}")
            if is_finite_number(mean):
                ax.plot([i, i], [bound, mean], color=RED if fires else GREEN, linewidth=1)
        else:
            n = summary.get("n")
            missing.append(f"{name}: no lower bound ({fmt(bound)}; {n} seed(s))")
        threshold = number(summary.get("threshold_pp"))
        if is_finite_number(threshold):
            thresholds[threshold] = None
        bad = [fmt(m) for m in margins if m is not None and not is_finite_number(m)]
        if bad:
            missing.append(f"{name}: margins not drawn: {', '.join(bad)}")
    for threshold in thresholds:
        line = ax.axhline(threshold, color=RED, linestyle="--", linewidth=1,
                          label=f"threshold {threshold:g} pp")
        line.set_gid("threshold")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(range(len(summaries)))
    ax.set_xticklabels([f"{s.get('label') or s.get('method') or i}\nn={s.get('n')}"
                        for i, s in enumerate(summaries)])
    for label in ax.get_xticklabels():
        label.set_parse_math(False)
    ax.set_xlim(-0.6, len(summaries) - 0.4)
    ax.set_ylabel("D3 margin (pp)")
    add_legend(ax, ncols=2)
    if missing:
        add_note(ax, missing)
    return figure


#: one subject's figure functions, by name
