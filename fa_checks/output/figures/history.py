"""2. The training history: ||h_L|| and ||g_L|| per epoch, test accuracy, block growth, and
(where the run recorded it) each block's credit cosine against the fresh-feedback null."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .drawing import (
    BLUE,
    GREY,
    ORANGE,
    RED,
    add_legend,
    add_note,
    drawable,
    entry_label,
    entry_section,
    fmt,
    is_finite_number,
    is_fraction,
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


# -- 2. training history -----------------------------------------------------------------------
def history_series(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    history = entry.get("history")
    if not isinstance(history, list):
        return []
    return [e for e in history if isinstance(e, Mapping)]


def _column(history: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    return [number(e.get(key)) for e in history]


def _largest_growth(entry: Mapping[str, Any]) -> float | None:
    """D1's figure for one epoch: the largest block growth (NaN and Inf first, as D1 does)."""
    growth = numbers(entry.get("growth"))
    known = [g for g in growth if g is not None]
    if not known:
        return None
    if any(math.isnan(g) for g in known):
        return math.nan
    return max(known)


def _first_epoch(epochs: Sequence[float], values: Sequence[float | None],
                 bad: Callable[[float], bool]) -> float | None:
    for epoch, value in zip(epochs, values, strict=True):
        if value is not None and bad(value):
            return epoch
    return None


@styled
def training_history(entry: Mapping[str, Any]) -> Figure:
    """The checkpoint's history per epoch: ``||h_L||`` and ``||g_L||`` (log) against the D2
    floor, test accuracy against the frozen-blocks baseline, and the largest block growth
    against the D1 limit; the first epoch past each limit is marked."""
    history = history_series(entry)
    d1, d2, d3 = (entry_section(entry, k) for k in ("D1", "D2", "D3"))
    if not history:
        figure, (ax,) = new_figure(1, 1.2)
        set_title(figure, f"{entry_label(entry)}: training history")
        mark_empty(ax, "no training history: the checkpoint records none")
        return figure

    direction = any(isinstance(e.get("credit_cosine"), list) for e in history)
    if direction:
        figure, (norms_ax, acc_ax, growth_ax, cos_ax) = new_figure(4, 7.2, sharex=True)
    else:
        figure, (norms_ax, acc_ax, growth_ax) = new_figure(3, 5.4, sharex=True)
    set_title(figure, f"{entry_label(entry)}: training history")
    epochs = [number(e.get("epoch")) for e in history]
    epochs = [e if is_finite_number(e) else float(i + 1) for i, e in enumerate(epochs)]
    diverged = [ep for ep, e in zip(epochs, history, strict=True) if e.get("diverged") is True]
    marker = "o" if len(epochs) <= 12 else None  # a long history reads as a line

    # ||h_L|| and ||g_L|| against the D2 floor
    h_L, g_L = _column(history, "h_L"), _column(history, "g_L")
    floor = number(d2.get("floor"))
    missing = []
    for name, values, colour in (("||h_L||", h_L, BLUE), ("||g_L||", g_L, ORANGE)):
        if all(v is None for v in values):
            missing.append(f"{name} is not recorded")
            continue
        (line,) = norms_ax.plot(epochs, plotted(values, log=True), marker=marker, color=colour,
                                label=f"median {name}")
        line.set_gid("h_L" if name == "||h_L||" else "g_L")
        mark_not_drawn(norms_ax, epochs, values, log=True)
        missing += [f"{name} {fmt(v)} at epoch {ep:g}" for ep, v in zip(epochs, values,
                    strict=True) if v is not None and not drawable(v, log=True)]
    log_axis(norms_ax, [*h_L, *g_L, floor])
    norms_ax.set_ylabel("median norm")
    if drawable(floor, log=True):
        line = norms_ax.axhline(floor, color=RED, linestyle="--", linewidth=1,
                                label=f"D2 floor {fmt(floor)}")
        line.set_gid("floor")
        sank = _first_epoch(epochs, g_L, lambda g: not g >= floor)
        if sank is not None:
            mark = norms_ax.axvline(sank, color=RED, linestyle=":", linewidth=1,
                                    label=f"||g_L|| under the floor from epoch {sank:g}")
            mark.set_gid("floor_crossed")
    for epoch in diverged:
        norms_ax.axvspan(epoch - 0.5, epoch + 0.5, color=RED, alpha=0.12, linewidth=0)
    if diverged:
        missing.append(f"diverged in epoch {', '.join(f'{e:g}' for e in diverged)}")
    add_legend(norms_ax, ncols=2)
    if missing:
        add_note(norms_ax, ["not drawn: " + "; ".join(missing)])

    # test accuracy against the frozen-blocks baseline
    acc = _column(history, "test_acc")
    from matplotlib.ticker import PercentFormatter

    acc_missing = []
    if all(v is None for v in acc):
        acc_missing.append("test accuracy is not recorded")
    else:
        shown = [v if is_fraction(v) else math.nan for v in acc]
        (line,) = acc_ax.plot(epochs, shown, marker=marker, color=BLUE, label="test accuracy")
        line.set_gid("test_acc")
        acc_missing += [f"test accuracy {fmt(v)} at epoch {ep:g}" for ep, v in
                        zip(epochs, acc, strict=True) if v is not None and not is_fraction(v)]
    baseline = number(d3.get("baseline_acc"))
    margin_pp = number(d3.get("threshold_pp"))
    if is_fraction(baseline):
        line = acc_ax.axhline(baseline, color=GREY, linestyle="--", linewidth=1,
                              label=f"frozen-blocks baseline {100 * baseline:.1f}%")
        line.set_gid("baseline")
        if is_finite_number(margin_pp) and abs(margin_pp) <= 100:
            needed = acc_ax.axhline(baseline + margin_pp / 100, color=RED, linestyle=":",
                                    linewidth=1, label=f"D3 needs baseline + {margin_pp:g} pp")
            needed.set_gid("baseline_plus_margin")
    else:
        acc_missing.append("no frozen-blocks baseline (D3 not evaluated)")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    if not any(is_fraction(v) for v in [*acc, baseline]):  # nothing to scale to
        acc_ax.set_ylim(0, 1)
    acc_ax.set_ylabel("test accuracy")
    add_legend(acc_ax, ncols=1)
    if acc_missing:
        add_note(acc_ax, acc_missing)

    # D1: the largest block growth per epoch
    largest = [_largest_growth(e) for e in history]
    threshold = number(d1.get("threshold"))
    if all(v is None for v in largest):
        mark_empty(growth_ax, "no per-block growth in this history (the checkpoint was written "
                          "before fa-checks recorded it)")
    else:
        (line,) = growth_ax.plot(epochs, plotted(largest, log=True), marker=marker, color=BLUE,
                                 label="largest block growth")
        line.set_gid("growth")
        log_axis(growth_ax, [*largest, threshold])
        mark_not_drawn(growth_ax, epochs, largest, log=True)
        growth_ax.set_ylabel("D1 growth")
        if drawable(threshold, log=True):
            limit = growth_ax.axhline(threshold, color=RED, linestyle="--", linewidth=1,
                                      label=f"D1 limit {fmt(threshold)}×")
            limit.set_gid("threshold")
            blew = _first_epoch(epochs, largest, lambda g: not g <= threshold)
            if blew is not None:
                mark = growth_ax.axvline(blew, color=RED, linestyle=":", linewidth=1,
                                         label=f"over the limit from epoch {blew:g}")
                mark.set_gid("limit_crossed")
        add_legend(growth_ax, ncols=2)
        bad = [f"{fmt(v)} at epoch {ep:g}" for ep, v in zip(epochs, largest, strict=True)
               if v is not None and not drawable(v, log=True)]
        if bad:
            add_note(growth_ax, ["not drawn: growth " + ", ".join(bad)])
    last_ax = growth_ax
    if direction:
        _direction_panel(cos_ax, epochs, history, marker)
        last_ax = cos_ax
    last_ax.set_xlabel("epoch")
    if len(epochs) <= 12:
        last_ax.set_xticks(epochs)
    else:
        from matplotlib.ticker import MaxNLocator

        last_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


