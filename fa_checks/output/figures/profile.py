"""1. The scale profile: median per-sample ||h_l|| per layer and each block's growth (D1)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .drawing import (
    BLUE,
    GREY,
    RED,
    _undrawn,
    add_legend,
    add_note,
    drawable,
    entry_label,
    entry_section,
    fmt,
    layer_ticks,
    log_axis,
    mark_empty,
    mark_not_drawn,
    new_figure,
    number,
    numbers,
    plotted,
    set_title,
    styled,
)

# -- 1. scale profile --------------------------------------------------------------------------
#: the share of the top axes kept under the lowest point, for the growth labels
LABEL_BAND = 0.22


def label_band(ax: Any, norms: list[float | None]) -> None:
    """Lower the log axis' bottom so the lowest drawn point sits above a band of
    :data:`LABEL_BAND` of the height (the decade of room above the highest stays)."""
    shown = [math.log10(v) for v in norms if drawable(v, log=True)]
    if not shown:
        return
    low, high = min(shown), max(shown) + 1.0
    # low - bottom = LABEL_BAND * (high - bottom), and at least the usual decade
    bottom = min(low - 1.0, (low - LABEL_BAND * high) / (1 - LABEL_BAND))
    ax.set_ylim(10 ** bottom, 10 ** high)

@styled
def scale_profile(entry: Mapping[str, Any]) -> Figure:
    """D1's numbers: the median per-sample norm of ``h_0..h_L`` on a log axis with each block's
    growth written between its points; below, the growth per block against the D1 limit.  The
    block that fired is red in both."""
    d1 = entry_section(entry, "D1")
    norms = numbers(d1.get("hidden_norms"))
    growth = numbers(d1.get("per_block_growth"))
    threshold = number(d1.get("threshold"))
    fired = d1.get("fires") is True
    worst = d1.get("worst_block")
    whole = isinstance(worst, int) and not isinstance(worst, bool)
    fired_block = worst if fired and whole and 0 <= worst < len(norms) - 1 else None

    figure, (top, bottom) = new_figure(2, 4.2, ratios=(3, 2))
    set_title(figure, f"{entry_label(entry)}: scale stability (D1)")
    if not norms:
        mark_empty(top, "no hidden-state norms in this report: the scale profile cannot be drawn")
        bottom.set_visible(False)
        return figure

    layers = list(range(len(norms)))
    y = plotted(norms, log=True)
    (line,) = top.plot(layers, y, marker="o", color=BLUE, label="median per-sample ||h_l||")
    line.set_gid("hidden_norms")
    log_axis(top, norms)
    top.set_ylabel("median ||h_l||")
    layer_ticks(top, len(norms))
    missing = _undrawn(norms, "h_", log=True)
    mark_not_drawn(top, layers, norms, log=True)
    if fired_block is not None and all(drawable(norms[i], log=True)
                                       for i in (fired_block, fired_block + 1)):
        (seg,) = top.plot([fired_block, fired_block + 1],
                          [norms[fired_block], norms[fired_block + 1]], color=RED, linewidth=3,
                          label=f"block {fired_block} fired D1")
        seg.set_gid("fired_block")
    label_band(top, norms)
    for l, g in enumerate(growth[:len(norms) - 1]):  # the blocks between two hidden states
        # in a band of their own under the line (never on it, nor on the red segment)
        text = top.text(l + 0.5, 0.03, f"×{fmt(g)}", transform=top.get_xaxis_transform(),
                        ha="center", va="bottom",
                        fontsize=7, color=RED if l == fired_block else "black",
                        fontweight="bold" if l == fired_block else "normal")
        text.set_gid(f"growth_{l}")
    add_legend(top)
    if missing:
        add_note(top, [f"not drawn on the log axis: {', '.join(missing)}"])

    # the growth per block against the limit
    if not growth:
        mark_empty(bottom, "no blocks: nothing can grow")
        return figure
    blocks = list(range(len(growth)))
    heights = plotted(growth, log=True)
    colours = [RED if l == fired_block else GREY for l in blocks]
    bottom.bar(blocks, [h if math.isfinite(h) else 0 for h in heights], color=colours,
               width=0.6, label="growth ||h_{l+1}|| / ||h_l||")
    log_axis(bottom, [*growth, threshold, 1.0])
    bottom.set_ylabel("growth per block")
    bottom.set_xticks(blocks)
    bottom.set_xticklabels([f"block {l}" for l in blocks])
    bottom.set_xlim(-0.5, len(growth) - 0.5)
    if drawable(threshold, log=True):
        limit = bottom.axhline(threshold, color=RED, linestyle="--", linewidth=1,
                               label=f"D1 limit {fmt(threshold)}×")
        limit.set_gid("threshold")
    mark_not_drawn(bottom, blocks, growth, log=True)
    add_legend(bottom)
    bad = _undrawn(growth, "block ", log=True)
    if bad:
        add_note(bottom, [f"not drawn: growth of {', '.join(bad)}"])
    return figure
