"""What the protocol found, as data: thresholds, the diagnostics' results, the report, its JSON.

This module is the vocabulary every face shares and it imports no torch, so the pytest
controller, ``fa-checks report`` and the HTML page can read reports cheaply.  The diagnostics
that *compute* these figures live in :mod:`.diagnostics.protocol`; both use the judgements here
(``growth_fires``, ``floor_fires``, ``margin_fires``, ``minimum_fires``), so a verdict read back
from a file is recomputed from its figures and cannot disagree with them.

One JSON shape for a subject (``Report.to_dict``), the same from the library, the command line,
the plugin and the cache::

    id, method, seed, path        who was checked
    verdict, mode1, mode2         derived from the figures (never trusted when read back)
    test_acc, num_samples         accuracy (a fraction) and the diagnostic batch size
    D1, D2, D3, D4, credit        each diagnostic's figures, threshold, fires and sentence
                                  (D4 is absent from reports written before it existed)
    history                       the checkpoint's per-epoch record, or null
    subject                       everything else known about the subject (arch, data, epochs)

A subject that could not be evaluated is ``{id, method, seed, path, verdict: "ERROR", error}``.
Non-finite numbers are written as ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .direction import (
    DEFAULT_D4_ALPHA,
    DEFAULT_D4_FLOOR,
    DEFAULT_D4_SHARE,
    MODE2_SENTENCE,
    DirectionQuality,
)
from .files import decode_non_finite, json_safe
from .judgements import (
    MARGIN_DECIMALS,
    AcrossSeeds,
    depth_margin,
    floor_fires,
    format_number,
    format_percent,
    format_signed,
    growth_fires,
    is_finite,
    margin_fires,
    minimum_fires,
)
from .values import describe_annotation, fits_annotation

#: the research code's D2 floor at its eval batch: 10 x the 1e-8 cosine clamp x 128 samples
DEFAULT_GRAD_FLOOR = 10 * 1e-8 * 128
DEFAULT_MAX_GROWTH = 50.0
DEFAULT_MIN_MARGIN_PP = 2.0

DIAGNOSTIC_IDS = ("D1", "D2", "D3", "D4", "COS", "RHO")
ERROR_VERDICT = "ERROR"


#: the fields that say who a subject is, at the top level of its JSON entry
IDENTITY = ("id", "method", "seed", "path")


# -- thresholds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """The limits of the protocol; ``min_cosine`` and ``min_rho`` are opt-in gates (None: off).

    The credit gates compare the mean over the deep layers ``h_1..h_L`` (the embedding's layer
    ``h_0`` is left out, as in the research code) and add ``COS`` / ``RHO`` to the verdict.
    D4 (:mod:`fa_checks.direction`) is always computed with ``d4_alpha``, ``d4_share`` and
    ``d4_floor`` and joins the verdict only when ``gate_d4``.
    """

    max_growth: float = DEFAULT_MAX_GROWTH
    grad_floor: float = DEFAULT_GRAD_FLOOR
    min_margin_pp: float = DEFAULT_MIN_MARGIN_PP
    min_cosine: float | None = None
    min_rho: float | None = None
    gate_d4: bool = False
    d4_alpha: float = DEFAULT_D4_ALPHA
    d4_share: float = DEFAULT_D4_SHARE
    d4_floor: float = DEFAULT_D4_FLOOR

    def __post_init__(self) -> None:
        checks = {
            "max_growth": (self.max_growth, lambda v: v > 0, "a positive number"),
            "grad_floor": (self.grad_floor, lambda v: v >= 0, "a number >= 0"),
            "min_margin_pp": (self.min_margin_pp, lambda v: True, "a finite number of pp"),
            "min_cosine": (self.min_cosine, lambda v: -1 <= v <= 1, "None or within [-1, 1]"),
            "min_rho": (self.min_rho, lambda v: -1 <= v <= 1, "None or within [-1, 1]"),
            "d4_alpha": (self.d4_alpha, lambda v: 0 < v <= 1, "a level in (0, 1]"),
            "d4_share": (self.d4_share, lambda v: 0 < v <= 1, "a share in (0, 1]"),
            "d4_floor": (self.d4_floor, lambda v: -1 <= v <= 1, "within [-1, 1]"),
        }
        if not isinstance(self.gate_d4, bool):
            raise ValueError(f"Thresholds.gate_d4 must be true or false, got {self.gate_d4!r}")
        for name, (value, ok, what) in checks.items():
            if value is None and name in ("min_cosine", "min_rho"):
                continue
            if not (is_finite(value) and ok(value)):
                raise ValueError(f"Thresholds.{name} must be {what}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- results -------------------------------------------------------------------------------------
@dataclass
class ScaleStability:
    """D1: growth of the median per-sample hidden norm across each block."""

    max_growth: float
    per_block_growth: list[float]
    hidden_norms: list[float]
    threshold: float
    fires: bool
    explanation: str
    #: the block with the largest growth (or the first non-finite one); None without blocks
    worst_block: int | None = None

    def judged(self) -> bool:
        return growth_fires(self.max_growth, self.threshold)


@dataclass
class ReferenceValidity:
    """D2: the size of the BP reference, each sample's own loss gradient, at every layer.  It
    fires on h_L alone (the paper's protocol); ``valid[l]``: the floor holds at h_l (a layer's
    credit figures mean something only there; filled in for a report older than it)."""

    g_L: float  # noqa: N815 - the paper's symbol
    grad_norms: list[float]
    floor: float
    fires: bool
    explanation: str
    valid: list[bool] | None = None

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = self.layer_validity()

    def layer_validity(self) -> list[bool]:
        """Whether each h_l's per-sample BP gradient is finite and at or above the floor."""
        return [is_finite(g) and not floor_fires(g, self.floor) for g in self.grad_norms]

    def judged(self) -> bool:
        non_finite = not all(is_finite(g) for g in self.grad_norms)
        return non_finite or floor_fires(self.g_L, self.floor)


