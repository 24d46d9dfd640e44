"""A report read from a file is a claim: judged here against the thresholds in force, never
against the thresholds it carries, and every derived figure recomputed from what it derives from.

A report fa-checks wrote holds the figures it measured (hidden norms, gradient norms, test and
baseline accuracies, per-layer credit) and figures derived from them (D1's growths and their
maximum, D2's ``g_L``, D3's margin, the credit means), plus the thresholds and ``fires`` flags
of the run that wrote it.  :func:`judge_entry` reads such an entry as data:

* the **measured figures** must be figures the protocol can produce (norms >= 0 or non-finite,
  accuracies within [0, 1], correlations within [-1, 1], one value per layer);
* each **derived figure** must equal what its sources give (the growths are the ratios of the
  norms, ``g_L`` the last gradient norm, the margin ``100 * (test_acc - baseline_acc)``);
  anything else is a :class:`ClaimRefused` naming the entry and the field;
* the **recorded thresholds** must be thresholds fa-checks can run with (finite, in range), and
  the recorded flags must agree with them (else the file was edited);
* the **verdict** is then computed anew from the figures and the thresholds *in force* (flags,
  ini, defaults); when those differ from the recorded ones, a note says so.  Every sentence is
  worded anew from the figures: no sentence of the file is shown as a diagnostic's finding.

What a report cannot prove: that its measured figures came from the model it names (only
``fa-checks check`` measures).  Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ConfigError, one_line
from .findings import (
    credit_sentence,
    deep_mean,
    depth_utility,
    growth_of,
    max_growth_of,
    reference_from_norms,
    scale_from_norms,
)
from .report import (
    CreditMetrics,
    Report,
    Thresholds,
    depth_margin,
    divergence_of,
    format_number,
    format_percent,
    is_finite,
)

#: a report file larger than this is refused before it is parsed
MAX_REPORT_BYTES = 64 * 2**20
#: tolerance when a derived figure meets its recomputation (JSON keeps 17 digits: exact here)
RELATIVE_TOLERANCE = 1e-9


class ClaimRefused(ConfigError):
    """A report entry that is not a claim fa-checks can judge (one line, naming the field)."""

@dataclass
class Judgement:
    """What the thresholds in force make of a stored report."""
    report: Report
    #: one sentence per threshold that differs from the one the report was made with
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InForce:
    """What a stored report is judged against: the thresholds, whether D3 is required, and
    the baseline accuracy the user gave (None: the report's own baseline, a measured figure)."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    depth_utility: bool = True
    baseline_acc: float | None = None

    @classmethod
    def of(cls, settings: Any) -> InForce:
        """What a :class:`~fa_checks.settings.Settings` puts in force."""
        return cls(settings.thresholds, depth_utility=bool(settings.depth_utility),
                   baseline_acc=settings.baseline_acc)


# -- reading the entry ---------------------------------------------------------------------------
def judge_entry(data: Mapping[str, Any], in_force: InForce, *, where: str) -> Judgement:
    """The entry's report, its figures checked and its verdict computed against ``in_force``;
    ``where`` names it in every refusal (``"run.json: subjects[2]"``)."""
    try:
        stored = Report.from_dict(data)  # types, sections, flags against recorded thresholds
        recorded = _recorded_thresholds(stored, where)
        _check_figures(stored, where)
        report = _judged(stored, in_force, where)
        notes = _differences(recorded, report, in_force, where)
    except ClaimRefused:
        raise
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        # a value no report holds (an integer of 400 digits, a list where a number goes)
        raise ClaimRefused(f"{where}: {one_line(exc)}") from None
    return Judgement(report, notes)


def _refuse(where: str, fieldname: str, problem: str) -> ClaimRefused:
    return ClaimRefused(f"{where}: {fieldname} {problem}; a report is a claim, and this one "
                        "does not agree with itself (edited or damaged)")


def _recorded_thresholds(report: Report, where: str) -> dict[str, float | None]:
    recorded: dict[str, float | None] = {
        "max_growth": report.d1.threshold,
        "grad_floor": report.d2.floor,
        "min_margin_pp": report.d3.threshold_pp,
        "min_cosine": None if report.credit is None else report.credit.min_cosine,
        "min_rho": None if report.credit is None else report.credit.min_rho,
    }
    names = {"max_growth": "D1.threshold", "grad_floor": "D2.floor",
             "min_margin_pp": "D3.threshold_pp", "min_cosine": "credit.min_cosine",
             "min_rho": "credit.min_rho"}
    for name, value in recorded.items():
        try:
            Thresholds(**{name: value})
        except ValueError:
            raise _refuse(where, names[name], f"is {_show(value)}, not a threshold fa-checks "
                                              "runs with") from None
    return recorded


def _same(a: Any, b: Any) -> bool:
    number = (int, float)
    if not (isinstance(a, number) and isinstance(b, number)) or isinstance(a, bool) \
            or isinstance(b, bool):
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-300)