#: one colour per block's layer h_1..h_L in the direction panel (cycled beyond)
_LAYER_COLOURS = (BLUE, ORANGE, "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _direction_panel(ax: Any, epochs: Sequence[float], history: Sequence[Mapping[str, Any]],
                     marker: str | None) -> None:
    """Each block's credit cosine per epoch (h_1..h_L; the research code's point: direction
    quality moves while accuracy may not), over the band the fresh-feedback null spans."""
    cosines = [numbers(e.get("credit_cosine")) for e in history]
    means = [numbers(e.get("credit_null_mean")) for e in history]
    stds = [numbers(e.get("credit_null_std")) for e in history]
    layers = max((len(c) for c in cosines), default=0)
    low, high = [], []
    for mean, std in zip(means, stds, strict=True):
        bounds = [(m - s, m + s) for m, s in zip(mean[1:], std[1:], strict=False)
                  if is_finite_number(m) and is_finite_number(s)]
        low.append(min((b[0] for b in bounds), default=math.nan))
        high.append(max((b[1] for b in bounds), default=math.nan))
    if any(is_finite_number(v) for v in low):
        band = ax.fill_between(epochs, low, high, color=GREY, alpha=0.25, linewidth=0,
                               label="fresh-feedback null, mean ± std (widest block)")
        band.set_gid("history_null_band")
    for l in range(1, layers):
        values = [c[l] if l < len(c) else None for c in cosines]
        if all(v is None for v in values):
            continue
        (line,) = ax.plot(epochs, plotted(values), marker=marker,
                          color=_LAYER_COLOURS[(l - 1) % len(_LAYER_COLOURS)],
                          label=f"cosine at h_{l}")
        line.set_gid(f"credit_cosine_h{l}")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("credit cosine")
    add_legend(ax, ncols=3)
    add_note(ax, ["per epoch on a slice of the eval batch, a few null draws: a trend; D4 "
                  "judges the final model"])
