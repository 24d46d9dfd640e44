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

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: the figures of one subject, in the page's order
SUBJECT_FIGURES = ("profile", "history", "credit")

#: colours: a neutral series, a second series, the limits, what fired, what passed
BLUE, ORANGE, GREY, RED, GREEN = "#1f5fa8", "#d9822b", "#6b6b6b", "#c0262d", "#2e8540"

#: small text, one font family (so an SVG's text names it once, briefly), no date anywhere
STYLE = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8.0,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8.0,
    "legend.fontsize": 7.0,
    "legend.frameon": False,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "svg.fonttype": "none",
}

WIDTH = 6.4  # inches: one column of a page or a slide


# -- reading the JSON form ---------------------------------------------------------------------
def number(value: Any) -> float | None:
    """A figure of the JSON form as a float ("NaN", "Infinity" included); None when absent or
    not a number."""
    from .files import decode_non_finite

    value = decode_non_finite(value) if isinstance(value, str) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def numbers(values: Any) -> list[float | None]:
    """A list of figures (see :func:`number`); ``[]`` when ``values`` is not a list."""
    if not isinstance(values, (list, tuple)):
        return []
    return [number(v) for v in values]


def _section(entry: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, Mapping) else {}


#: beyond this size an axis' limit arithmetic overflows: such a figure is not drawn either
LARGEST_DRAWN = 1e300


def _finite(x: float | None) -> bool:
    """A figure that can be drawn: finite, and within :data:`LARGEST_DRAWN`."""
    return x is not None and math.isfinite(x) and abs(x) <= LARGEST_DRAWN


#: a log axis draws figures within these (a locator's decades past them overflow a float)
LOG_RANGE = (1e-100, 1e100)


def _fraction(x: float | None) -> bool:
    """An accuracy that can be drawn: a number in [0, 1]."""
    return _finite(x) and 0.0 <= x <= 1.0


def _drawable(x: float | None, *, log: bool) -> bool:
    return _finite(x) and (not log or LOG_RANGE[0] <= x <= LOG_RANGE[1])


def _plotted(values: Sequence[float | None], *, log: bool = False) -> list[float]:
    """The values as a line draws them: NaN (a gap) where one cannot be drawn."""
    return [x if _drawable(x, log=log) else math.nan for x in values]


def fmt(x: float | None) -> str:
    """A figure as the sentences write it (the report's one formatter): 1.293, 3.60e-09."""
    from .report import format_number

    return format_number(x)


def _label(entry: Mapping[str, Any]) -> str:
    return str(entry.get("id") or _section(entry, "subject").get("id") or "subject")


# -- drawing helpers ---------------------------------------------------------------------------
def _matplotlib() -> Any:
    """matplotlib, with the Agg backend unless pyplot is already in use (switching a running
    pyplot's backend would close its figures; ours never touch pyplot)."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


def _new_figure(rows: int, height: float, *, ratios: Sequence[float] | None = None,
                sharex: bool = False) -> tuple[Figure, list[Axes]]:
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTH, height), layout="constrained")
        axes = figure.subplots(rows, 1, sharex=sharex, squeeze=False,
                               height_ratios=list(ratios) if ratios else None)
    return figure, [row[0] for row in axes]


def _styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw inside the report's style, so every text and line takes its sizes."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with _matplotlib().rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def _title(figure: Figure, text: str) -> None:
    # parse_math=False: a subject id is a path, and "$" in it is not mathtext
    figure.suptitle(text, fontsize=9, fontweight="bold", parse_math=False)


def _note(ax: Axes, lines: Sequence[str]) -> None:
    """What is missing or not drawn, as the axes' left title (laid out clear of the data)."""
    if not lines:
        return
    ax.set_title("\n".join(lines), loc="left", fontsize=6.5, color=GREY, style="italic",
                 parse_math=False)


def _empty(ax: Axes, sentence: str) -> None:
    """An axes with nothing to draw: no ticks, only the sentence saying what is missing."""
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    text = ax.text(0.5, 0.5, sentence, transform=ax.transAxes, ha="center", va="center",
                   fontsize=8, color=GREY, style="italic", wrap=True, parse_math=False)
    text.set_gid("note")


def notes(figure: Figure) -> list[str]:
    """Every note written on ``figure`` (what is missing or not drawn)."""
    found = []
    for ax in figure.axes:
        found += [t.get_text() for t in ax.texts if t.get_gid() == "note"]
        if ax.get_title(loc="left"):
            found.append(ax.get_title(loc="left"))
    return found


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade(value: float, _position: Any = None) -> str:
    """A log axis' tick label as plain text: 10⁻⁵ (one short text element, no mathtext)."""
    if value <= 0 or not math.isfinite(value):
        return ""
    exponent = round(math.log10(value))
    if not math.isclose(value, 10.0**exponent, rel_tol=1e-9):
        return fmt(value)
    return "10" + str(exponent).translate(_SUPERSCRIPT)


