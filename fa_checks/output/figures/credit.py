"""3. Credit per layer: cosine, pooled cosine and rho over the fresh-feedback null."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .drawing import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    RED,
    add_legend,
    add_note,
    entry_label,
    entry_section,
    fmt,
    is_finite_number,
    layer_ticks,
    mark_empty,
    new_figure,
    numbers,
    plotted,
    set_title,
    styled,
)


# -- 3. credit per layer -----------------------------------------------------------------------
def at_or_under_null(credit: Mapping[str, Any]) -> list[int]:
    """The layers whose cosine is not above the fresh-feedback null band (mean + std)."""
    cosine = numbers(credit.get("cosine"))
    mean, std = numbers(credit.get("null_mean")), numbers(credit.get("null_std"))
    layers = []
    for l, c in enumerate(cosine):
        m = mean[l] if l < len(mean) else None
        s = std[l] if l < len(std) else None
        spread = s if is_finite_number(s) else 0.0
        if is_finite_number(c) and is_finite_number(m) and not c > m + spread:
            layers.append(l)
    return layers


@styled
def credit_per_layer(entry: Mapping[str, Any]) -> Figure:
    """The credit metrics per layer: cosine, pooled cosine and rho over the fresh-feedback null
    (a band, mean +- std; layers at or under it ringed in red), and nudging per layer."""
    credit = entry.get("credit")
    if not isinstance(credit, Mapping):
        figure, (ax,) = new_figure(1, 1.2)
        set_title(figure, f"{entry_label(entry)}: credit per layer")
        mark_empty(ax, "no credit metrics: the method gives no credit signal, or they were "
                   "not computed")
        return figure

    columns = {key: numbers(credit.get(key)) for key in
               ("cosine", "pooled_cosine", "rho", "nudging", "null_mean", "null_std")}
    count = max((len(v) for v in columns.values()), default=0)
    figure, (ax, nudge_ax) = new_figure(2, 4.0, ratios=(3, 2), sharex=True)
    set_title(figure, f"{entry_label(entry)}: credit per layer")
    if count == 0:
        mark_empty(ax, "the credit section holds no per-layer figures")
        nudge_ax.set_visible(False)
        return figure
    layers = list(range(count))

    def padded(values: list[float | None]) -> list[float | None]:
        return values + [None] * (count - len(values))

    missing = []
    mean, std = padded(columns["null_mean"]), padded(columns["null_std"])
    if any(is_finite_number(m) for m in mean):
        low = [m - (s if is_finite_number(s) else 0.0) if is_finite_number(m) else math.nan
               for m, s in zip(mean, std, strict=True)]
        high = [m + (s if is_finite_number(s) else 0.0) if is_finite_number(m) else math.nan
                for m, s in zip(mean, std, strict=True)]
        draws = credit.get("null_draws")
        band = ax.fill_between(layers, low, high, color=GREY, alpha=0.25, linewidth=0,
                               label=f"fresh-feedback null, mean ± std ({draws} draws)")
        band.set_gid("null_band")
        (line,) = ax.plot(layers, plotted(mean), color=GREY, linestyle="--", linewidth=1)
        line.set_gid("null_mean")
    else:
        missing.append("no fresh-feedback null (the rule has no random feedback to redraw)")
    styles = {"cosine": (BLUE, "o", "cosine with BP"),
              "pooled_cosine": (ORANGE, "s", "pooled cosine"),
              "rho": (GREEN, "^", "perturbation correlation rho")}
    for key, (colour, marker, label) in styles.items():
        values = padded(columns[key])
        if all(v is None for v in values):
            missing.append(f"no {label}")
            continue
        (line,) = ax.plot(layers, plotted(values), marker=marker, color=colour, label=label)
        line.set_gid(key)
        missing += [f"{label} {fmt(v)} at h_{l}" for l, v in enumerate(values)
                    if v is not None and not is_finite_number(v)]
    under = at_or_under_null(credit)
    if under:
        cosine = padded(columns["cosine"])
        (ring,) = ax.plot(under, [cosine[l] for l in under], linestyle="none", marker="o",
                          markersize=11, markerfacecolor="none", markeredgecolor=RED,
                          markeredgewidth=1.5, label="at or under the null")
        ring.set_gid("at_or_under_null")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylim(-1.08, 1.08)
    ax.set_ylabel("alignment with BP")
    add_legend(ax, ncols=2)
    d2 = entry_section(entry, "D2")
    if d2.get("fires") is True:
        missing.append("the BP reference failed D2: these comparisons measure numerical noise")
    if missing:
        add_note(ax, missing)

    nudging = padded(columns["nudging"])
    if all(v is None for v in nudging):
        mark_empty(nudge_ax, "no nudging figures")
    else:
        heights = [v if is_finite_number(v) else 0.0 for v in nudging]
        nudge_ax.bar(layers, heights, width=0.5,
                            color=[GREEN if h < 0 else GREY for h in heights],
                            label="nudging: loss change after a step along the signal")

        nudge_ax.axhline(0, color="black", linewidth=0.5)
        nudge_ax.set_ylabel("loss change")
        add_legend(nudge_ax)
        bad = [f"h_{l} {fmt(v)}" for l, v in enumerate(nudging)
               if v is not None and not is_finite_number(v)]
        if bad:
            add_note(nudge_ax, ["not drawn: " + ", ".join(bad)])
    layer_ticks(nudge_ax, count)
    for label in nudge_ax.get_xticklabels():
        if label.get_text() in {f"h_{l}" for l in under}:
            label.set_color(RED)
            label.set_fontweight("bold")
    return figure
