"""pytest-html: each subject's figures inside the user's usual ``--html`` report.

Registered only when pytest-html is installed and ``--html`` given (on every process that runs
items: the extras travel with the test report across xdist).  The figures go on one item per
subject (the first that reports it in a process), so the page holds them once.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from .session import CheckRun


class HtmlExtras:
    def __init__(self, run: CheckRun) -> None:
        self.run = run
        self._shown: set[str] = set()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        if report.when != "call":
            return
        params = getattr(getattr(item, "callspec", None), "params", {})
        subject_id = params.get("fa_subject")
        result = self.run.outcome(subject_id) if subject_id in self.run.subjects else None
        from fa_checks.report import Report

        if not isinstance(result, Report) or subject_id in self._shown:
            return
        self._shown.add(subject_id)
        import pytest_html

        from fa_checks.output.html import subject_fragment

        extra = pytest_html.extras.html(subject_fragment(result.to_dict()))
        report.extras = [*getattr(report, "extras", []), extra]