def _legend(ax: Axes, ncols: int = 1) -> None:
    """The axes' legend, where something on it has a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", ncols=ncols)


def _log_axis(ax: Axes, values: Sequence[float | None]) -> None:
    """A log y axis that spans at least a decade beyond the values on each side (so a stable
    stream looks flat, not magnified), ticked at the decades only."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    shown = [v for v in values if _drawable(v, log=True)]
    # the limits first: a log scale set on data with nothing positive would warn
    ax.set_ylim(min(shown, default=1.0) / 10, max(shown, default=1.0) * 10)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_decade))
    ax.yaxis.set_minor_locator(NullLocator())


def _mark_not_drawn(ax: Axes, xs: Sequence[float], values: Sequence[float | None], *,
                    log: bool) -> None:
    """A red X near the top of the axes where a value exists but cannot be drawn (NaN, Inf,
    or not positive on a log axis)."""
    where = [x for x, v in zip(xs, values, strict=True)
             if v is not None and not _drawable(v, log=log)]
    if where:
        ax.plot(where, [0.92] * len(where), transform=ax.get_xaxis_transform(), marker="X",
                color=RED, markersize=7, linestyle="none", gid="not_drawn")


def _layer_ticks(ax: Axes, count: int, prefix: str = "h") -> None:
    ax.set_xticks(range(count))
    ax.set_xticklabels([f"{prefix}_{l}" for l in range(count)])
    ax.set_xlim(-0.5, count - 0.5)


def _undrawn(values: Sequence[float | None], name: str, *, log: bool = False) -> list[str]:
    """``["h_2 NaN", "h_3 0"]``: the figures that exist but cannot be drawn."""
    return [f"{name}{i} {fmt(v)}" for i, v in enumerate(values) if v is not None
            and not _drawable(v, log=log)]


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


