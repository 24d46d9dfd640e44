"""pytest-fa-checks: the fa-checks protocol as pytest items, for checkpoints and fresh runs.

    pytest --fa-checkpoint run.pt
    pytest --fa-method dfa --fa-seeds 1 2 3 4 -n 4 --fa-report fa.json
    pytest tests/ --fa-checkpoint run.pt          # your own tests, with the fa_* fixtures

This module holds the hooks and the fixtures; options, the per-process session, the controller's
summary and the xdist wiring live in modules of their own.  Loading the plugin imports neither
torch nor fa_checks: they are imported only when a ``--fa-checkpoint`` / ``--fa-method`` option
names something to check.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .options import PluginOptions, add_options, read_options
from .parallel import XdistController, choose_dist_mode, configure_worker
from .records import seed_summary_properties, subject_properties
from .session import FaSession, SubjectError, build_thresholds, check_report_path
from .summary import VerdictSummary

if TYPE_CHECKING:
    from fa_checks.engine import LoadedSubject as SubjectModel

__all__ = ["FaSession", "PluginOptions", "SubjectModel"]

T = TypeVar("T")


def __getattr__(name: str) -> Any:
    if name == "SubjectModel":  # the engine's LoadedSubject, imported only when asked for
        from fa_checks.engine import LoadedSubject

        return LoadedSubject
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

SUITE_MODULE = "pytest_fa_checks.suite"
SUITE_PATH = Path(__file__).with_name("suite.py")
SUITE_NODEID = "pytest_fa_checks/suite.py"

OPTIONS_KEY = pytest.StashKey[PluginOptions]()
SESSION_KEY = pytest.StashKey[FaSession]()
RUN_SUITE_KEY = pytest.StashKey[bool]()

NO_SUBJECT = ("no fa-checks subject: run pytest with --fa-checkpoint PATH or --fa-method NAME "
              "to use this fixture")


# -- options and configuration ---------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


@pytest.hookimpl(hookwrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, Any, None]:
    choose_dist_mode(config)  # before xdist turns an unset --dist into "load"
    yield


def pytest_configure(config: pytest.Config) -> None:
    options = read_options(config)  # a bad value is a usage error even with nothing to check
    config.stash[OPTIONS_KEY] = options
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): run in one xdist worker")
    if not options.active:
        return
    device = run_id = None
    worker = hasattr(config, "workerinput")
    if worker:
        adopted = configure_worker(config)
        device, run_id = adopted["device"], adopted["run_id"]
    session = FaSession(config, options, device=device, run_id=run_id)
    config.stash[SESSION_KEY] = session
    # the built-in suite runs when the user named no test paths (ini testpaths do not count)
    run_suite = config.args_source != pytest.Config.ArgsSource.ARGS
    config.stash[RUN_SUITE_KEY] = run_suite
    if run_suite:
        config.args[:] = []  # collect nothing else; the suite is added in modifyitems
        if SUITE_MODULE not in sys.modules:
            pytest.register_assert_rewrite(SUITE_MODULE)
    if not worker:
        report_path = None
        if options.report_path is not None:
            report_path = config.invocation_params.dir / options.report_path
            check_report_path(report_path)
        config.pluginmanager.register(
            VerdictSummary(config, list(session.subjects), report_path), "fa-checks-summary"
        )
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(
                XdistController(config, options, list(session.subjects),
                                list(session.seed_groups)),
                "fa-checks-xdist",
            )


def _session(config: pytest.Config) -> FaSession | None:
    return config.stash.get(SESSION_KEY, None)


# -- collection --------------------------------------------------------------------------------
def _parametrized_by_user(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = _session(metafunc.config)
    if session is None:
        return
    # session scope: pytest orders the items subject by subject, so each report and model is
    # held once at a time
    if "fa_subject" in metafunc.fixturenames and not _parametrized_by_user(metafunc, "fa_subject"):
        ids = list(session.subjects)
        metafunc.parametrize("fa_subject", ids, ids=ids, indirect=True, scope="session")
    if "fa_seed_summary" in metafunc.fixturenames and session.seed_groups:
        labels = list(session.seed_groups)
        metafunc.parametrize("fa_seed_summary", labels, ids=labels, indirect=True,
                             scope="session")


def gate_applies(session: FaSession | None, gate: str) -> bool:
    if session is None:
        return False
    if gate == "min_cosine":
        return session.options.min_cosine is not None
    if gate == "min_rho":
        return session.options.min_rho is not None
    if gate == "across_seeds":
        return bool(session.seed_groups)
    raise ValueError(f"unknown fa-checks gate {gate!r}")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> Any:
    """Leave out the suite's opt-in tests whose gate does not apply (no item at all)."""
    if not inspect.isfunction(obj) or getattr(obj, "__module__", None) != SUITE_MODULE:
        return None
    gate = getattr(obj, "fa_gate", None)
    if gate is None or gate_applies(_session(collector.config), gate):
        return None
    return []


