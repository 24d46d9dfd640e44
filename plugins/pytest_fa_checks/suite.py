"""The protocol as a test suite: the built-in items the plugin collects for each subject.

pytest collects this module when the user names a subject (``--fa-checkpoint`` or
``--fa-method``) and no test paths.  Each test gets one subject's report through the
``fa_report`` fixture; a failure reads as the engine's own sentence with the numbers.  The
credit gates exist only when their threshold is set, and the across-seeds gate only for a
method trained with two or more seeds (``fa_gate`` tells the plugin which is which).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pytest

Test = TypeVar("Test", bound=Callable[..., Any])


def gated(gate: str) -> Callable[[Test], Test]:
    """Collect the test only when ``gate`` applies (see ``FaSession.gate_applies``)."""

    def mark(test: Test) -> Test:
        test.fa_gate = gate  # type: ignore[attr-defined]
        return test

    return mark


def _finite(values: Iterable[Any]) -> bool:
    return all(v is None or math.isfinite(float(v)) for v in values)


def _refuse_diverged(report: Any, what: str) -> None:
    cause = report.divergence
    if cause is not None:
        pytest.fail(f"{what} failed: {cause}; a diverged model passes no diagnostic",
                    pytrace=False)


def _gate(fires: bool | None, figure: float | None, what: str, explanation: str) -> None:
    if fires is None:
        pytest.skip(f"{what} not evaluated: {explanation}")
    if fires or not _finite([figure]):
        pytest.fail(f"{what} failed: {explanation}", pytrace=False)


def test_scale_stability(fa_report: Any) -> None:
    """D1: no block multiplies the median per-sample hidden norm by more than the limit."""
    _refuse_diverged(fa_report, "D1 scale stability")
    d1 = fa_report.d1
    _gate(d1.fires, d1.max_growth, "D1 scale stability", d1.explanation)


def test_reference_validity(fa_report: Any) -> None:
    """D2: the per-sample BP gradient at the deepest hidden state is above the floor."""
    _refuse_diverged(fa_report, "D2 reference validity")
    d2 = fa_report.d2
    _gate(d2.fires, d2.g_L, "D2 reference validity", d2.explanation)


def test_depth_utility(fa_report: Any) -> None:
    """D3: the trained blocks beat frozen random blocks by at least the margin."""
    _refuse_diverged(fa_report, "D3 depth utility")
    d3 = fa_report.d3
    _gate(d3.fires, d3.margin_pp, "D3 depth utility", d3.explanation)


def _credit_gate(report: Any, what: str, gate: str, figure: str, missing: str) -> None:
    """An opt-in credit gate: ``credit.<gate>_fires`` against ``credit.<figure>``."""
    _refuse_diverged(report, what)
    credit = report.credit
    if credit is None:
        pytest.skip(f"the method gives no credit signal, so there is no {missing} to gate")
    _gate(getattr(credit, f"{gate}_fires"), getattr(credit, figure), what, credit.explanation)


@gated("min_cosine")
def test_credit_cosine(fa_report: Any) -> None:
    """Opt-in: the credit signal's mean cosine with the BP gradient is above the minimum."""
    _credit_gate(fa_report, "credit cosine", "cosine", "deep_cosine", "cosine")


@gated("min_rho")
def test_credit_rho(fa_report: Any) -> None:
    """Opt-in: the credit signal predicts the loss change along random directions."""
    _credit_gate(fa_report, "credit perturbation correlation", "rho", "deep_rho", "correlation")


@gated("across_seeds")
def test_depth_utility_across_seeds(fa_seed_summary: Any) -> None:
    """D3 over seeds: the one-sided Student-t 95% lower bound on the mean margin clears it."""
    summary = fa_seed_summary
    _gate(summary.fires, summary.lower_bound_pp, "D3 across seeds", summary.explanation)