# -- 2. training history -----------------------------------------------------------------------
def _history(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
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


@_styled
def training_history(entry: Mapping[str, Any]) -> Figure:
    """The checkpoint's history per epoch: ``||h_L||`` and ``||g_L||`` (log) against the D2
    floor, test accuracy against the frozen-blocks baseline, and the largest block growth
    against the D1 limit; the first epoch past each limit is marked."""
    history = _history(entry)
    d1, d2, d3 = (_section(entry, k) for k in ("D1", "D2", "D3"))
    if not history:
        figure, (ax,) = _new_figure(1, 1.2)
        _title(figure, f"{_label(entry)}: training history")
        _empty(ax, "no training history: the checkpoint records none")
        return figure

    figure, (norms_ax, acc_ax, growth_ax) = _new_figure(3, 5.4, sharex=True)
    _title(figure, f"{_label(entry)}: training history")
    epochs = [number(e.get("epoch")) for e in history]
    epochs = [e if _finite(e) else float(i + 1) for i, e in enumerate(epochs)]
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
        (line,) = norms_ax.plot(epochs, _plotted(values, log=True), marker=marker, color=colour,
                                label=f"median {name}")
        line.set_gid("h_L" if name == "||h_L||" else "g_L")
        _mark_not_drawn(norms_ax, epochs, values, log=True)
        missing += [f"{name} {fmt(v)} at epoch {ep:g}" for ep, v in zip(epochs, values,
                    strict=True) if v is not None and not _drawable(v, log=True)]
    _log_axis(norms_ax, [*h_L, *g_L, floor])
    norms_ax.set_ylabel("median norm")
    if _drawable(floor, log=True):
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
    _legend(norms_ax, ncols=2)
    if missing:
        _note(norms_ax, ["not drawn: " + "; ".join(missing)])

    # test accuracy against the frozen-blocks baseline
    acc = _column(history, "test_acc")
    from matplotlib.ticker import PercentFormatter

    acc_missing = []
    if all(v is None for v in acc):
        acc_missing.append("test accuracy is not recorded")
    else:
        shown = [v if _fraction(v) else math.nan for v in acc]
        (line,) = acc_ax.plot(epochs, shown, marker=marker, color=BLUE, label="test accuracy")
        line.set_gid("test_acc")
        acc_missing += [f"test accuracy {fmt(v)} at epoch {ep:g}" for ep, v in
                        zip(epochs, acc, strict=True) if v is not None and not _fraction(v)]
    baseline = number(d3.get("baseline_acc"))
    margin_pp = number(d3.get("threshold_pp"))
    if _fraction(baseline):
        line = acc_ax.axhline(baseline, color=GREY, linestyle="--", linewidth=1,
                              label=f"frozen-blocks baseline {100 * baseline:.1f}%")
        line.set_gid("baseline")
        if _finite(margin_pp) and abs(margin_pp) <= 100:
            needed = acc_ax.axhline(baseline + margin_pp / 100, color=RED, linestyle=":",
                                    linewidth=1, label=f"D3 needs baseline + {margin_pp:g} pp")
            needed.set_gid("baseline_plus_margin")
    else:
        acc_missing.append("no frozen-blocks baseline (D3 not evaluated)")
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    if not any(_fraction(v) for v in [*acc, baseline]):  # nothing to scale to
        acc_ax.set_ylim(0, 1)
    acc_ax.set_ylabel("test accuracy")
    _legend(acc_ax, ncols=1)
    if acc_missing:
        _note(acc_ax, acc_missing)

    # D1: the largest block growth per epoch
    largest = [_largest_growth(e) for e in history]
    threshold = number(d1.get("threshold"))
    if all(v is None for v in largest):
        _empty(growth_ax, "no per-block growth in this history (the checkpoint was written "
                          "before fa-checks recorded it)")
    else:
        (line,) = growth_ax.plot(epochs, _plotted(largest, log=True), marker=marker, color=BLUE,
                                 label="largest block growth")
        line.set_gid("growth")
        _log_axis(growth_ax, [*largest, threshold])
        _mark_not_drawn(growth_ax, epochs, largest, log=True)
        growth_ax.set_ylabel("D1 growth")
        if _drawable(threshold, log=True):
            limit = growth_ax.axhline(threshold, color=RED, linestyle="--", linewidth=1,
                                      label=f"D1 limit {fmt(threshold)}×")
            limit.set_gid("threshold")
            blew = _first_epoch(epochs, largest, lambda g: not g <= threshold)
            if blew is not None:
                mark = growth_ax.axvline(blew, color=RED, linestyle=":", linewidth=1,
                                         label=f"over the limit from epoch {blew:g}")
                mark.set_gid("limit_crossed")
        _legend(growth_ax, ncols=2)
        bad = [f"{fmt(v)} at epoch {ep:g}" for ep, v in zip(epochs, largest, strict=True)
               if v is not None and not _drawable(v, log=True)]
        if bad:
            _note(growth_ax, ["not drawn: growth " + ", ".join(bad)])
    growth_ax.set_xlabel("epoch")
    if len(epochs) <= 12:
        growth_ax.set_xticks(epochs)
    else:
        from matplotlib.ticker import MaxNLocator

        growth_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


# -- 3. credit per layer -----------------------------------------------------------------------
def at_or_under_null(credit: Mapping[str, Any]) -> list[int]:
    """The layers whose cosine is not above the fresh-feedback null band (mean + std)."""
    cosine = numbers(credit.get("cosine"))
    mean, std = numbers(credit.get("null_mean")), numbers(credit.get("null_std"))
    layers = []
    for l, c in enumerate(cosine):
        m = mean[l] if l < len(mean) else None
        s = std[l] if l < len(std) else None
        if _finite(c) and _finite(m) and not c > m + (s if _finite(s) else 0.0):
            layers.append(l)
    return layers


@_styled
def credit_per_layer(entry: Mapping[str, Any]) -> Figure:
    """The credit metrics per layer: cosine, pooled cosine and rho over the fresh-feedback null
    (a band, mean +- std; layers at or under it ringed in red), and nudging per layer."""
    credit = entry.get("credit")
    if not isinstance(credit, Mapping):
        figure, (ax,) = _new_figure(1, 1.2)
        _title(figure, f"{_label(entry)}: credit per layer")
        _empty(ax, "no credit metrics: the method gives no credit signal, or they were "
                   "not computed")
        return figure

    columns = {key: numbers(credit.get(key)) for key in
               ("cosine", "pooled_cosine", "rho", "nudging", "null_mean", "null_std")}
    count = max((len(v) for v in columns.values()), default=0)
    figure, (ax, nudge_ax) = _new_figure(2, 4.0, ratios=(3, 2), sharex=True)
    _title(figure, f"{_label(entry)}: credit per layer")
    if count == 0:
        _empty(ax, "the credit section holds no per-layer figures")
        nudge_ax.set_visible(False)
        return figure
    layers = list(range(count))

    def padded(values: list[float | None]) -> list[float | None]:
        return values + [None] * (count - len(values))

    missing = []
    mean, std = padded(columns["null_mean"]), padded(columns["null_std"])
    if any(_finite(m) for m in mean):
        low = [m - (s if _finite(s) else 0.0) if _finite(m) else math.nan
               for m, s in zip(mean, std, strict=True)]
        high = [m + (s if _finite(s) else 0.0) if _finite(m) else math.nan
                for m, s in zip(mean, std, strict=True)]
        draws = credit.get("null_draws")
        band = ax.fill_between(layers, low, high, color=GREY, alpha=0.25, linewidth=0,
                               label=f"fresh-feedback null, mean ± std ({draws} draws)")
        band.set_gid("null_band")
        (line,) = ax.plot(layers, _plotted(mean), color=GREY, linestyle="--", linewidth=1)
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
        (line,) = ax.plot(layers, _plotted(values), marker=marker, color=colour, label=label)
        line.set_gid(key)
        missing += [f"{label} {fmt(v)} at h_{l}" for l, v in enumerate(values)
                    if v is not None and not _finite(v)]
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
    _legend(ax, ncols=2)
    d2 = _section(entry, "D2")
    if d2.get("fires") is True:
        missing.append("the BP reference failed D2: these comparisons measure numerical noise")
    if missing:
        _note(ax, missing)

    nudging = padded(columns["nudging"])
    if all(v is None for v in nudging):
        _empty(nudge_ax, "no nudging figures")
    else:
        heights = [v if _finite(v) else 0.0 for v in nudging]
        nudge_ax.bar(layers, heights, width=0.5,
                            color=[GREEN if h < 0 else GREY for h in heights],
                            label="nudging: loss change after a step along the signal")

        nudge_ax.axhline(0, color="black", linewidth=0.5)
        nudge_ax.set_ylabel("loss change")
        _legend(nudge_ax)
        bad = [f"h_{l} {fmt(v)}" for l, v in enumerate(nudging)
               if v is not None and not _finite(v)]
        if bad:
            _note(nudge_ax, ["not drawn: " + ", ".join(bad)])
    _layer_ticks(nudge_ax, count)
    for label in nudge_ax.get_xticklabels():
        if label.get_text() in {f"h_{l}" for l in under}:
            label.set_color(RED)
            label.set_fontweight("bold")
    return figure


# -- 4. across seeds ---------------------------------------------------------------------------
@_styled
def across_seeds(summaries: Sequence[Mapping[str, Any]]) -> Figure:
    """Each seed's D3 margin per method, the mean, and the one-sided lower bound on the mean
    against the threshold (red when the gate fires)."""
    summaries = [s for s in summaries if isinstance(s, Mapping)]
    figure, (ax,) = _new_figure(1, 2.8)
    _title(figure, "D3 margin across seeds")
    if not summaries:
        _empty(ax, "no across-seeds summary")
        return figure
    missing = []
    thresholds: dict[float, None] = {}
    for i, summary in enumerate(summaries):
        name = str(summary.get("label") or summary.get("method") or f"group {i}")
        margins = numbers(summary.get("margins_pp"))
        offsets = ([0.0] if len(margins) == 1 else
                   [-0.18 + 0.36 * k / (len(margins) - 1) for k in range(len(margins))])
        (points,) = ax.plot([i + o for o in offsets], _plotted(margins), linestyle="none",
                            marker="o", color=BLUE, alpha=0.8,
                            label="one seed's margin" if i == 0 else None)
        points.set_gid(f"margins_{i}")
        mean = number(summary.get("mean_margin_pp"))
        bound = number(summary.get("lower_bound_pp"))
        fires = summary.get("fires") is True
        if _finite(mean):
            (line,) = ax.plot([i - 0.3, i + 0.3], [mean, mean], color="black", linewidth=2,
                              label="mean" if i == 0 else None)
            line.set_gid(f"mean_{i}")
        if _finite(bound):
            (mark,) = ax.plot([i], [bound], marker="v", markersize=7, linestyle="none",
                              color=RED if fires else GREEN,
                              label="one-sided lower bound" if i == 0 else None)
            mark.set_gid(f"bound_{i}")
            if _finite(mean):
                ax.plot([i, i], [bound, mean], color=RED if fires else GREEN, linewidth=1)
        else:
            n = summary.get("n")
            missing.append(f"{name}: no lower bound ({fmt(bound)}; {n} seed(s))")
        threshold = number(summary.get("threshold_pp"))
        if _finite(threshold):
            thresholds[threshold] = None
        bad = [fmt(m) for m in margins if m is not None and not _finite(m)]
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
    _legend(ax, ncols=2)
    if missing:
        _note(ax, missing)
    return figure


#: one subject's figure functions, by name
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
    if not numbers(_section(entry, "D1").get("hidden_norms")):
        out["profile"] = "no hidden-state norms in this report"
    if not _history(entry):
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
    "SUBJECT_FIGURES",
    "across_seeds",
    "at_or_under_null",
    "credit_per_layer",
    "missing_figures",
    "notes",
    "number",
    "numbers",
    "scale_profile",
    "subject_figures",
    "training_history",
]