def _group_name(text: str) -> str:
    return text.replace("@", "_")  # xdist splits the group off the node id at the last "@"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    fa_session = _session(config)
    if fa_session is None:
        return
    if config.stash.get(RUN_SUITE_KEY, False):
        module = pytest.Module.from_parent(session, path=SUITE_PATH, nodeid=SUITE_NODEID)
        items[:0] = list(session.genitems(module))
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "fa_subject" in params:
            item.add_marker(pytest.mark.xdist_group(_group_name(str(params["fa_subject"]))))
        elif "fa_seed_summary" in params:
            label = str(params["fa_seed_summary"])
            item.add_marker(pytest.mark.xdist_group(_group_name(f"across-seeds-{label}")))


# -- what each item records --------------------------------------------------------------------
def item_properties(fa_session: FaSession, item: pytest.Item) -> list[tuple[str, Any]]:
    """The user_properties of an item, from what this process found for its subject."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    subject_id = params.get("fa_subject")
    if subject_id in fa_session.subjects:
        subject = fa_session.subjects[subject_id].to_dict()
        outcome = fa_session.outcome(subject_id)
        if isinstance(outcome, SubjectError):
            return subject_properties(subject, error=str(outcome))
        return subject_properties(subject, None if outcome is None else outcome.to_dict())
    label = params.get("fa_seed_summary")
    if label in fa_session.seed_groups:
        summary = fa_session.summary_outcome(label)
        if isinstance(summary, SubjectError):
            return seed_summary_properties(label, error=str(summary))
        return seed_summary_properties(label, None if summary is None else summary.to_dict())
    return []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # after setup the subject's report (or error) is known; the report object built next
    # copies user_properties, and so do those of the call and teardown phases
    if call.when != "setup":
        return
    fa_session = _session(item.config)
    if fa_session is not None:
        item.user_properties.extend(item_properties(fa_session, item))


# -- fixtures ----------------------------------------------------------------------------------
def _require_session(request: pytest.FixtureRequest) -> FaSession:
    fa_session = _session(request.config)
    if fa_session is None:
        pytest.skip(NO_SUBJECT)
    return fa_session


@pytest.fixture(scope="session")
def fa_subject(request: pytest.FixtureRequest) -> Any:
    """The subject under test (``fa_checks.engine.Subject``); one test per subject."""
    fa_session = _require_session(request)
    subject_id = getattr(request, "param", None)
    if subject_id is None:
        pytest.skip(NO_SUBJECT)
    if subject_id not in fa_session.subjects:
        pytest.fail(f"unknown fa-checks subject {subject_id!r}; the subjects are "
                    f"{', '.join(fa_session.subjects)}", pytrace=False)
    return fa_session.subjects[subject_id]


def _or_fail(compute: Callable[[], T]) -> T:
    """``compute()``; a subject that cannot be evaluated fails the test with its reason alone."""
    try:
        return compute()
    except SubjectError as exc:
        reason = str(exc)
    pytest.fail(reason, pytrace=False)  # outside the except: the message alone, no chain


@pytest.fixture(scope="session")
def fa_report(request: pytest.FixtureRequest, fa_subject: Any) -> Any:
    """The subject's ``fa_checks.Report``, computed once per process (and cached on disk)."""
    fa_session = _require_session(request)
    return _or_fail(lambda: fa_session.report(fa_subject.id))


@pytest.fixture(scope="session")
def fa_model(request: pytest.FixtureRequest, fa_subject: Any) -> SubjectModel:
    """The subject's trained model, its method, its dataset and its checkpoint
    (``fa_checks.engine.LoadedSubject``: ``.model``, ``.method``, ``.data``, ``.checkpoint``)."""
    fa_session = _require_session(request)
    return _or_fail(lambda: fa_session.load_model(fa_subject.id))


@pytest.fixture(scope="session")
def fa_thresholds(request: pytest.FixtureRequest) -> Any:
    """The ``fa_checks.Thresholds`` in force (command line, else ini, else the defaults)."""
    options = request.config.stash.get(OPTIONS_KEY, None) or read_options(request.config)
    return build_thresholds(options)


@pytest.fixture(scope="session")
def fa_seed_summary(request: pytest.FixtureRequest) -> Any:
    """``fa_checks.engine.SeedSummary`` of one method over its seeds (one test per method)."""
    fa_session = _require_session(request)
    label = getattr(request, "param", None)
    if label is None:
        pytest.skip("no method was trained with two or more seeds (--fa-method M --fa-seeds 1 2)")
    return _or_fail(lambda: fa_session.seed_summary(label))
