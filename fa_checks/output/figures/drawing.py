"""What every figure shares: reading a report's JSON numbers, the style, the axes' helpers."""

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
    from ...files import decode_non_finite

    value = decode_non_finite(value) if isinstance(value, str) else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def numbers(values: Any) -> list[float | None]:
    """A list of figures (see :func:`number`); ``[]`` when ``values`` is not a list."""
    if not isinstance(values, (list, tuple)):
        return []
    return [number(v) for v in values]


def entry_section(entry: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = entry.get(key)
    return value if isinstance(value, Mapping) else {}


#: beyond this size an axis' limit arithmetic overflows: such a figure is not drawn either
LARGEST_DRAWN = 1e300


def is_finite_number(x: float | None) -> bool:
    """A figure that can be drawn: finite, and within :data:`LARGEST_DRAWN`."""
    return x is not None and math.isfinite(x) and abs(x) <= LARGEST_DRAWN


#: a log axis draws figures within these (a locator's decades past them overflow a float)
LOG_RANGE = (1e-100, 1e100)


def is_fraction(x: float | None) -> bool:
    """An accuracy that can be drawn: a number in [0, 1]."""
    return is_finite_number(x) and 0.0 <= x <= 1.0


def drawable(x: float | None, *, log: bool) -> bool:
    return is_finite_number(x) and (not log or LOG_RANGE[0] <= x <= LOG_RANGE[1])


def plotted(values: Sequence[float | None], *, log: bool = False) -> list[float]:
    """The values as a line draws them: NaN (a gap) where one cannot be drawn."""
    return [x if drawable(x, log=log) else math.nan for x in values]


def fmt(x: float | None) -> str:
    """A figure as the sentences write it (the report's one formatter): 1.293, 3.60e-09."""
    from ...report import format_number

    return format_number(x)


def entry_label(entry: Mapping[str, Any]) -> str:
    return str(entry.get("id") or entry_section(entry, "subject").get("id") or "subject")


# -- drawing helpers ---------------------------------------------------------------------------
def _matplotlib() -> Any:
    """matplotlib, with the Agg backend unless pyplot is already in use (switching a running
    pyplot's backend would close its figures; ours never touch pyplot)."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


def new_figure(rows: int, height: float, *, ratios: Sequence[float] | None = None,
                sharex: bool = False) -> tuple[Figure, list[Axes]]:
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTH, height), layout="constrained")
        axes = figure.subplots(rows, 1, sharex=sharex, squeeze=False,
                               height_ratios=list(ratios) if ratios else None)
    return figure, [row[0] for row in axes]


def styled(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """Draw inside the report's style, so every text and line takes its sizes."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with _matplotlib().rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


def set_title(figure: Figure, text: str) -> None:
    # parse_math=False: a subject id is a path, and "$" in it is not mathtext
    figure.suptitle(text, fontsize=9, fontweight="bold", parse_math=False)


def add_note(ax: Axes, lines: Sequence[str]) -> None:
    """What is missing or not drawn, as the axes' left title (laid out clear of the data)."""
    if not lines:
        return
    ax.set_title("\n".join(lines), loc="left", fontsize=6.5, color=GREY, style="italic",
                 parse_math=False)


def mark_empty(ax: Axes, sentence: str) -> None:
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


def add_legend(ax: Axes, ncols: int = 1) -> None:
    """The axes' legend, where something on it has a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", ncols=ncols)


def log_axis(ax: Axes, values: Sequence[float | None]) -> None:
    """A log y axis that spans at least a decade beyond the values on each side (so a stable
    stream looks flat, not magnified), ticked at the decades only."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    shown = [v for v in values if drawable(v, log=True)]
    # the limits first: a log scale set on data with nothing positive would warn
    ax.set_ylim(min(shown, default=1.0) / 10, max(shown, default=1.0) * 10)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_decade))
    ax.yaxis.set_minor_locator(NullLocator())


def mark_not_drawn(ax: Axes, xs: Sequence[float], values: Sequence[float | None], *,
                    log: bool) -> None:
    """A red X near the top of the axes where a value exists but cannot be drawn (NaN, Inf,
    or not positive on a log axis)."""
    where = [x for x, v in zip(xs, values, strict=True)
             if v is not None and not drawable(v, log=log)]
    if where:
        ax.plot(where, [0.92] * len(where), transform=ax.get_xaxis_transform(), marker="X",
                color=RED, markersize=7, linestyle="none", gid="not_drawn")


def layer_ticks(ax: Axes, count: int, prefix: str = "h") -> None:
    ax.set_xticks(range(count))
    ax.set_xticklabels([f"{prefix}_{l}" for l in range(count)])
    ax.set_xlim(-0.5, count - 0.5)


def _undrawn(values: Sequence[float | None], name: str, *, log: bool = False) -> list[str]:
    """``["h_2 NaN", "h_3 0"]``: the figures that exist but cannot be drawn."""
    return [f"{name}{i} {fmt(v)}" for i, v in enumerate(values) if v is not None
            and not drawable(v, log=log)]