@dataclass
class DepthUtility:
    """D3: what the trained blocks add over frozen random blocks; ``fires`` None when skipped."""

    margin_pp: float | None
    baseline_acc: float | None
    threshold_pp: float
    fires: bool | None
    explanation: str
    #: the model diverged (NaN or Inf inside): D3 fails whatever the margin says
    diverged: bool = False

    def judged(self) -> bool | None:
        return True if self.diverged else margin_fires(self.margin_pp, self.threshold_pp)


@dataclass
class CreditMetrics:
    """Per-layer credit metrics (index l is hidden state h_l; None where a layer has no signal).

    ``cosine``: mean per-sample cosine with each sample's own BP gradient; ``pooled_cosine``:
    the closed-form limit of ``rho``; ``rho``: perturbation correlation; ``nudging``: mean loss
    change after a small step along the signal (negative is useful); ``null_mean`` /
    ``null_std``: the cosine with freshly drawn feedback (None for rules without random
    feedback).  ``deep_*``: means over layers 1..L.  ``cosine_fires`` / ``rho_fires``: the opt-in
    gates (None when off or not measurable).
    """

    cosine: list[float | None]
    pooled_cosine: list[float | None]
    rho: list[float | None]
    nudging: list[float | None]
    null_mean: list[float] | None = None
    null_std: list[float] | None = None
    null_draws: int = 0
    deep_cosine: float | None = None
    deep_rho: float | None = None
    null_deep_mean: float | None = None
    null_deep_std: float | None = None
    min_cosine: float | None = None
    min_rho: float | None = None
    cosine_fires: bool | None = None
    rho_fires: bool | None = None
    explanation: str = ""
    #: rho with freshly drawn feedback, along the same directions (D4's null of rho)
    null_rho_mean: list[float | None] | None = None
    null_rho_std: list[float | None] | None = None

    def judge(self) -> None:
        """Set the opt-in gates' flags from the figures and the minimums."""
        self.cosine_fires = minimum_fires(self.deep_cosine, self.min_cosine)
        self.rho_fires = minimum_fires(self.deep_rho, self.min_rho)


def divergence_of(d1: ScaleStability, d2: ReferenceValidity) -> str | None:
    """The sentence saying where a model diverged (the first non-finite hidden state, else
    the first non-finite gradient), or None when every norm is finite."""
    if not all(is_finite(v) for v in d1.hidden_norms):
        return d1.explanation
    if not all(is_finite(v) for v in d2.grad_norms):
        return d2.explanation
    return None


_SECTIONS: dict[str, type] = {"D1": ScaleStability, "D2": ReferenceValidity, "D3": DepthUtility}
_ATTRIBUTES = {"D1": "d1", "D2": "d2", "D3": "d3"}


