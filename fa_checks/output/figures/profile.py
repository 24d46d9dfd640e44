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
    _drawable,
    _empty,
    _label,
    _layer_ticks,
    _legend,
    _log_axis,
    _mark_not_drawn,
    _new_figure,
    _note,
    _plotted,
    _section,
    _styled,
    _title,
    _undrawn,
    fmt,
    number,
    numbers,
)


# -- 1. scale profile --------------------------------------------------------------------------
@_styled
def scale_profile(entry: Mapping[str, Any]) -> Figure:
    """D1's numbers: the median per-sample norm of ``h_0..h_L`` on a log axis with each block's
    growth written between its points; below, the growth per block against the D1 limit.  The
    block that fired is red in both."""
    d1 = _section(entry, "D1")
    norms = numbers(d1.get("hidden_norms"))
    growth = numbers(d1.get("per_block_growth"))
    threshold = number(d1.get("threshold"))
    fired = d1.get("fires") is True
    worst = d1.get("worst_block")
    whole = isinstance(worst, int) and not isinstance(worst, bool)
    fired_block = worst if fired and whole and 0 <= worst < len(norms) - 1 else None

    figure, (top, bottom) = _new_figure(2, 4.2, ratios=(3, 2))
    _title(figure, f"{_label(entry)}: scale stability (D1)")
    if not norms:
        _empty(top, "no hidden-state norms in this report: the scale profile cannot be drawn")
        bottom.set_visible(False)
        return figure

    layers = list(range(len(norms)))
    y = _plotted(norms, log=True)
    (line,) = top.plot(layers, y, marker="o", color=BLUE, label="median per-sample ||h_l||")
    line.set_gid("hidden_norms")
    _log_axis(top, norms)
    top.set_ylabel("median ||h_l||")
    _layer_ticks(top, len(norms))
    missing = _undrawn(norms, "h_", log=True)
    _mark_not_drawn(top, layers, norms, log=True)
    if fired_block is not None and all(_drawable(norms[i], log=True)
                                       for i in (fired_block, fired_block + 1)):
        (seg,) = top.plot([fired_block, fired_block + 1],
                          [norms[fired_block], norms[fired_block + 1]], color=RED, linewidth=3,
                          label=f"block {fired_block} fired D1")
        seg.set_gid("fired_block")
    for l, g in enumerate(growth[:len(norms) - 1]):  # the blocks between two hidden states
        a, b = norms[l], norms[l + 1]
        if _drawable(a, log=True) and _drawable(b, log=True):
            where, transform = (l + 0.5, math.sqrt(a * b)), top.transData
        else:
            where, transform = (l + 0.5, 0.5), top.get_xaxis_transform()
        text = top.text(*where, f"×{fmt(g)}", transform=transform, ha="center", va="bottom",
                        fontsize=7, color=RED if l == fired_block else "black",
                        fontweight="bold" if l == fired_block else "normal")
        text.set_gid(f"growth_{l}")
    _legend(top)
    if missing:
        _note(top, [f"not drawn on the log axis: {', '.join(missing)}"])

    # the growth per block against the limit
    if not growth:
        _empty(bottom, "no blocks: nothing can grow")
        return figure
    blocks = list(range(len(growth)))
    heights = _plotted(growth, log=True)
    colours = [RED if l == fired_block else GREY for l in blocks]
    bottom.bar(blocks, [h if math.isfinite(h) else 0 for h in heights], color=colours,
               width=0.6, label="growth ||h_{l+1}|| / ||h_l||")
    _log_axis(bottom, [*growth, threshold, 1.0])
    bottom.set_ylabel("growth per block")
    bottom.set_xticks(blocks)
    bottom.set_xticklabels([f"block {l}" for l in blocks])
    bottom.set_xlim(-0.5, len(growth) - 0.5)
    if _drawable(threshold, log=True):
        limit = bottom.axhline(threshold, color=RED, linestyle="--", linewidth=1,
                               label=f"D1 limit {fmt(threshold)}×")
        limit.set_gid("threshold")
    _mark_not_drawn(bottom, blocks, growth, log=True)
    _legend(bottom)
    bad = _undrawn(growth, "block ", log=True)
    if bad:
        _note(bottom, [f"not drawn: growth of {', '.join(bad)}"])
    return figure
