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
    for l, g in enumerate(growth[:len(norms) - 1]):  # the blocks between two hidden states
        a, b = norms[l], norms[l + 1]
        if drawable(a, log=True) and drawable(b, log=True):
            where, transform = (l + 0.5, math.sqrt(a * b)), top.transData
        else:
            where, transform = (l + 0.5, 0.5), top.get_xaxis_transform()
        text = top.text(*where, f"×{fmt(g)}", transform=transform, ha="center", va="bottom",
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
