"""D4, direction quality, and mode 2: the test against the fresh-feedback null, the blocks it
judges, the report that carries it, and the faces that gate it when asked."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from report_entries import EVAL_SIZE, subject_entry, trained_run
from scipy import stats

from fa_checks.diagnostics import metrics
from fa_checks.diagnostics.direction import DirectionProbe, feedback_null
from fa_checks.diagnostics.protocol import evaluate
from fa_checks.direction import band, judge_direction, null_p_value
from fa_checks.report import Report, Thresholds

finite = st.floats(-1, 1, allow_nan=False)


# -- the statistic -------------------------------------------------------------------------------
@given(observed=finite, mean=finite, std=st.floats(1e-4, 0.5), draws=st.integers(2, 200))
def test_the_p_value_is_the_t_prediction_tail_and_falls_as_the_figure_rises(observed, mean, std,
                                                                             draws):
    p = null_p_value(observed, mean, std, draws)
    t = (observed - mean) / (std * math.sqrt(1 + 1 / draws))
    assert p == pytest.approx(stats.t.sf(t, draws - 1), abs=1e-12)
    assert null_p_value(observed + 0.1, mean, std, draws) <= p
    assert 0.0 <= p <= 1.0


def test_the_number_of_draws_counts_a_few_draws_ask_for_more_evidence():
    # the same distance from the null's mean, in its own std, is weaker evidence from 3 draws
    assert null_p_value(0.04, 0.0, 0.02, 3) > null_p_value(0.04, 0.0, 0.02, 10) > \
        null_p_value(0.04, 0.0, 0.02, 1000) > stats.norm.sf(2.0) * 0.99
    # at K=10 a figure 1.92 std above the null's mean is the edge of p = 0.05
    edge = 0.0 + 0.02 * math.sqrt(1.1) * stats.t.ppf(0.95, 9)
    assert null_p_value(edge, 0.0, 0.02, 10) == pytest.approx(0.05)


def test_p_values_take_the_t_kernel_without_importing_scipy_stats():
    # every report read recomputes D4's p-values (and a CI comparison its Welch p): in a
    # controller or a cached rerun that is scipy.stats' second of imports for one function
    code = ("import sys; from fa_checks.direction import null_p_value; "
            "from fa_checks.compare.stats import welch_worse_p; "
            "print(null_p_value(0.3, 0.1, 0.05, 7), welch_worse_p([1, 2, 3], [0, 1, 1], "
            "higher_is_better=True), 'scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    p_null, p_welch, imported = done.stdout.split()
    t = 0.2 / (0.05 * math.sqrt(1 + 1 / 7))
    assert float(p_null) == pytest.approx(stats.t.sf(t, 6), rel=1e-12)
    assert 0 < float(p_welch) < 0.5 and imported == "False"


def test_degenerate_nulls_and_non_finite_figures():
    assert null_p_value(0.1, 0.0, 0.0, 5) == 0.0 and null_p_value(0.0, 0.0, 0.0, 5) == 1.0
    assert math.isnan(null_p_value(math.nan, 0.0, 0.1, 5))
    assert null_p_value(0.1, None, None, 0) is None


def test_the_research_codes_bands():
    assert [band(c) for c in (0.275, 0.061, 0.024, -0.026, -0.3, None)] == [
        "reasonable", "mediocre", "poor", "poor", "reasonable", "n/a"]


# -- which blocks, and when D4 fires ---------------------------------------------------------------
def judge(cosine, rho, *, null=True, valid=None, **kw):
    layers = len(cosine)
    zeros, spread = [0.0] * layers, [0.02] * layers
    return judge_direction(
        cosine=cosine, rho=rho, cosine_null=(zeros, spread) if null else None,
        rho_null=(zeros, spread) if null else None, draws=10 if null else 0,
        valid=valid if valid is not None else [True] * layers, **kw)


def test_a_block_beats_chance_only_when_cosine_and_rho_both_do():
    # the penalised DFA of the reproduction, in shape: h_1 clear, h_2 by cosine only, h_3/h_4 not
    d = judge([0.05, 0.275, 0.061, 0.024, -0.026], [None, 0.24, 0.031, 0.027, -0.015])
    assert d.at_chance == [None, False, True, True, True]
    assert (d.judged, d.chance_count, d.share, d.fires) == (4, 3, 0.75, True)
    assert d.p_cosine[0] is None  # the embedding's h_0 is not a block
    assert "3 of 4 blocks" in d.explanation and "(h_2, h_3, h_4)" in d.explanation


def test_it_fires_from_the_chosen_share_of_judged_blocks():
    half = judge([0.0, 0.5, 0.5, 0.0, 0.0], [None, 0.5, 0.5, 0.0, 0.0])
    assert half.share == 0.5 and half.fires  # at least half
    quarter = judge([0.0, 0.5, 0.5, 0.5, 0.0], [None, 0.5, 0.5, 0.5, 0.0])
    assert quarter.share == 0.25 and quarter.fires is False
    assert judge([0.0, 0.5, 0.5, 0.5, 0.0], [None, 0.5, 0.5, 0.5, 0.0], max_share=0.25).fires


def test_blocks_without_a_valid_reference_are_not_judged():
    d = judge([0.0, 0.0, 0.5], [None, 0.0, 0.5], valid=[True, False, True])
    assert d.at_chance == [None, None, False] and d.judged == 1 and d.fires is False
    assert "not judged (reference below D2's floor): h_1" in d.explanation
    nothing = judge([0.0, 0.0, 0.0], [None, 0.0, 0.0], valid=[True, False, False])
    assert nothing.fires is None and nothing.share is None
    assert "below D2's floor at every block" in nothing.explanation


def test_bp_has_no_null_and_passes_the_absolute_floor():
    d = judge([1.0, 1.0, 1.0], [None, 0.97, 0.95], null=False)
    assert d.test == "floor" and d.at_chance == [None, False, False] and d.fires is False
    weak = judge([1.0, 0.04, 1.0], [None, 0.9, 0.9], null=False)
    assert weak.at_chance == [None, True, False]  # below the research code's 0.05
    assert "absolute floor 0.05" in weak.explanation


def test_non_finite_figures_never_beat_chance():
    d = judge([0.0, math.nan, 0.5], [None, 0.5, math.nan])
    assert d.at_chance == [None, True, True] and d.fires


def test_rules_without_a_signal_have_no_d4():
    entry = subject_entry("frozen", 0)
    assert entry["D4"] is None and entry["mode2"] is False
    assert Report.from_dict(entry).d4 is None


# -- the figures it judges -----------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 3, None])
def test_a_probe_gives_perturbation_correlation_along_the_same_directions(chunk):
    run = trained_run("dfa", 0)
    x, y = run.data.eval_batch(EVAL_SIZE)
    model = run.model.eval()
    hidden, grads, _ = metrics.per_sample_gradients(model, x, y)
    credit = run.method.credit(x, y)
    loss = metrics.layer_loss(model, 1, y)
    probe = DirectionProbe(hidden[1], loss, epsilon=1e-3, M=6, seed=11, chunk_size=chunk)
    for a in (credit[1], grads[1], -credit[1]):
        expected = metrics.perturbation_correlation(
            hidden[1], a, loss, epsilon=1e-3, M=6, generator=torch.Generator().manual_seed(11))
        assert probe.rho(a) == pytest.approx(expected, abs=1e-12)


def test_the_null_redraws_the_same_feedback_as_the_cosine_null():
    run = trained_run("dfa", 0)
    x, y = run.data.eval_batch(EVAL_SIZE)
    model = run.model.eval()
    hidden, grads, _ = metrics.per_sample_gradients(model, x, y)
    probes = [None] + [DirectionProbe(hidden[l], metrics.layer_loss(model, l, y), M=4, seed=l)
                       for l in range(1, len(hidden))]
    null, rhos = feedback_null(run.method, x, y, grads, probes, draws=4, seed=3)
    plain = metrics.fresh_feedback_null(run.method, x, y, draws=4, seed=3, reference=grads)
    assert null.cosines == plain.cosines and null.mean == plain.mean
    assert all(r[0] is None and all(-1 <= v <= 1 for v in r[1:]) for r in rhos)
    assert len({tuple(r) for r in rhos}) == 4  # each draw is a fresh signal


def test_the_cosine_test_does_not_move_when_the_eval_batch_is_repeated():
    """The null's spread comes from the feedback draw, not from sampling: the same samples
    twice over give the same cosines, nulls and p-values (rho's random directions differ)."""
    run = trained_run("dfa", 0)
    x, y = run.data.eval_batch(EVAL_SIZE)
    once = evaluate(run.model, x, y, method=run.method, null_draws=4, directions=4)
    twice = evaluate(run.model, x.repeat(2, 1), y.repeat(2), method=run.method, null_draws=4,
                     directions=4)
    assert twice.credit.cosine == pytest.approx(once.credit.cosine, abs=1e-9)
    assert twice.credit.null_std == pytest.approx(once.credit.null_std, abs=1e-9)
    assert twice.d4.p_cosine[1:] == pytest.approx(once.d4.p_cosine[1:], abs=1e-7)


# -- the report ------------------------------------------------------------------------------------
def test_the_report_carries_d4_and_mode2_and_reads_back():
    entry = json.loads(json.dumps(subject_entry("dfa", 0)))
    report = Report.from_dict(entry)
    assert report.d4 is not None and report.to_dict()["D4"] == entry["D4"]
    assert entry["mode2"] == report.mode2
    assert entry["mode2"] == (not entry["D1"]["fires"] and not entry["D2"]["fires"]
                              and bool(entry["D4"]["fires"]))
    assert entry["D2"]["valid"] == [g >= entry["D2"]["floor"] for g in entry["D2"]["grad_norms"]]
    assert len(entry["credit"]["null_rho_mean"]) == len(entry["credit"]["cosine"])


def test_a_report_written_before_d4_still_loads():
    entry = json.loads(json.dumps(subject_entry("dfa", 0)))
    for key in ("D4", "mode2"):
        del entry[key]
    del entry["D2"]["valid"]
    for key in ("null_rho_mean", "null_rho_std"):
        del entry["credit"][key]
    report = Report.from_dict(entry)
    assert report.d4 is None and report.mode2 is False
    assert report.d2.valid == report.d2.layer_validity()


@pytest.mark.parametrize("edit", [
    lambda e: e["D4"].update(fires=not e["D4"]["fires"]),
    lambda e: e["D4"]["at_chance"].__setitem__(1, not e["D4"]["at_chance"][1]),
    lambda e: e["D4"]["p_cosine"].__setitem__(1, 0.5 * (e["D4"]["p_cosine"][1] or 1.0)),
    lambda e: e["credit"]["null_std"].__setitem__(1, 1e-9),
    lambda e: e["D2"]["valid"].__setitem__(1, not e["D2"]["valid"][1]),
])
def test_an_edited_d4_is_refused(edit):
    entry = json.loads(json.dumps(subject_entry("dfa", 0)))
    edit(entry)
    with pytest.raises(ValueError, match="edited or damaged"):
        Report.from_dict(entry)


def test_d4_joins_the_verdict_only_when_gated():
    entry = subject_entry("dfa", 0)
    report = Report.from_dict(copy.deepcopy(entry))
    assert "D4" not in report.failures
    gated = subject_entry("dfa", 0, thresholds=Thresholds(gate_d4=True, d4_share=0.01))
    report = Report.from_dict(gated)
    assert report.d4.gated and report.d4.fires == (report.d4.chance_count > 0)
    assert ("D4" in report.failures) == bool(report.d4.fires)


def test_thresholds_refuse_a_bad_d4_setting():
    for bad in ({"d4_alpha": 0.0}, {"d4_share": 1.5}, {"d4_floor": 2.0}, {"gate_d4": "yes"}):
        with pytest.raises(ValueError, match="Thresholds"):
            Thresholds(**bad)


# -- the faces -------------------------------------------------------------------------------------
def test_one_flag_for_both_faces_gates_d4():
    from fa_checks.flags import SHARED, build_settings

    assert SHARED["gate-d4"].ini and SHARED["gate-d4"].kind == "switch"
    settings = build_settings({"gate-d4": True, "d4-share": 0.25, "d4-alpha": 0.01},
                              flag_prefix="--")
    assert settings.thresholds.gate_d4 and settings.thresholds.d4_share == 0.25
    assert not build_settings({}, flag_prefix="--").thresholds.gate_d4
    with pytest.raises(ValueError):
        SHARED["d4-alpha"].parse("0")


@settings(max_examples=20, deadline=None)
@given(st.lists(st.one_of(st.none(), finite), min_size=2, max_size=6),
       st.floats(0.01, 1.0))
def test_judging_is_a_function_of_the_figures(cosine, share):
    rho = [None if c is None else c / 2 for c in cosine]
    a = judge(cosine, rho, max_share=share)
    b = judge(list(cosine), list(rho), max_share=share)
    assert a.same_judgement(b)
    judged = [c for c in a.at_chance if c is not None]
    assert a.judged == len(judged) and a.chance_count == sum(judged)
    assert a.fires == (None if not judged else sum(judged) / len(judged) >= share)


# -- over training ---------------------------------------------------------------------------------
def test_the_history_records_each_layers_cosine_against_the_null():
    run = trained_run("dfa", 0)
    last = run.history[-1]
    layers = len(last["hidden_norms"])
    assert len(last["credit_cosine"]) == len(last["credit_null_mean"]) == layers
    assert all(s > 0 for s in last["credit_null_std"])
    # the same figure as the protocol's cosine, on the slice of the eval batch it records
    from fa_checks.diagnostics.direction import HISTORY_SAMPLES, credit_history

    x, y = run.data.eval_batch(EVAL_SIZE)
    _, grads, _ = metrics.per_sample_gradients(run.model.eval(), x, y)
    again = credit_history(run.method, x, y, grads)
    n = min(HISTORY_SAMPLES, EVAL_SIZE)
    expected = metrics.mean_cosines(run.method.credit(x[:n], y[:n]), [g[:n] for g in grads])
    assert again["credit_cosine"] == pytest.approx(expected)
    bp = trained_run("bp", 0).history[-1]
    assert bp["credit_cosine"] == pytest.approx([1.0] * layers) and "credit_null_mean" not in bp
    assert "credit_cosine" not in trained_run("frozen", 0).history[-1]


def test_the_history_figure_draws_the_cosines_over_the_null_band():
    from fa_checks.output import figures

    entry = subject_entry("dfa", 0)
    figure = figures.training_history(entry)
    history = entry["history"]
    lines = {a.get_gid(): a for ax in figure.axes for a in ax.get_children() if a.get_gid()}
    assert "history_null_band" in lines
    for l in range(1, len(history[-1]["credit_cosine"])):
        drawn = [float(v) for v in lines[f"credit_cosine_h{l}"].get_ydata()]
        assert drawn == pytest.approx([e["credit_cosine"][l] for e in history])
    del entry["history"][0]["credit_cosine"]  # an epoch (or a checkpoint) without them
    for epoch in entry["history"]:
        epoch.pop("credit_cosine", None)
    assert len(figures.training_history(entry).axes) == 3


def test_the_null_gives_the_same_rho_whether_it_keeps_the_signals_or_not(monkeypatch):
    import fa_checks.diagnostics.direction as direction

    run = trained_run("dfa", 0)
    x, y = run.data.eval_batch(EVAL_SIZE)
    model = run.model.eval()
    hidden, grads, _ = metrics.per_sample_gradients(model, x, y)
    probes = [None] + [DirectionProbe(hidden[l], metrics.layer_loss(model, l, y), M=4, seed=l)
                       for l in range(1, len(hidden))]
    _, kept = feedback_null(run.method, x, y, grads, probes, draws=3, seed=1)
    monkeypatch.setattr(direction, "NULL_SIGNAL_ELEMENTS", hidden[1].numel())  # keeps one
    _, again = feedback_null(run.method, x, y, grads, probes, draws=3, seed=1)
    for row, row_again in zip(kept, again, strict=True):
        assert row[0] is None and row_again[0] is None
        assert row_again[1:] == pytest.approx(row[1:], abs=1e-12)