@dataclass
class Report:
    """Everything the protocol found about one model (a checkpoint or a method + seed).

    ``verdict``, ``mode1`` and ``mode2`` are derived from the diagnostics, so they cannot
    disagree with them (``d4``: None without a credit signal, and in reports before D4).
    ``subject`` says who was checked (id, kind, path, method, seed, arch, data, epochs);
    ``history`` is the checkpoint's per-epoch record, when it has one.
    """

    test_acc: float
    d1: ScaleStability
    d2: ReferenceValidity
    d3: DepthUtility
    credit: CreditMetrics | None = None
    num_samples: int | None = None
    subject: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] | None = None
    d4: DirectionQuality | None = None

    @property
    def failures(self) -> list[str]:
        """The ids of the firing diagnostics, in the table's order."""
        fired = {
            "D1": self.d1.fires,
            "D2": self.d2.fires,
            "D3": bool(self.d3.fires),
            "D4": bool(self.d4 and self.d4.gated and self.d4.fires),
            "COS": bool(self.credit and self.credit.cosine_fires),
            "RHO": bool(self.credit and self.credit.rho_fires),
        }
        return [name for name in DIAGNOSTIC_IDS if fired[name]]

    @property
    def verdict(self) -> str:
        failures = self.failures
        return "PASS" if not failures else f"FAIL({'+'.join(failures)})"

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def divergence(self) -> str | None:
        """Why the model diverged (NaN or Inf in its hidden states or gradients), or None.
        A diverged model passes no diagnostic, whatever the others found."""
        return divergence_of(self.d1, self.d2)

    @property
    def mode1(self) -> bool:
        """The silent failure: the stream exploded (D1) and the BP reference collapsed (D2).
        A diverged model (NaN or Inf) fails both too, but it is not silent: not mode 1."""
        return self.d1.fires and self.d2.fires and self.divergence is None

    @property
    def mode2(self) -> bool:
        """D1 and D2 pass and D4 fires (gated or not): the blocks learn from chance."""
        return (not self.d1.fires and not self.d2.fires and self.d4 is not None
                and bool(self.d4.fires) and self.divergence is None)

    @property
    def id(self) -> str:
        return str(self.subject.get("id") or "?")

    def to_dict(self) -> dict[str, Any]:
        """The subject's JSON entry (see the module docstring); strict JSON."""
        entry: dict[str, Any] = {key: self.subject.get(key) for key in IDENTITY}
        entry.update({
            "verdict": self.verdict,
            "mode1": self.mode1,
            "mode2": self.mode2,
            "test_acc": self.test_acc,
            "num_samples": self.num_samples,
            "D1": asdict(self.d1),
            "D2": asdict(self.d2),
            "D3": asdict(self.d3),
            "D4": None if self.d4 is None else asdict(self.d4),
            "credit": None if self.credit is None else asdict(self.credit),
            "history": self.history,
            "subject": dict(self.subject),
        })
        return json_safe(entry)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict`, checking it as the data it is.

        The verdict and every ``fires`` flag are recomputed from the figures and the thresholds
        recorded beside them; a flag that disagrees (a file edited by hand, a cache entry that
        was tampered with) is a ValueError, never a verdict.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"not a fa-checks report: a {type(data).__name__}, not an object")
        missing = [key for key in ("test_acc", *_SECTIONS) if key not in data]
        if missing:
            raise ValueError(f"not a fa-checks report: missing {', '.join(missing)}")
        sections = {key: _section(key, section_cls, data[key])
                    for key, section_cls in _SECTIONS.items()}
        credit = data.get("credit")
        credit_metrics = None if credit is None else _section("credit", CreditMetrics, credit)
        d4 = data.get("D4")  # absent from reports written before D4
        direction = None if d4 is None else _section("D4", DirectionQuality, d4)
        subject = data.get("subject") or {}
        if not isinstance(subject, Mapping):
            raise ValueError("bad subject section in report: not an object")
        subject = dict(subject)
        for key in IDENTITY:
            if data.get(key) is not None:
                subject.setdefault(key, data[key])
        history = data.get("history")
        if history is not None and not (isinstance(history, list)
                                        and all(isinstance(e, Mapping) for e in history)):
            raise ValueError("bad history in report: not a list of per-epoch records")
        test_acc = decode_non_finite(data["test_acc"])
        if not isinstance(test_acc, (int, float)) or isinstance(test_acc, bool):
            raise ValueError(f"bad test_acc in report: {test_acc!r} is not a number")
        num_samples = data.get("num_samples")
        if num_samples is not None and (not isinstance(num_samples, int)
                                        or isinstance(num_samples, bool)):
            raise ValueError(f"bad num_samples in report: {num_samples!r}")
        report = cls(
            test_acc=float(test_acc),
            d1=sections["D1"],
            d2=sections["D2"],
            d3=sections["D3"],
            credit=credit_metrics,
            num_samples=num_samples,
            subject=subject,
            history=None if history is None else [dict(decode_non_finite(e)) for e in history],
            d4=direction,
        )
        report.check_consistent()
        return report

    def check_consistent(self) -> None:
        """ValueError when a stored flag disagrees with the figures and thresholds."""
        for key, attribute in _ATTRIBUTES.items():
            section = getattr(self, attribute)
            if section.judged() is not section.fires:
                raise ValueError(
                    f"{self.id}: {key} says fires={section.fires}, but its figures and "
                    "threshold say otherwise (edited or damaged)"
                )
        growth = self.d1.per_block_growth
        if growth and all(is_finite(g) for g in growth) and max(growth) != self.d1.max_growth:
            raise ValueError(f"{self.id}: D1.max_growth {self.d1.max_growth!r} is not the "
                             f"largest of its per-block growths (edited or damaged)")
        if self.d2.valid != self.d2.layer_validity():
            raise ValueError(f"{self.id}: D2's per-layer validity disagrees with its norms and "
                             "floor (edited or damaged)")
        if self.d4 is not None and not self.d4.agrees_with(self.credit, self.d2.valid or []):
            raise ValueError(f"{self.id}: D4 disagrees with the credit figures it judges "
                             "(edited or damaged)")
        if self.credit is not None:
            stored = (self.credit.cosine_fires, self.credit.rho_fires)
            self.credit.judge()
            if stored != (self.credit.cosine_fires, self.credit.rho_fires):
                raise ValueError(f"{self.id}: its credit gates disagree with their figures "
                                 "(edited or damaged)")

    def describe(self) -> str:
        """A few human lines: the verdict, each diagnostic's figure and its sentence."""

        def mark(fires: bool | None) -> str:
            return "skip" if fires is None else ("FIRE" if fires else "pass")

        name = self.subject.get("id")
        head = f"{name}: " if name else ""
        samples = f"; diagnostics on {self.num_samples} eval samples" if self.num_samples else ""
        lines = [
            f"{head}{self.verdict}  test accuracy {format_percent(self.test_acc)}{samples}"
            + ("  [mode 1]" if self.mode1 else ""),
            f"  D1 scale stability    {mark(self.d1.fires)}  {self.d1.explanation}",
            f"  D2 reference validity {mark(self.d2.fires)}  {self.d2.explanation}",
            f"  D3 depth utility      {mark(self.d3.fires)}  {self.d3.explanation}",
        ]
        if self.d4 is not None:
            lines.append(f"  D4 direction quality  {mark(self.d4.fires)}  {self.d4.explanation}")
        if self.mode2:
            lines[0] += "  [mode 2]"
            lines.append(f"  {MODE2_SENTENCE}")
        if self.credit is not None:
            lines.append(f"  credit                {self.credit.explanation}")
        return "\n".join(lines)

    def failing_sentences(self) -> list[str]:
        """``"D1: <sentence>"`` for each firing diagnostic (a diverged model: the cause first)."""
        lines = []
        for key, attribute in _ATTRIBUTES.items():
            section = getattr(self, attribute)
            if section.fires:
                lines.append(f"{key}: {section.explanation}")
        if self.d4 is not None and self.d4.gated and self.d4.fires:
            lines.append(f"D4: {self.d4.explanation}")
        if self.credit is not None and (self.credit.cosine_fires or self.credit.rho_fires):
            lines.append(f"credit: {self.credit.explanation}")
        return lines


def _section(key: str, section_cls: type, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"bad {key} section in report: not an object")
    decoded = decode_non_finite(dict(value))
    annotations = {item.name: item.type for item in fields(section_cls)}
    for name, given in decoded.items():
        if name in annotations and not fits_annotation(given, str(annotations[name])):
            raise ValueError(f"bad {key} section in report: {name}={reprlib.repr(given)} is "
                             f"not {describe_annotation(str(annotations[name]))}")
    try:
        return section_cls(**decoded)
    except TypeError as exc:
        raise ValueError(f"bad {key} section in report: {exc}") from None


def error_entry(subject: Mapping[str, Any], error: str, *,
                internal: bool = False) -> dict[str, Any]:
    """The JSON entry of a subject that could not be evaluated; ``internal``: because of a
    fault of fa-checks itself, not of the input."""
    entry = {key: subject.get(key) for key in IDENTITY}
    entry.update(verdict=ERROR_VERDICT, error=str(error))
    if internal:
        entry["internal"] = True
    return entry


def is_error_entry(entry: Mapping[str, Any]) -> bool:
    return entry.get("verdict") == ERROR_VERDICT


def read_entries(entries: Sequence[Mapping[str, Any]]) -> list[Report | dict[str, Any]]:
    """Each entry as a checked :class:`Report`, or kept as its error entry."""
    return [dict(e) if is_error_entry(e) else Report.from_dict(e) for e in entries]


__all__ = [
    "DEFAULT_GRAD_FLOOR",
    "DIAGNOSTIC_IDS",
    "ERROR_VERDICT",
    "MARGIN_DECIMALS",
    "MODE2_SENTENCE",
    "AcrossSeeds",
    "CreditMetrics",
    "DepthUtility",
    "ReferenceValidity",
    "Report",
    "ScaleStability",
    "Thresholds",
    "depth_margin",
    "divergence_of",
    "error_entry",
    "floor_fires",
    "format_number",
    "format_percent",
    "format_signed",
    "growth_fires",
    "is_finite",
    "margin_fires",
    "minimum_fires",
    "read_entries",
]
