"""3. Credit per layer: cosine, pooled cosine and rho over the fresh-feedback null, with D4's
blocks at chance marked and the layers whose BP reference is below D2's floor hatched."""

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
    number,
    numbers,
    plotted,
    set_title,
    styled,
)

#: said under every credit figure: where its figures mean something
VALIDITY_NOTE = ("a layer's figures mean something only where its BP reference is valid "
                 "(||g_l|| at or above D2's floor)")


def invalid_layers(entry: Mapping[str, Any]) -> list[int]:
    """The layers whose BP reference is below D2's floor (read from ``D2.valid``; older reports
    without it: none known)."""
    valid = entry_section(entry, "D2").get("valid")
    if not isinstance(valid, list):
        return []
    return [l for l, ok in enumerate(valid) if ok is False]


def d4_at_chance(entry: Mapping[str, Any]) -> list[int]:
    """The blocks' layers D4 found at chance (none without a D4 section)."""
    at_chance = entry_section(entry, "D4").get("at_chance")
    if not isinstance(at_chance, list):
        return []
    return [l for l, c in enumerate(at_chance) if c is True]


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
    mode2 = "  [mode 2]" if entry.get("mode2") is True else ""
    set_title(figure, f"{entry_label(entry)}: credit per layer{mode2}")
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
    chance = [l for l in d4_at_chance(entry) if l < count]
    if chance:
        cosine = padded(columns["cosine"])
        (cross,) = ax.plot(chance, plotted([cosine[l] for l in chance]), linestyle="none",
                           marker="x", markersize=12, color=RED, markeredgewidth=2,
                           label="D4: the block learns from a signal at chance")
        cross.set_gid("d4_at_chance")
    invalid = [l for l in invalid_layers(entry) if l < count]
    if invalid:
        spans = ax.broken_barh([(l - 0.5, 1.0) for l in invalid], (-1.08, 2.16),
                               facecolors="none", edgecolors=GREY, hatch="//", linewidth=0,
                               label="reference below D2's floor: numerical noise")
        spans.set_gid("reference_invalid")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylim(-1.08, 1.08)
    ax.set_ylabel("alignment with BP")
    add_legend(ax, ncols=2)
    d2 = entry_section(entry, "D2")
    if d2.get("fires") is True:
        missing.append("the BP reference failed D2: these comparisons measure numerical noise")
    d4 = entry_section(entry, "D4")
    if d4.get("fires") is not None:
        share = number(d4.get("share"))
        missing.append(
            f"D4: {len(chance)} of {d4.get('judged')} judged blocks at chance (crossed)"
            + (f", {share:.0%}; it fires at {number(d4.get('max_share')) or 0:.0%}"
               if share is not None else ""))
    elif d4:
        missing.append("D4 not evaluated: no block has a valid reference")
    add_note(ax, [*missing, VALIDITY_NOTE])

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
