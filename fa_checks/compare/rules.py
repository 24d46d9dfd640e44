"""What counts as a regression: the figures compared, which way is worse, and by how much.

A figure is compared on a scale where a fixed step means the same change everywhere: accuracy
and D3's margin in percentage points, D1's growth and D2's gradient by their ratio (log10),
since both span orders of magnitude (BP's growth 1.3, DFA's 8433).  ``--compare-fail`` names
the figures that count and their tolerances::

    verdict,acc:2,D1:x2,D2:x10,D3:2,D4,alpha:0.05      (the default)
    acc:1                                              (only accuracy, beyond 1 pp)
    none                                               (show the comparison, fail on nothing)

Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..report import Report, format_number, format_percent
from ..settings import DEFAULT_COMPARE_FAIL

DEFAULT_ALPHA = 0.05
#: the default of --compare-fail, spelled out
DEFAULT_SPEC = DEFAULT_COMPARE_FAIL


def _log10(x: float | None) -> float | None:
    if x is None or not math.isfinite(x) or x < 0:
        return None
    return math.log10(max(x, 1e-300))  # 0: far below any floor, still ordered


def _pp(fraction: float | None) -> float | None:
    return None if fraction is None or not math.isfinite(fraction) else 100.0 * fraction


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _d4(report: Report) -> float | None:
    """D4's share of judged blocks whose credit is at chance, in pp (None without D4)."""
    share = getattr(getattr(report, "d4", None), "share", None)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not math.isfinite(share):
        return None
    return 100.0 * float(share)


@dataclass(frozen=True)
class Figure:
    """One compared figure: ``value`` reads it off a report on its comparison scale."""

    key: str
    title: str
    higher_is_better: bool
    #: "pp" (a step is percentage points) or "ratio" (a step is a factor, compared in log10)
    scale: str
    value: Callable[[Report], float | None]
    show: Callable[[float | None], str]

    def tolerance_text(self, tolerance: float) -> str:
        return f"x{10 ** tolerance:.3g}" if self.scale == "ratio" else f"{tolerance:g} pp"

    def change_text(self, before: float, after: float) -> str:
        """The change on its own scale: ``-12.8 pp`` or ``x0.031``."""
        if self.scale == "ratio":
            return f"x{10 ** (after - before):.3g}"
        return f"{after - before:+.1f} pp"

    def shown(self, scaled: float | None) -> str:
        """A value on the comparison scale, written as the verdict table writes it."""
        if scaled is None:
            return "n/a"
        return self.show(10 ** scaled if self.scale == "ratio" else scaled)


FIGURES: dict[str, Figure] = {f.key: f for f in (
    Figure("acc", "test accuracy", True, "pp", lambda r: _pp(r.test_acc),
           lambda v: format_percent(None if v is None else v / 100)),
    Figure("D1", "D1 growth", False, "ratio", lambda r: _log10(r.d1.max_growth), format_number),
    Figure("D2", "D2 g_L", True, "ratio", lambda r: _log10(r.d2.g_L), format_number),
    Figure("D3", "D3 margin", True, "pp", lambda r: _finite(r.d3.margin_pp),
           lambda v: "n/a" if v is None else f"{v:+.1f} pp"),
    Figure("D4", "D4 blocks at chance", False, "pp", _d4,
           lambda v: "n/a" if v is None else f"{v:.0f}%"),
)}

#: default tolerances on each figure's scale (pp, or log10 of the factor)
DEFAULT_TOLERANCES = {"acc": 2.0, "D1": math.log10(2.0), "D2": 1.0, "D3": 2.0, "D4": 2.0}


@dataclass(frozen=True)
class FailRule:
    """Which changes are regressions: a verdict that gets worse (when ``verdict``), and a
    figure in ``tolerances`` that moves the wrong way by more than its tolerance and, with two
    or more seeds on each side, by more than seed noise (one-sided Welch test at ``alpha``)."""

    verdict: bool = True
    tolerances: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    alpha: float = DEFAULT_ALPHA

    def describe(self) -> str:
        parts = ["verdict"] if self.verdict else []
        parts += [f"{k}:{FIGURES[k].tolerance_text(t).replace(' pp', '')}"
                  for k, t in self.tolerances.items()]
        return ",".join(parts + [f"alpha:{self.alpha:g}"]) if parts else "none"


def parse_fail_rule(text: str | None, *, flag: str = "--compare-fail") -> FailRule:
    """A :class:`FailRule` from ``--compare-fail`` (None or "": the default); a bad item is a
    ConfigError naming it."""
    if text is None or not text.strip():
        text = DEFAULT_SPEC
    names = {key.lower(): key for key in FIGURES}
    verdict, tolerances, alpha = False, {}, DEFAULT_ALPHA
    items = [item.strip() for item in text.split(",")]
    if [item.lower() for item in items] == ["none"]:
        return FailRule(verdict=False, tolerances={})
    for item in items:
        name, sep, value = (part.strip() for part in item.partition(":"))
        lower = name.lower()
        if lower == "verdict" and not sep:
            verdict = True
        elif lower == "alpha":
            alpha = _number(value, item, flag)
            if not 0 < alpha <= 0.5:
                raise ConfigError(f"{flag} {item!r}: alpha must be within (0, 0.5]")
        elif lower in names:
            key = names[lower]
            tolerances[key] = (_tolerance(FIGURES[key], value, item, flag) if sep
                               else DEFAULT_TOLERANCES[key])
        else:
            known = ", ".join(["verdict", *FIGURES, "alpha", "none"])
            raise ConfigError(f"{flag} {item!r}: unknown item; use a comma-separated list of "
                              f"{known} (a figure may take :TOLERANCE, e.g. acc:2 or D1:x2)")
    return FailRule(verdict=verdict, tolerances=tolerances, alpha=alpha)


def _number(text: str, item: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{flag} {item!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{flag} {item!r}: the number must be finite")
    return value


def _tolerance(figure: Figure, text: str, item: str, flag: str) -> float:
    if figure.scale == "ratio":
        factor = _number(text[1:] if text[:1].lower() == "x" else text, item, flag)
        if not factor > 1:
            raise ConfigError(f"{flag} {item!r}: {figure.key}'s tolerance is a factor above 1, "
                              f"e.g. {figure.key}:x2")
        return math.log10(factor)
    amount = _number(text.removesuffix("pp").strip(), item, flag)
    if amount < 0:
        raise ConfigError(f"{flag} {item!r}: the tolerance is in pp and at least 0")
    return amount


def figure_values(reports: list[Report], key: str) -> list[float]:
    """The figure of each report on its scale, leaving out those without one."""
    found = [FIGURES[key].value(r) for r in reports]
    return [v for v in found if v is not None]


def worse_change(key: str, before: float, after: float) -> float:
    """How much worse ``after`` is than ``before`` on the figure's scale (negative: better)."""
    return before - after if FIGURES[key].higher_is_better else after - before


__all__ = ["DEFAULT_SPEC", "FIGURES", "FailRule", "Figure", "figure_values", "parse_fail_rule",
           "worse_change"]
