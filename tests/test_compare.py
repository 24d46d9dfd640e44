"""Comparing two reports: which changes are regressions, the store of saved reports, the job
page, and ``fa-checks compare`` as a user runs it.  Entries are made by hand from the report's
own dataclasses, so every figure is the one a test names."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fa_checks.cli.main import main
from fa_checks.compare import ReportStore, compare_reports, parse_fail_rule
from fa_checks.compare.stats import welch_worse_p
from fa_checks.errors import ConfigError
from fa_checks.output.markdown import annotations, markdown_page, md_escape, write_job_page
from fa_checks.report import (
    DepthUtility,
    ReferenceValidity,
    Report,
    ScaleStability,
    Thresholds,
    depth_margin,
    floor_fires,
    growth_fires,
    margin_fires,
)

LIMITS = Thresholds()


def report(subject: str, *, acc: float = 0.8, growth: float = 1.2, g_last: float = 1e-3,
           baseline: float | None = 0.5, method: str | None = None,
           seed: int | None = None) -> Report:
    """A consistent report with these figures (verdicts follow from the default thresholds)."""
    margin = None if baseline is None else depth_margin(acc, baseline)
    return Report(
        test_acc=acc,
        d1=ScaleStability(growth, [growth], [1.0, growth], LIMITS.max_growth,
                          growth_fires(growth, LIMITS.max_growth), f"growth {growth}", 0),
        d2=ReferenceValidity(g_last, [g_last, g_last], LIMITS.grad_floor,
                             floor_fires(g_last, LIMITS.grad_floor), f"g_L {g_last}"),
        d3=DepthUtility(margin, baseline, LIMITS.min_margin_pp,
                        margin_fires(margin, LIMITS.min_margin_pp), f"margin {margin}"),
        subject={"id": subject, "method": method, "seed": seed},
    )


def seeds(method: str, accs: list[float], **figures: Any) -> list[Report]:
    return [report(f"{method}-seed{s}", acc=a, method=method, seed=s, **figures)
            for s, a in enumerate(accs)]


def write(path: Path, reports: list[Any]) -> Path:
    path.write_text(json.dumps({"subjects": [r.to_dict() if isinstance(r, Report) else r
                                             for r in reports]}))
    return path


DEFAULT = parse_fail_rule(None)


# -- what counts --------------------------------------------------------------------------------
def test_the_issue_example_bp_at_a_fifth_of_the_rate_is_a_regression_though_both_pass() -> None:
    # BP, 2 seeds, 3 epochs on MNIST-1D as measured on this machine (fa-checks sweep)
    before = seeds("bp", [0.632, 0.605], baseline=0.324)
    after = seeds("bp", [0.509, 0.480], baseline=0.324)
    assert all(r.passed for r in before + after)
    comparison = compare_reports(before, after, rule=DEFAULT)
    found = comparison.regressions[0]  # then D3's margin, which moves with it here
    assert [r.figure for r in comparison.regressions] == ["test accuracy", "D3 margin"]
    assert found.label == "bp (over seeds)" and found.figure == "test accuracy"
    assert (found.before, found.after) == ("61.9%", "49.5%")
    assert "beyond seed noise (one-sided Welch p=" in found.why and "2 vs 2 seeds" in found.why


def test_a_verdict_that_gets_worse_is_named_with_the_diagnostic_that_now_fails() -> None:
    comparison = compare_reports([report("run.pt", growth=2.0)],
                                 [report("run.pt", growth=80.0)], rule=DEFAULT)
    sentences = [r.sentence() for r in comparison.regressions]
    assert sentences[0] == ("run.pt: verdict PASS -> FAIL(D1): D1 now fails (growth 80.0)")
    assert sentences[1].startswith("run.pt: D1 growth 2 -> 80: x40, worse by more than the x2")
    assert "one seed on a side" in sentences[1]


def test_a_verdict_that_gets_better_or_stays_is_no_regression() -> None:
    failing, passing = report("a", growth=80.0), report("a", growth=1.1)
    assert not compare_reports([failing], [passing], rule=DEFAULT).regressed
    assert not compare_reports([failing], [failing], rule=DEFAULT).regressed


@pytest.mark.parametrize(("drop", "regressed"), [(0.015, False), (0.025, True)])
def test_one_seed_a_side_uses_the_tolerance(drop: float, regressed: bool) -> None:
    comparison = compare_reports([report("x", acc=0.8)], [report("x", acc=0.8 - drop)],
                                 rule=parse_fail_rule("acc:2"))
    assert comparison.regressed is regressed


def test_seed_noise_is_not_a_regression_but_the_same_drop_without_noise_is() -> None:
    noisy = compare_reports(seeds("dfa", [0.70, 0.80]), seeds("dfa", [0.62, 0.82]),
                            rule=DEFAULT)
    assert noisy.regressions == []  # -3 pp on average, but the seeds spread by 10
    row = next(r for r in noisy.rows if r.level == "method")
    assert row.changes["acc"].p_value > 0.05
    tight = compare_reports(seeds("dfa", [0.75, 0.751]), seeds("dfa", [0.72, 0.721]),
                            rule=DEFAULT)
    assert [r.label for r in tight.regressions] == ["dfa (over seeds)"] * 2  # acc and D3


def test_subjects_on_one_side_are_listed_not_fatal() -> None:
    comparison = compare_reports([report("a"), report("b")], [report("b"), report("c")],
                                 rule=DEFAULT)
    assert not comparison.regressed
    assert comparison.notes() == ["only in base: a", "only in new: c"]


def test_a_subject_twice_in_one_report_is_refused() -> None:
    with pytest.raises(ConfigError, match="holds subject 'a' twice"):
        compare_reports([report("a"), report("a")], [report("a")], rule=DEFAULT)


def test_welch_matches_scipy() -> None:
    from scipy import stats

    before, after = [0.8, 0.82, 0.79], [0.7, 0.76]
    expected = stats.ttest_ind(after, before, equal_var=False, alternative="less").pvalue
    assert welch_worse_p(before, after, higher_is_better=True) == pytest.approx(expected)
    assert welch_worse_p([1, 1], [2, 2], higher_is_better=False) == 0.0
    assert welch_worse_p([1, 1], [1, 1], higher_is_better=False) == 1.0


finite = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(finite, min_size=1, max_size=4), st.floats(0.0, 0.3))
def test_a_run_never_regresses_against_itself_or_by_getting_better(accs: list[float],
                                                                   gain: float) -> None:
    before = seeds("m", accs)
    assert not compare_reports(before, before, rule=DEFAULT).regressed
    better = seeds("m", [min(1.0, a + gain) for a in accs])
    assert not compare_reports(before, better, rule=DEFAULT).regressed


@pytest.mark.parametrize(("spec", "message"), [
    ("speed:10%", "unknown item"), ("D1:x0.5", "a factor above 1"), ("acc:-1", "at least 0"),
    ("alpha:2", "within (0, 0.5]"), ("acc:nan", "must be finite"), ("acc:lots", "not a number"),
])
def test_a_bad_fail_rule_is_one_sentence_naming_the_item(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        parse_fail_rule(spec)
    assert repr(spec.split(",")[0]) in str(caught.value)


def test_fail_rules_read_as_written() -> None:
    rule = parse_fail_rule("acc:1, D2:x100,alpha:0.01")
    assert not rule.verdict and rule.alpha == 0.01
    assert rule.tolerances == {"acc": 1.0, "D2": pytest.approx(2.0)}
    assert parse_fail_rule("none").describe() == "none"
    assert not compare_reports([report("a", growth=2)], [report("a", growth=90)],
                               rule=parse_fail_rule("none")).regressed


# -- the store ----------------------------------------------------------------------------------
def test_the_store_numbers_runs_and_finds_them_by_name_number_prefix_or_last(
    tmp_path: Path,
) -> None:
    store = ReportStore(tmp_path / "store")
    data = {"subjects": [r.to_dict() for r in seeds("bp", [0.8, 0.81])]}
    first = store.save(data, here=tmp_path, now=0)
    second = store.save(data, here=tmp_path, now=60)
    assert first.name == "0001_19700101T000000Z_nogit_bp_s2.json"
    assert second.name.startswith("0002_19700101T000100Z_")
    assert json.loads(second.read_text())["saved"]["settings"] == "bp_s2"
    assert store.resolve("last") == second
    assert store.resolve("1") == store.resolve("0001") == first
    assert store.resolve(second.name) == second
    with pytest.raises(ConfigError, match="names several saved reports"):
        store.resolve("000")
    with pytest.raises(ConfigError, match="names no saved report"):
        store.resolve("0003")
    (store.root / "0009_x.json").symlink_to(first)  # not something the store wrote
    assert store.resolve("last") == second


def test_an_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="save one first with --autosave"):
        ReportStore(tmp_path / "none").resolve("last")


def test_the_commit_is_in_the_name_inside_a_git_work_tree(tmp_path: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short=8", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    saved = ReportStore(tmp_path / "s").save({"subjects": [report("a").to_dict()]},
                                             here=tmp_path)
    assert f"_{head}_" in saved.name


# -- the command line ---------------------------------------------------------------------------
def test_compare_exits_0_1_and_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "base.json", seeds("bp", [0.632, 0.605]))
    worse = write(tmp_path / "worse.json", seeds("bp", [0.509, 0.480]))
    assert main(["compare", str(base), str(base)]) == 0
    assert "no regression of base.json against base.json" in capsys.readouterr().out
    assert main(["compare", str(base), str(worse), "--md", str(tmp_path / "page.md")]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION bp (over seeds): test accuracy 61.9% -> 49.5%" in out
    assert "### Comparison: worse.json against base.json" in (tmp_path / "page.md").read_text()
    assert main(["compare", str(base), str(worse), "--compare-fail", "none"]) == 0


@pytest.mark.parametrize("content", [
    "not json", "[]", '{"subjects": []}', '{"subjects": [{"test_acc": 0.5}]}',
    '{"subjects": [1, 2]}',
])
def test_a_malformed_report_is_refused_in_one_line(tmp_path: Path, content: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "base.json", [report("a")])
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["compare", str(base), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]


def test_an_edited_verdict_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = report("a", growth=80.0).to_dict()
    entry["D1"]["fires"] = False  # a failing run passed off as passing
    edited = write(tmp_path / "edited.json", [entry])
    assert main(["compare", str(edited), str(edited)]) == 2
    assert "edited or damaged" in capsys.readouterr().err


# -- the job page -------------------------------------------------------------------------------
def test_strings_from_reports_cannot_draw_on_the_job_page() -> None:
    evil = "a|b [x](http://e) <img src=x> *y* `z`\n# heading"
    text = md_escape(evil)
    assert "\n" not in text and "<" not in text and "|" not in text.replace("\\|", "")
    assert "\\[x\\]" in text and "\\*y\\*" in text and "\\`z\\`" in text
    page = markdown_page([report(evil).to_dict()])
    rows = [line for line in page.splitlines() if line.startswith("| a")]
    assert len(rows) == 1 and rows[0].count(" | ") == 5  # the cells stay six


def test_the_job_page_is_appended_to_the_step_summary_with_annotations(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    comparison = compare_reports([report("a")], [report("a", growth=90.0)], rule=DEFAULT)
    entries = [report("a", growth=90.0).to_dict()]
    written, commands = write_job_page(entries, comparison, md_path=tmp_path / "page.md",
                                       environ={"GITHUB_STEP_SUMMARY": str(summary),
                                                "GITHUB_ACTIONS": "true"})
    text = summary.read_text()
    assert text.startswith("earlier step\n## fa-checks: 0 of 1 subjects passed")
    assert (tmp_path / "page.md").read_text() == text.removeprefix("earlier step\n")
    assert "- a: D1: growth 90.0" in text and "### Comparison" in text
    assert commands[0].startswith("::error title=fa-checks FAIL(D1)::a: D1: growth 90.0")
    assert any(c.startswith("::error title=fa-checks regression::a: verdict PASS -> FAIL")
               for c in commands)
    assert write_job_page(entries, environ={})[1] == []  # no annotations outside Actions


def test_an_annotation_cannot_start_a_second_workflow_command() -> None:
    (line,) = annotations([report("a\n::warning::x%", growth=90.0).to_dict()])
    assert "\n" not in line and "%25" in line


def test_the_html_page_has_a_comparison_section() -> None:
    from fa_checks.output.html import render_html

    comparison = compare_reports([report("a")], [report("a", growth=90.0)], rule=DEFAULT)
    page = render_html([report("a", growth=90.0).to_dict()], table_header=["subject"],
                       table_rows=[["a"]], comparison=comparison.to_dict())
    assert '<section id="comparison">' in page and "REGRESSION</span> a: verdict" in page
    assert math.isfinite(len(page))
