"""The CI loop as a user's workflow runs it: pytest twice, the main branch's report saved and
kept as the base, a rule made worse in between, the second run failing on the regression with
both tables on the job page (``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

RULE = """
from fa_checks.methods.bp import BP


class MyRule(BP):
    \"\"\"BP stepping at LR_SCALE times the learning rate (a stand-in for a change that hurts,
    as the issue's lr 1e-3 -> 2e-4).\"\"\"

    LR_SCALE = {scale}

    def step(self, x, y):
        for group in self.optimizer.param_groups:
            group.setdefault("given_lr", group["lr"])
            group["lr"] = group["given_lr"] * self.LR_SCALE
        return super().step(x, y)
"""

# the README's workflow, at tiny settings: the same command on main (autosave) and on a PR
# (a known baseline accuracy: no baseline to train; three seeds: Welch's test has 2+ degrees
# of freedom)
WORKFLOW = ("--fa-method", "myrule:MyRule", "--fa-seeds", "0", "1", "2", "--fa-data",
            "synthetic", "--fa-arch-arg", "d_hidden=16", "--fa-arch-arg", "num_blocks=1",
            "--fa-epochs", "3", "--fa-lr", "1e-2", "--fa-baseline-acc", "0.3",
            "--fa-device", "cpu", "-p", "no:xdist", "-p", "no:randomly")


@pytest.fixture(autouse=True)
def private_cache(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / "fa-cache"))
    monkeypatch.delenv("FA_CHECKS_STORE", raising=False)


def ci_job(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str,
           *args: str) -> tuple[pytest.RunResult, str]:
    """One CI job: a fresh job page, the runner's environment, pytest."""
    summary = pytester.path / f"{name}-summary.md"
    summary.write_text("")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = pytester.runpytest_subprocess(*WORKFLOW, *args, timeout=300)
    return result, summary.read_text()


def test_a_rule_made_worse_fails_the_second_job_naming_the_regression(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.syspathinsert()
    pytester.makepyfile(myrule=textwrap.dedent(RULE.format(scale=1.0)))
    main, main_page = ci_job(pytester, monkeypatch, "main", "--fa-autosave",
                             "--fa-json", "fa.json")
    assert main.ret == 0, main.stdout.str()
    saved = sorted((pytester.path / ".fa-checks" / "reports").iterdir())
    assert len(saved) == 1 and saved[0].name.startswith("0001_")
    assert json.loads(saved[0].read_text())["saved"]["settings"].startswith("myrule")
    assert "| myrule:MyRule-seed0 |" in main_page.replace("\\_", "_")

    pytester.makepyfile(myrule=textwrap.dedent(RULE.format(scale=0.3)))  # the change
    pr, pr_page = ci_job(pytester, monkeypatch, "pr", "--fa-compare", "last",
                         "--fa-html", "fa.html")
    out = pr.stdout.str()
    assert pr.ret == 1, out
    regressions = [line for line in out.splitlines() if line.lstrip().startswith("REGRESSION")]
    assert regressions, out
    assert any("myrule:MyRule (over seeds): test accuracy" in line and " -> " in line
               for line in regressions), regressions
    assert "::error title=fa-checks regression::" in out
    # the job page: the verdict table and the comparison, each regression in a sentence
    assert "| subject | accuracy |" in pr_page
    assert "### Comparison: this run against 0001" in pr_page.replace("\\_", "_")
    assert "| subject | seeds | test accuracy |" in pr_page
    assert pr_page.count("- REGRESSION ") == len(regressions)
    # and the visual report has the comparison as a section
    page = (pytester.path / "fa.html").read_text()
    assert '<section id="comparison">' in page and page.count("REGRESSION</span>") == len(
        regressions)


def test_a_base_that_is_not_a_report_is_a_usage_error(pytester: pytest.Pytester) -> None:
    Path(pytester.path / "base.json").write_text('{"subjects": [{"test_acc": "high"}]}')
    result = pytester.runpytest_subprocess("--fa-method", "bp", "--fa-data", "synthetic",
                                           "--fa-compare", "base.json", "-p", "no:xdist")
    assert result.ret == 4
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1 and "--fa-compare: base.json" in lines[0], lines


def test_a_compare_flag_without_a_subject_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fa-compare", "last", "-p", "no:xdist")
    assert result.ret == 4
    assert "give --fa-checkpoint PATH or --fa-method NAME too" in result.stderr.str()
