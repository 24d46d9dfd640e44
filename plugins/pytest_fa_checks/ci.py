"""The CI loop in pytest: ``--fa-compare``, ``--fa-compare-fail``, ``--fa-autosave``,
``--fa-store`` and ``--fa-md``, adapting :mod:`fa_checks.compare.ci` (the command line's
``--compare`` ... take the same path).

Registered on the controller only, after the verdict reporter, so its summary follows the
verdict table.  A base report that cannot be read is a usage error while pytest configures
(exit 4); a regression turns a passing session into exit 1.  Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

import pytest

from fa_checks.flags import CI_LOOP, Flag

from .flags import GROUP, PREFIX, add_option


def _dest(flag: Flag) -> str:
    return "fa_ci_" + flag.dest


def add_ci_flags(parser: pytest.Parser) -> None:
    """The CI loop's flags (:data:`fa_checks.flags.CI_LOOP`) as ``--fa-*``, checked when read."""
    group = parser.getgroup(GROUP)
    for flag in CI_LOOP.values():
        add_option(group, flag, _dest(flag))


def ci_request(config: pytest.Config) -> Any:
    from fa_checks.compare.ci import CiRequest
    from fa_checks.errors import ConfigError

    def get(name: str) -> Any:
        flag = CI_LOOP[name]
        raw = config.getoption(_dest(flag), default=None)
        if flag.parse is None or raw is None:
            return raw or None
        try:
            return flag.read(raw, PREFIX + flag.name)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None

    return CiRequest(autosave=bool(get("autosave")), store=get("store"), compare=get("compare"),
                     compare_fail=get("compare-fail"), md=get("md"), prefix=PREFIX)


class CiLoop:
    """Controller plugin: after the verdict reporter has every subject, compare, save and
    write the job page."""

    def __init__(self, config: pytest.Config, plan: Any, reporter: Any) -> None:
        self.config = config
        self.plan = plan
        self.reporter = reporter
        self.result: Any = None
        self.error: str | None = None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # before the verdict reporter's (trylast): its HTML page shows the comparison
        if not self.reporter.subjects:
            return
        from fa_checks.compare.ci import finish
        from fa_checks.errors import as_user_error, one_line

        report = self.reporter.outputs.json
        try:
            self.result = finish(self.plan, self.reporter.json_data(),
                                 new_name=report.name if report is not None else "this run")
        except Exception as exc:
            error = as_user_error(exc)
            if error is None:
                raise
            self.error = f"fa-checks: could not compare, save or write the job page: " \
                         f"{one_line(error)}"
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        if self.result.comparison is not None:
            self.reporter.comparison = self.result.comparison.to_dict()
        if self.result.regressed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.error is not None:
            terminalreporter.write_line(self.error, red=True)
        if self.result is None:
            return
        for line in self.result.lines():
            bad = line.lstrip().startswith("REGRESSION") or (
                " regression" in line and not line.startswith("no regression"))
            terminalreporter.write_line(line, red=bad)
        for command in self.result.commands:
            terminalreporter.write_line(command)


def configure_ci(config: pytest.Config, reporter: Any, settings: Any = None) -> None:
    """Check the CI flags now (a usage error before any work) and register :class:`CiLoop`
    beside the controller's verdict ``reporter`` (None: nothing to check; then nothing of
    fa_checks.compare is imported, so an idle plugin stays light).  The base report is judged
    against the run's ``settings``' thresholds, as the run is."""
    given = any(config.getoption(_dest(flag), default=None) for flag in CI_LOOP.values())
    if given and reporter is None:
        raise pytest.UsageError("--fa-compare, --fa-autosave and --fa-md work on a run's "
                                "report: give --fa-checkpoint PATH or --fa-method NAME too")
    if reporter is None:
        return
    from fa_checks.compare.ci import prepare
    from fa_checks.errors import ConfigError

    request = ci_request(config)
    if not request.active:
        return
    try:
        from fa_checks.claims import InForce

        in_force = InForce.of(settings) if settings is not None else None
        plan = prepare(request, config.invocation_params.dir, in_force)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(CiLoop(config, plan, reporter), "fa-checks-ci")


__all__ = ["CiLoop", "add_ci_flags", "ci_request", "configure_ci"]