def _show(value: Any) -> str:
    return format_number(value) if isinstance(value, (int, float)) else repr(value)[:40]


def _check_figures(report: Report, where: str) -> None:
    """Measured figures are possible ones; derived figures equal their recomputation."""
    if not (is_finite(report.test_acc) and 0 <= report.test_acc <= 1):
        raise _refuse(where, "test_acc", f"is {_show(report.test_acc)}, not a fraction in [0, 1]")
    norms, grads = report.d1.hidden_norms, report.d2.grad_norms
    if not norms:
        raise _refuse(where, "D1.hidden_norms", "is empty")
    if len(grads) != len(norms):
        raise _refuse(where, "D2.grad_norms", f"has {len(grads)} layers where D1.hidden_norms "
                                              f"has {len(norms)}")
    for name, column in (("D1.hidden_norms", norms), ("D2.grad_norms", grads)):
        if any(is_finite(v) and v < 0 for v in column):
            raise _refuse(where, name, "holds a negative norm")
    growth = [growth_of(norms[i], norms[i + 1]) for i in range(len(norms) - 1)]
    stored = report.d1.per_block_growth
    if len(stored) != len(growth) or not all(map(_same, stored, growth)):
        raise _refuse(where, "D1.per_block_growth", "is not the ratios of D1.hidden_norms")
    if not _same(report.d1.max_growth, max_growth_of(norms, growth)):
        raise _refuse(where, "D1.max_growth", f"is {_show(report.d1.max_growth)}, but its "
                      f"hidden norms give {_show(max_growth_of(norms, growth))}")
    if not _same(report.d2.g_L, grads[-1]):
        raise _refuse(where, "D2.g_L", f"is {_show(report.d2.g_L)}, but its last gradient "
                                       f"norm is {_show(grads[-1])}")
    d3 = report.d3
    if (d3.baseline_acc is None) != (d3.margin_pp is None):
        raise _refuse(where, "D3.margin_pp", "and D3.baseline_acc must both be given or both "
                                             "be null")
    if d3.baseline_acc is not None:
        if not (is_finite(d3.baseline_acc) and 0 <= d3.baseline_acc <= 1):
            raise _refuse(where, "D3.baseline_acc", f"is {_show(d3.baseline_acc)}, not a "
                                                    "fraction in [0, 1]")
        margin = depth_margin(report.test_acc, d3.baseline_acc)
        if not _same(d3.margin_pp, margin):
            raise _refuse(where, "D3.margin_pp", f"is {_show(d3.margin_pp)} pp, but test_acc "
                          f"and D3.baseline_acc give {_show(margin)} pp")
    if report.credit is not None:
        _check_credit(report.credit, len(norms), where)


def _check_credit(credit: CreditMetrics, layers: int, where: str) -> None:
    for name in ("cosine", "pooled_cosine", "rho", "nudging", "null_mean", "null_std"):
        column = getattr(credit, name)
        if column is None:
            continue
        if len(column) != layers:
            raise _refuse(where, f"credit.{name}", f"has {len(column)} layers, not {layers}")
        bounded = name in ("cosine", "pooled_cosine", "rho", "null_mean")
        if bounded and any(is_finite(v) and not -1 - 1e-3 <= v <= 1 + 1e-3 for v in column):
            raise _refuse(where, f"credit.{name}", "holds a value outside [-1, 1]")
    for name, column in (("deep_cosine", credit.cosine), ("deep_rho", credit.rho)):
        if not _same(getattr(credit, name), deep_mean(column)):
            raise _refuse(where, f"credit.{name}", f"is {_show(getattr(credit, name))}, but "
                          f"its per-layer figures give {_show(deep_mean(column))}")


