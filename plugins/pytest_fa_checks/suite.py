"""The protocol as a test suite: the built-in items the plugin collects for each subject.

pytest collects this module when the user names a subject (``--fa-checkpoint`` or
``--fa-method``) and no test paths.  Each test gets one subject's report through the
``fa_report`` fixture; a failure reads as the library's own sentence with the numbers.  The
credit gates exist only when their threshold is set, and the across-seeds gate only for a
method trained with two or more seeds (``fa_gate`` tells the plugin which is which).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from fa_checks.values import printable

Test = TypeVar("Test", bound=Callable[..., Any])


class Gate(enum.Enum):
    """An opt-in item: collected only when what it gates applies to this run."""

    MIN_COSINE = "min-cosine"  # --fa-min-cosine was given
    MIN_RHO = "min-rho"  # --fa-min-rho was given
    GATE_D4 = "gate-d4"  # --fa-gate-d4 (or ini fa_gate_d4) was given
    ACROSS_SEEDS = "across-seeds"  # a method was trained with two or more seeds


def checks(diagnostic: str, gate: Gate | None = None) -> Callable[[Test], Test]:
    """Mark a test as the item of ``diagnostic`` ("D1", "COS", ...), opt-in when ``gate``."""

    def mark(test: Test) -> Test:
        test.fa_diagnostic = diagnostic  # type: ignore[attr-defined]
        test.fa_gate = gate  # type: ignore[attr-defined]
        return test

    return mark


def _refuse_diverged(report: Any, what: str) -> None:
    cause = report.divergence
    if cause is not None:
        pytest.fail(printable(f"{what} failed: {cause}; a diverged model passes no diagnostic"),
                    pytrace=False)


def _gate(fires: bool | None, what: str, explanation: str) -> None:
    if fires is None:
        pytest.skip(printable(f"{what} not evaluated: {explanation}"))
    if fires:
        pytest.fail(printable(f"{what} failed: {explanation}"), pytrace=False)


@checks("D1")
def test_scale_stability(fa_report: Any) -> None:
    """D1: no block multiplies the median per-sample hidden norm by more than the limit."""
    _refuse_diverged(fa_report, "D1 scale stability")
    _gate(fa_report.d1.fires, "D1 scale stability", fa_report.d1.explanation)


@checks("D2")
def test_reference_validity(fa_report: Any) -> None:
    """D2: the per-sample BP gradient at the deepest hidden state is above the floor."""
    _refuse_diverged(fa_report, "D2 reference validity")
    _gate(fa_report.d2.fires, "D2 reference validity", fa_report.d2.explanation)


@checks("D3")
def test_depth_utility(fa_report: Any) -> None:
    """D3: the trained blocks beat frozen random blocks by at least the margin."""
    _refuse_diverged(fa_report, "D3 depth utility")
    _gate(fa_report.d3.fires, "D3 depth utility", fa_report.d3.explanation)


@checks("D4", Gate.GATE_D4)
def test_direction_quality(fa_report: Any) -> None:
    """Opt-in D4: the blocks with a valid BP reference learn from a signal better than chance."""
    _refuse_diverged(fa_report, "D4 direction quality")
    if fa_report.d4 is None:
        pytest.skip("D4 not evaluated: the method gives no credit signal")
    _gate(fa_report.d4.fires, "D4 direction quality", fa_report.d4.explanation)


def _credit_gate(report: Any, what: str, fires: str, missing: str) -> None:
    """An opt-in credit gate: ``credit.<fires>`` against its minimum."""
    _refuse_diverged(report, what)
    credit = report.credit
    if credit is None:
        pytest.skip(f"the method gives no credit signal, so there is no {missing} to gate")
    _gate(getattr(credit, fires), what, credit.explanation)


@checks("COS", Gate.MIN_COSINE)
def test_credit_cosine(fa_report: Any) -> None:
    """Opt-in: the credit signal's mean cosine with the BP gradient is above the minimum."""
    _credit_gate(fa_report, "credit cosine", "cosine_fires", "cosine")


@checks("RHO", Gate.MIN_RHO)
def test_credit_rho(fa_report: Any) -> None:
    """Opt-in: the credit signal predicts the loss change along random directions."""
    _credit_gate(fa_report, "credit perturbation correlation", "rho_fires", "correlation")


@checks("D3-seeds", Gate.ACROSS_SEEDS)
def test_depth_utility_across_seeds(fa_across_seeds: Any) -> None:
    """D3 over seeds: the one-sided Student-t 95% lower bound on the mean margin clears it."""
    gate = fa_across_seeds
    _gate(gate.fires, "D3 across seeds", gate.explanation)
