"""The figures as a newcomer sees them: laid out and measured (text and legend bounding boxes,
line paths in display space), never compared as pixels."""

from __future__ import annotations

import copy

import pytest
from report_entries import subject_entry

from fa_checks.output import figures
from fa_checks.output.figures.drawing import MIN_TICK_POINTS, STYLE

matplotlib = pytest.importorskip("matplotlib")


def laid_out(figure):
    """The figure drawn once (layout done); its renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.draw_without_rendering()
    return figure.canvas.get_renderer()


def display_path(line):
    return line.get_transform().transform_path(line.get_path())


def exploding_entry() -> dict:
    """BP's entry with DFA's scale profile: the stream grows x8432 across block 1."""
    entry = copy.deepcopy(subject_entry("bp", 0))
    norms = [2.0, 2.5, 2.5 * 8432.0]
    entry["D1"].update(hidden_norms=norms, per_block_growth=[1.25, 8432.0], max_growth=8432.0,
                       fires=True, worst_block=1)
    return entry


def test_growth_labels_sit_clear_of_every_line_and_the_red_segment() -> None:
    figure = figures.scale_profile(exploding_entry())
    renderer = laid_out(figure)
    top = figure.axes[0]
    lines = [line for line in top.lines if line.get_gid() in ("hidden_norms", "fired_block")]
    assert {line.get_gid() for line in lines} == {"hidden_norms", "fired_block"}
    labels = [t for t in top.texts if (t.get_gid() or "").startswith("growth_")]
    assert [t.get_text() for t in labels] == ["×1.25", "×8432"]
    for text in labels:
        box = text.get_window_extent(renderer)
        for line in lines:
            assert not display_path(line).intersects_bbox(box, filled=False), (
                f"{text.get_text()} is drawn over {line.get_gid()}")
        assert top.get_window_extent(renderer).contains(box.x0, box.y0)


@pytest.mark.parametrize("draw", ["profile", "history", "credit"])
def test_no_legend_covers_a_line(draw: str) -> None:
    entry = exploding_entry()
    figure = figures.FIGURE_FUNCTIONS[draw](entry)
    renderer = laid_out(figure)
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert legends
    for ax in figure.axes:
        legend = ax.get_legend()
        if legend is not None:  # beside its axes: no reference line spanning them can cross it
            assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for line in ax.lines:
                assert not display_path(line).intersects_bbox(box, filled=False), (
                    f"{draw}: the legend covers {line.get_gid() or line.get_label()}")


def test_the_d2_floor_in_bps_history_is_clear_of_the_legend() -> None:
    figure = figures.training_history(subject_entry("bp", 0))
    renderer = laid_out(figure)
    top = figure.axes[0]
    (floor,) = [line for line in top.lines if line.get_gid() == "floor"]
    box = top.get_legend().get_window_extent(renderer)
    assert not display_path(floor).intersects_bbox(box, filled=False)
    # the floor spans the axes, so only a legend outside them is sure to be clear of it
    assert not box.overlaps(top.get_window_extent(renderer))


def test_tick_labels_are_readable_at_the_figures_size() -> None:
    assert STYLE["xtick.labelsize"] >= MIN_TICK_POINTS and STYLE["ytick.labelsize"] >= 8
    figure = figures.scale_profile(exploding_entry())
    laid_out(figure)
    for ax in figure.axes:
        for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            assert label.get_fontsize() >= MIN_TICK_POINTS


def test_the_page_draws_each_figure_at_its_full_width() -> None:
    from fa_checks.output.html import render_html

    page = render_html([subject_entry("bp", 0)], table_header=["subject"],
                       table_rows=[["bp-seed0"]])
    assert "figure svg{width:100%;height:auto" in page
    assert "max-width:100%" not in page


def test_bps_three_identical_credit_lines_are_all_shown_and_said() -> None:
    entry = subject_entry("bp", 0)
    credit = entry["credit"]
    assert credit["cosine"][1:] == pytest.approx(credit["rho"][1:], abs=1e-3)  # BP: all 1.0
    figure = figures.credit_per_layer(entry)
    renderer = laid_out(figure)
    ax = figure.axes[0]
    lines = {line.get_gid(): line for line in ax.lines
             if line.get_gid() in ("cosine", "pooled_cosine", "rho")}
    assert len({line.get_marker() for line in lines.values()}) == 3
    assert len({line.get_linestyle() for line in lines.values()}) == 3
    # the markers of one layer sit side by side, not on top of each other
    layer = 1
    boxes = []
    for line in lines.values():
        x, y = line.get_xdata()[layer], line.get_ydata()[layer]
        boxes.append(ax.transData.transform((x, y))[0])
    boxes.sort()
    size = max(line.get_markersize() for line in lines.values()) * renderer.points_to_pixels(1)
    assert all(b - a >= size for a, b in zip(boxes, boxes[1:], strict=False))
    if all(abs(c - r) <= 1e-3 for c, r in zip(credit["cosine"], credit["rho"], strict=True)):
        assert any("coincide at every layer" in note for note in figures.notes(figure))


def test_the_fresh_feedback_null_band_is_outlined_and_labelled() -> None:
    entry = subject_entry("dfa", 0)
    figure = figures.credit_per_layer(entry)
    laid_out(figure)
    ax = figure.axes[0]
    (band,) = [c for c in ax.collections if c.get_gid() == "null_band"]
    assert band.get_linewidth()[0] >= 0.8 and band.get_edgecolor()[0][3] > 0
    (label,) = [t for t in ax.texts if t.get_gid() == "null_label"]
    assert label.get_text().startswith("null band: |mean| ≤ ")


def test_a_sweeps_across_seeds_labels_do_not_collide() -> None:
    summaries = [{"label": f"redraw-dfa-penalty={p}", "method": "redraw-dfa", "n": 2,
                  "margins_pp": [1.0, 2.0], "mean_margin_pp": 1.5, "lower_bound_pp": -3.0,
                  "threshold_pp": 2.0, "fires": True}
                 for p in ("0", "0.0001", "0.001", "0.01", "0.1", "1")]
    figure = figures.across_seeds(summaries)
    renderer = laid_out(figure)
    boxes = [t.get_window_extent(renderer) for t in figure.axes[0].get_xticklabels()
             if t.get_text()]
    assert len(boxes) == len(summaries)
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert not a.overlaps(b), "two across-seeds labels collide"