# -- judging against the thresholds in force -------------------------------------------------------
def _judged(stored: Report, in_force: InForce, where: str) -> Report:
    limits = in_force.thresholds
    norms, grads = stored.d1.hidden_norms, stored.d2.grad_norms
    # the stored sentence is kept only when it is one these figures give (wording varies)
    candidates = [scale_from_norms(norms, limits.max_growth, stream=stream, layer_norm=ln)
                  for stream in ("residual stream", "hidden state") for ln in (False, True)]
    d1 = next((c for c in candidates if c.explanation == stored.d1.explanation), candidates[0])
    d2 = reference_from_norms(grads, limits.grad_floor)
    baseline = stored.d3.baseline_acc if in_force.baseline_acc is None else in_force.baseline_acc
    if baseline is None and in_force.depth_utility:
        raise ClaimRefused(
            f"{where}: has no D3 margin (it was made without a frozen-blocks baseline), and D3 "
            "is in force; give the baseline accuracy (--baseline-acc) to judge it, or "
            "--baseline none to accept a report without D3")
    if not in_force.depth_utility:
        baseline = None
    d3 = depth_utility(stored.test_acc, baseline, limits.min_margin_pp,
                       divergence=divergence_of(d1, d2))
    credit = None
    if stored.credit is not None:
        credit = replace(stored.credit, min_cosine=limits.min_cosine, min_rho=limits.min_rho)
        credit.judge()
        credit.explanation = credit_sentence(credit, len(norms) - 1,
                                             reference_valid=not d2.fires)
    d4 = None
    if stored.d4 is not None and credit is not None:  # D4 judged anew, by the gate in force
        from .direction import direction_from

        d4 = direction_from(credit, d2.valid or [], alpha=limits.d4_alpha,
                            max_share=limits.d4_share, floor=limits.d4_floor,
                            gated=limits.gate_d4)
    return Report(test_acc=stored.test_acc, d1=d1, d2=d2, d3=d3, credit=credit, d4=d4,
                  num_samples=stored.num_samples, subject=dict(stored.subject),
                  history=stored.history)


def _differences(recorded: Mapping[str, float | None], report: Report, in_force: InForce,
                 where: str) -> list[str]:
    limits = in_force.thresholds.to_dict()
    notes = [f"{name}={_show(recorded[name])} (recorded) -> {_show(limits[name])} (in force)"
             for name in recorded if not _same(recorded[name], limits[name])]
    stored_baseline = report.d3.baseline_acc
    if in_force.baseline_acc is not None:
        notes.append(f"baseline_acc {format_percent(in_force.baseline_acc)} given")
    elif not in_force.depth_utility and stored_baseline is not None:
        notes.append("D3 not in force")
    if not notes:
        return []
    return [f"{where}: judged against the thresholds in force, not those it was made with: "
            + "; ".join(notes)]


# -- cache entries ---------------------------------------------------------------------------------
def check_cached_report(value: Any, in_force: InForce) -> Report:
    """A cached report, served only when it agrees with itself and was judged against exactly
    the thresholds in force (they are part of its key); a ValueError makes the cache
    recompute it."""
    if not isinstance(value, Mapping):
        raise ValueError("a cached report is a JSON object")
    given = in_force.baseline_acc
    if given is not None:  # the baseline in force is part of the key: the entry must hold it
        d3 = value.get("D3")
        if not isinstance(d3, Mapping) or not _same(d3.get("baseline_acc"), given):
            raise ValueError("its baseline accuracy is not the one in force")
    judgement = judge_entry(value, replace(in_force, baseline_acc=None), where="cached report")
    if judgement.notes:
        raise ValueError("it was made with other thresholds than its key says")
    judged, stored = judgement.report, Report.from_dict(value)
    if judged.failures != stored.failures:
        raise ValueError("its verdict is not the one its figures give")
    return judged


__all__ = ["MAX_REPORT_BYTES", "ClaimRefused", "InForce", "Judgement", "check_cached_report",
           "judge_entry"]
