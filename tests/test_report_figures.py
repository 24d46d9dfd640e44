"""The report's figures hold the report's numbers: read back from the figure objects (line data,
bar heights, reference lines), never compared as pixels.  Also: what the training history
records per epoch, and figures of subjects with missing or non-finite parts."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from report_entries import EVAL_SIZE, diverged_entry, subject_entry, trained_run

from fa_checks.diagnostics.protocol import evaluate, gate_across_seeds
from fa_checks.output import figures
from fa_checks.report import Thresholds, format_number

matplotlib = pytest.importorskip("matplotlib")


def artist(figure, gid: str, *, panel: int | None = None):
    """The one artist of ``figure`` (or of its axes number ``panel``) with this gid."""
    axes = figure.axes if panel is None else [figure.axes[panel]]
    found = [a for ax in axes for a in [*ax.lines, *ax.texts, *ax.collections]
             if a.get_gid() == gid]
    assert len(found) == 1, f"{len(found)} artists with gid {gid!r}"
    return found[0]


def ydata(figure, gid: str) -> list[float]:
    return [float(v) for v in artist(figure, gid).get_ydata()]


def xdata(figure, gid: str, *, panel: int | None = None) -> list[float]:
    return [float(v) for v in artist(figure, gid, panel=panel).get_xdata()]


def bars(ax, label_start: str) -> list[float]:
    (container,) = [c for c in ax.containers if c.get_label().startswith(label_start)]
    return [patch.get_height() for patch in container]


def same(values, expected) -> bool:
    """Equal element by element, NaN equal to NaN."""
    values, expected = list(values), list(expected)
    return len(values) == len(expected) and all(
        (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
        for a, b in zip(values, expected, strict=True)
    )


# -- the history records D1 per epoch --------------------------------------------------------
def test_each_epoch_records_the_hidden_norms_and_growth_that_d1_measures():
    run = trained_run("bp", 0)
    assert [e["epoch"] for e in run.history] == [1, 2, 3]
    for entry in run.history:
        norms, growth = entry["hidden_norms"], entry["growth"]
        assert len(norms) == 3 and len(growth) == 2
        assert growth == pytest.approx([norms[l + 1] / norms[l] for l in range(2)])
        assert entry["h_L"] == norms[-1]
    # the last epoch's figures are D1's for the trained model on the trainer's eval batch
    x, y = run.data.eval_batch(EVAL_SIZE)
    report = evaluate(run.model, x, y)
    assert run.history[-1]["hidden_norms"] == pytest.approx(report.d1.hidden_norms, rel=1e-12)
    assert run.history[-1]["growth"] == pytest.approx(report.d1.per_block_growth, rel=1e-12)
    assert run.history[-1]["g_L"] == pytest.approx(report.d2.g_L, rel=1e-12)


def test_a_blown_up_model_records_non_finite_growth_without_raising():
    from fa_checks.training.loop import epoch_figures

    run = trained_run("bp", 0)
    model = copy.deepcopy(run.model)
    with torch.no_grad():
        next(model.blocks[1].parameters()).fill_(math.inf)
    figures_ = epoch_figures(model, *run.data.eval_batch(EVAL_SIZE))
    assert math.isfinite(figures_["hidden_norms"][1])
    assert not math.isfinite(figures_["hidden_norms"][2])
    assert not math.isfinite(figures_["growth"][1])


# -- 1. the scale profile ----------------------------------------------------------------------
def firing_entry(**overrides):
    """A real entry whose D1 fires because the limit is half its largest growth, and whose D2
    fires because the floor is far above its gradient: the thresholds in force are not the
    defaults."""
    plain = subject_entry("bp", 0, **overrides)
    limit = plain["D1"]["max_growth"] / 2
    floor = plain["D2"]["g_L"] * 100
    return subject_entry("bp", 0, thresholds=Thresholds(max_growth=limit, grad_floor=floor),
                         **overrides)


def test_profile_points_are_d1_hidden_norms_and_the_limit_is_the_one_in_force():
    entry = firing_entry()
    d1 = entry["D1"]
    assert d1["fires"] is True and d1["threshold"] != Thresholds().max_growth
    figure = figures.scale_profile(entry)
    top, bottom = figure.axes
    assert xdata(figure, "hidden_norms") == [0, 1, 2]
    assert ydata(figure, "hidden_norms") == pytest.approx(d1["hidden_norms"])
    assert top.get_yscale() == "log"
    assert bars(bottom, "growth") == pytest.approx(d1["per_block_growth"])
    assert ydata(figure, "threshold") == pytest.approx([d1["threshold"]] * 2)
    worst = d1["worst_block"]
    assert xdata(figure, "fired_block") == [worst, worst + 1]
    assert ydata(figure, "fired_block") == pytest.approx(d1["hidden_norms"][worst:worst + 2])
    for l, growth in enumerate(d1["per_block_growth"]):
        assert artist(figure, f"growth_{l}").get_text() == f"×{format_number(growth)}"
    colours = [p.get_facecolor() for p in bottom.containers[0]]
    red = matplotlib.colors.to_rgba(figures.RED)
    assert [c == red for c in colours] == [l == worst for l in range(len(colours))]
    assert figures.notes(figure) == []


def test_profile_of_a_passing_subject_marks_no_block():
    entry = subject_entry("bp", 0)
    assert entry["D1"]["fires"] is False
    figure = figures.scale_profile(entry)
    assert not [a for ax in figure.axes for a in ax.lines if a.get_gid() == "fired_block"]
    assert ydata(figure, "threshold") == [50.0, 50.0]


# -- 2. the training history -------------------------------------------------------------------
def test_history_curves_are_the_checkpoints_history_against_the_limits_in_force():
    entry = firing_entry()
    history = entry["history"]
    figure = figures.training_history(entry)
    epochs = [e["epoch"] for e in history]
    for gid in ("h_L", "g_L", "test_acc"):
        assert xdata(figure, gid) == epochs
        assert ydata(figure, gid) == pytest.approx([e[gid] for e in history])
    assert ydata(figure, "growth") == pytest.approx([max(e["growth"]) for e in history])
    assert ydata(figure, "floor") == pytest.approx([entry["D2"]["floor"]] * 2)
    assert ydata(figure, "threshold") == pytest.approx([entry["D1"]["threshold"]] * 2)
    assert ydata(figure, "baseline") == pytest.approx([entry["D3"]["baseline_acc"]] * 2)
    margin = entry["D3"]["baseline_acc"] + entry["D3"]["threshold_pp"] / 100
    assert ydata(figure, "baseline_plus_margin") == pytest.approx([margin] * 2)
    # every epoch's ||g_L|| is under this floor, and the largest growth over this limit
    floor, limit = entry["D2"]["floor"], entry["D1"]["threshold"]
    first_under = next(e["epoch"] for e in history if e["g_L"] < floor)
    first_over = next(e["epoch"] for e in history if max(e["growth"]) > limit)
    assert xdata(figure, "floor_crossed") == [first_under] * 2
    assert xdata(figure, "limit_crossed") == [first_over] * 2


def test_history_without_per_block_growth_says_so():
    entry = subject_entry("bp", 0)
    for epoch in entry["history"]:  # a checkpoint written before the growth was recorded
        del epoch["growth"], epoch["hidden_norms"]
    entry["D3"] = {"margin_pp": None, "baseline_acc": None, "threshold_pp": 2.0,
                   "fires": None, "explanation": "not evaluated"}
    figure = figures.training_history(entry)
    assert ydata(figure, "h_L") == pytest.approx([e["h_L"] for e in entry["history"]])
    said = " ".join(figures.notes(figure))
    assert "no per-block growth" in said
    assert "no frozen-blocks baseline" in said


# -- 3. credit per layer -----------------------------------------------------------------------
def test_credit_lines_are_the_reports_and_the_null_is_a_band():
    entry = subject_entry("dfa", 0)
    credit = entry["credit"]
    assert credit["null_mean"] is not None
    figure = figures.credit_per_layer(entry)
    for key in ("cosine", "pooled_cosine", "rho"):
        assert ydata(figure, key) == pytest.approx(credit[key])
    assert ydata(figure, "null_mean") == pytest.approx(credit["null_mean"])
    band = artist(figure, "null_band").get_paths()[0].vertices[:, 1]
    for mean, std in zip(credit["null_mean"], credit["null_std"], strict=True):
        assert min(abs(band - (mean - std))) < 1e-9 and min(abs(band - (mean + std))) < 1e-9
    nudge_ax = figure.axes[1]
    assert bars(nudge_ax, "nudging") == pytest.approx(credit["nudging"])
    under = [l for l, c in enumerate(credit["cosine"])
             if c <= credit["null_mean"][l] + credit["null_std"][l]]
    assert figures.at_or_under_null(credit) == under
    if under:
        assert xdata(figure, "at_or_under_null") == under


def test_layers_at_or_under_the_null_are_ringed_and_their_labels_red():
    entry = subject_entry("dfa", 0)
    entry["credit"].update(cosine=[0.5, 0.1, 0.3], null_mean=[0.0, 0.0, 0.0],
                           null_std=[0.1, 0.1, 0.1])  # h_1 sits at the band's top
    figure = figures.credit_per_layer(entry)
    assert xdata(figure, "at_or_under_null") == [1]
    assert ydata(figure, "at_or_under_null") == [0.1]
    labels = {t.get_text(): t.get_color() for t in figure.axes[1].get_xticklabels()}
    assert labels["h_1"] == figures.RED and labels["h_0"] != figures.RED


def test_credit_without_a_null_or_with_missing_layers_says_so():
    entry = subject_entry("bp", 0)  # BP has no random feedback to redraw
    entry["credit"]["rho"][0] = None
    entry["credit"]["cosine"][2] = "NaN"
    figure = figures.credit_per_layer(entry)
    assert same(ydata(figure, "rho"), [math.nan, *entry["credit"]["rho"][1:]])
    assert same(ydata(figure, "cosine"), [*entry["credit"]["cosine"][:2], math.nan])
    said = " ".join(figures.notes(figure))
    assert "no fresh-feedback null" in said and "cosine with BP NaN at h_2" in said


# -- 4. across seeds ---------------------------------------------------------------------------
def test_across_seeds_draws_each_margin_the_mean_and_the_bound_against_the_threshold():
    margins = [subject_entry("bp", seed, baseline_acc=0.25)["D3"]["margin_pp"]
               for seed in (0, 1, 2)]
    summary = gate_across_seeds(margins, method="bp", min_margin_pp=3.0).to_dict()
    single = gate_across_seeds(margins[:1], method="dfa").to_dict()
    figure = figures.across_seeds([summary, single])
    assert ydata(figure, "margins_0") == pytest.approx(summary["margins_pp"])
    assert ydata(figure, "mean_0") == pytest.approx([summary["mean_margin_pp"]] * 2)
    assert ydata(figure, "bound_0") == pytest.approx([summary["lower_bound_pp"]])
    assert sorted(float(line.get_ydata()[0]) for line in figure.axes[0].lines
                  if line.get_gid() == "threshold") == [2.0, 3.0]
    assert single["lower_bound_pp"] == "-Infinity"
    assert "dfa: no lower bound" in " ".join(figures.notes(figure))
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["bp\nn=3", "dfa\nn=1"]


# -- non-finite and missing parts --------------------------------------------------------------
def test_non_finite_figures_are_left_out_and_named():
    entry = diverged_entry()
    assert entry["D1"]["hidden_norms"][2] in ("NaN", "Infinity")
    profile = figures.scale_profile(entry)
    norms = ydata(profile, "hidden_norms")
    assert norms[:2] == pytest.approx(entry["D1"]["hidden_norms"][:2]) and math.isnan(norms[2])
    assert xdata(profile, "not_drawn", panel=0) == [2]  # h_2
    assert xdata(profile, "not_drawn", panel=1) == [1]  # block 1's growth
    assert "h_2" in " ".join(figures.notes(profile))
    history = figures.training_history(entry)
    said = " ".join(figures.notes(history))
    assert "||g_L|| NaN at epoch 3" in said and "diverged in epoch 3" in said
    assert math.isnan(ydata(history, "g_L")[-1]) and math.isnan(ydata(history, "growth")[-1])


def test_missing_history_and_credit_draw_a_note_and_are_listed():
    entry = subject_entry("bp", 0, credit=False, history=False)
    assert entry["credit"] is None and entry["history"] is None
    assert figures.notes(figures.training_history(entry)) == [
        "no training history: the checkpoint records none"]
    assert "no credit metrics" in figures.notes(figures.credit_per_layer(entry))[0]
    assert set(figures.missing_figures(entry)) == {"history", "credit"}
    assert list(figures.subject_figures(entry)) == ["profile"]


def test_a_model_without_blocks_has_one_layer_and_nothing_that_grows():
    entry = subject_entry("bp", 0, num_blocks=0)
    assert len(entry["D1"]["hidden_norms"]) == 1
    figures_ = figures.subject_figures(entry)
    assert list(figures_) == ["profile", "history", "credit"]
    assert ydata(figures_["profile"], "hidden_norms") == pytest.approx(
        entry["D1"]["hidden_norms"])
    assert "no blocks: nothing can grow" in figures.notes(figures_["profile"])
    assert ydata(figures_["credit"], "cosine") == pytest.approx(entry["credit"]["cosine"])


def test_an_error_subject_has_no_figures():
    entry = {"id": "runs/broken.pt", "verdict": "ERROR", "error": "runs/broken.pt: truncated"}
    assert figures.subject_figures(entry) == {}
    assert set(figures.missing_figures(entry)) == set(figures.SUBJECT_FIGURES)


figure_value = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "x"]), st.integers(-3, 10**6),
)
value_list = st.one_of(st.none(), st.lists(figure_value, max_size=5), figure_value)


@given(
    d1=st.fixed_dictionaries({}, optional={
        "hidden_norms": value_list, "per_block_growth": value_list, "threshold": figure_value,
        "fires": figure_value, "worst_block": figure_value}),
    d2=st.fixed_dictionaries({}, optional={"floor": figure_value, "fires": figure_value}),
    history=st.one_of(st.none(), st.lists(st.fixed_dictionaries({}, optional={
        "epoch": figure_value, "h_L": figure_value, "g_L": figure_value,
        "test_acc": figure_value, "growth": value_list, "diverged": figure_value}),
        max_size=4)),
    credit=st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        key: value_list for key in ("cosine", "pooled_cosine", "rho", "nudging", "null_mean",
                                    "null_std")})),
    seeds=st.lists(st.fixed_dictionaries({}, optional={
        "label": st.text(max_size=8), "n": figure_value, "margins_pp": value_list,
        "mean_margin_pp": figure_value, "lower_bound_pp": figure_value,
        "threshold_pp": figure_value, "fires": figure_value}), max_size=3),
)
def test_no_entry_makes_a_figure_raise(d1, d2, history, credit, seeds):
    entry = {"id": "fuzz$1", "D1": d1, "D2": d2, "history": history, "credit": credit}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning
        warnings.filterwarnings("ignore", "Glyph .* missing from font")  # a label's script
        drawn = [draw(entry) for draw in figures.FIGURE_FUNCTIONS.values()]
        drawn.append(figures.across_seeds(seeds))
        for figure in drawn:
            figure.draw_without_rendering()  # the layout and every text, as saving would
            assert figure.axes
