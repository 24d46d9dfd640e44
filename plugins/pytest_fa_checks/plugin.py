"""The plugin's hooks and fixtures (the ``pytest11`` entry point), as pytest-xdist's
``plugin.py`` holds its own.

The flags (:mod:`.flags`), the per-process session (:mod:`.session`), the controller's table
(:mod:`.terminal`), the records items carry (:mod:`.records`) and the xdist wiring
(:mod:`.parallel`) live in modules of their own.  Loading the plugin imports no torch and none
of fa_checks' heavy modules (only its torch-free vocabulary of flags): they are imported when a
``--fa-checkpoint`` / ``--fa-method`` names something to check.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from fa_checks.values import printable

from .ci import add_ci_flags, configure_ci
from .flags import Request, add_flags, read_request
from .parallel import XdistController, choose_dist_mode, configure_worker
from .progress import shows_progress
from .records import GATE, across_seeds_properties, subject_properties
from .session import CheckRun
from .terminal import VerdictReporter

if TYPE_CHECKING:
    from fa_checks.evaluation import LoadedSubject

__all__ = ["CheckRun", "Request"]

T = TypeVar("T")

SUITE_MODULE = "pytest_fa_checks.suite"
SUITE_PATH = Path(__file__).with_name("suite.py")
SUITE_NODEID = "pytest_fa_checks/suite.py"

REQUEST_KEY = pytest.StashKey[Request]()
RUN_KEY = pytest.StashKey[CheckRun]()
RUN_SUITE_KEY = pytest.StashKey[bool]()

NO_SUBJECT = ("no fa-checks subject: run pytest with --fa-checkpoint PATH or --fa-method NAME "
              "to use this fixture")


# -- flags and configuration -----------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    add_flags(parser)
    add_ci_flags(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hooks

    pluginmanager.add_hookspecs(hooks)


@pytest.hookimpl(hookwrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Generator[None, Any, None]:
    choose_dist_mode(config)  # before xdist turns an unset --dist into "load"
    yield


def pytest_configure(config: pytest.Config) -> None:
    request = read_request(config)  # a bad value is a usage error even with nothing to check
    config.stash[REQUEST_KEY] = request
    if request.get("ray") is not None and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "--fa-ray and -n do not go together: with --fa-ray the Ray cluster runs the "
            "subjects in parallel, so drop -n (this process waits for the cluster)")
    if not config.pluginmanager.hasplugin("xdist"):
        config.addinivalue_line("markers", "xdist_group(name): run in one xdist worker")
    config.addinivalue_line("markers", "fa_checks: an item of the fa-checks gate "
                                       "(-m 'not fa_checks' leaves the gate out)")
    if not request.active:
        if not hasattr(config, "workerinput"):
            configure_ci(config, None)  # a CI flag with nothing to check: refused
        return
    device = run_id = None
    worker = hasattr(config, "workerinput")
    if worker:
        adopted = configure_worker(config)
        device, run_id = adopted["device"], adopted["run_id"]
    run = CheckRun(config, request, device=device, run_id=run_id)
    config.stash[RUN_KEY] = run
    # the built-in suite runs when the user named no test paths (ini testpaths do not count);
    # a gate configured in the ini (fa_methods) joins the repository's own tests instead of
    # replacing them, and naming test paths runs just those
    run_suite = config.args_source != pytest.Config.ArgsSource.ARGS
    if (not worker and run_suite and getattr(config.option, "numprocesses", None)
            and run.serve_cached()):
        # every report is cached: reading them takes less than starting one worker (xdist's
        # own pytest_configure runs after this one, and then starts none)
        config.option.numprocesses, config.option.dist, config.option.tx = 0, "no", []
    elif not worker and getattr(config.option, "numprocesses", None):
        # the workers take seconds to start: the data they will all wait for is made meanwhile
        run.session.generate_data_meanwhile()
    if worker or not getattr(config.option, "numprocesses", None):
        run.computes = True  # this process trains and evaluates: its threads are set before
        run.settings.progress = progress_sink(config, run, worker)  # its first work
    config.stash[RUN_SUITE_KEY] = run_suite
    if run_suite and not request.from_config:
        config.args[:] = []  # collect nothing else; the suite is added in modifyitems
        if SUITE_MODULE not in sys.modules:
            pytest.register_assert_rewrite(SUITE_MODULE)
    if not worker:
        run.check_outputs()
        reporter = VerdictReporter(config, list(run.subjects), run.outputs)
        config.pluginmanager.register(reporter, "fa-checks-verdicts")
        # registered after the reporter: its summary follows the table
        configure_ci(config, reporter, run.settings)
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(
                XdistController(config, run),
                "fa-checks-xdist",
            )
    if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None):
        from .html import HtmlExtras  # pytest-html's report: each subject's figures

        config.pluginmanager.register(HtmlExtras(run), "fa-checks-html")


def progress_sink(config: pytest.Config, run: CheckRun, worker: bool) -> Any:
    """Where this process's training progress goes: the terminal, or (an xdist worker) a file
    the controller reads; False under -qq."""
    if worker:
        from .progress import ProgressFile, progress_dir
        from .records import worker_id

        return ProgressFile(progress_dir(run.cache.root, str(run.run_id)), worker_id())
    if not shows_progress(config):
        return False
    from .progress import TerminalProgress

    return TerminalProgress(config)


def _run(config: pytest.Config) -> CheckRun | None:
    return config.stash.get(RUN_KEY, None)


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
    run = _run(metafunc.config)
    if run is None:
        return
    # session scope: pytest orders the items subject by subject, so each report and model is
    # held once at a time
    if "fa_subject" in metafunc.fixturenames and not _parametrized_by_user(metafunc, "fa_subject"):
        ids = list(run.subjects)
        metafunc.parametrize("fa_subject", ids, ids=ids, indirect=True, scope="session")
    if "fa_across_seeds" in metafunc.fixturenames and run.seed_groups:
        labels = list(run.seed_groups)
        metafunc.parametrize("fa_across_seeds", labels, ids=labels, indirect=True,
                             scope="session")


def gate_applies(run: CheckRun | None, gate: Any) -> bool:
    from .suite import Gate

    if run is None:
        return False
    if gate is Gate.MIN_COSINE:
        return run.settings.thresholds.min_cosine is not None
    if gate is Gate.MIN_RHO:
        return run.settings.thresholds.min_rho is not None
    if gate is Gate.GATE_D4:
        return run.settings.thresholds.gate_d4
    if gate is Gate.ACROSS_SEEDS:
        return bool(run.seed_groups)
    raise ValueError(f"unknown fa-checks gate {gate!r}")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> Any:
    """Leave out the suite's opt-in tests whose gate does not apply (no item at all)."""
    if not inspect.isfunction(obj) or getattr(obj, "__module__", None) != SUITE_MODULE:
        return None
    gate = getattr(obj, "fa_gate", None)
    if gate is None or gate_applies(_run(collector.config), gate):
        return None
    return []


def _group_name(text: str) -> str:
    return text.replace("@", "_")  # xdist splits the group off the node id at the last "@"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    if _run(config) is None:
        return
    if config.stash.get(RUN_SUITE_KEY, False):
        module = pytest.Module.from_parent(session, path=SUITE_PATH, nodeid=SUITE_NODEID)
        items[:0] = list(session.genitems(module))
    for item in items:
        if item.nodeid.startswith(SUITE_NODEID):
            item.add_marker(pytest.mark.fa_checks)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "fa_subject" in params:
            item.add_marker(pytest.mark.xdist_group(_group_name(str(params["fa_subject"]))))
        elif "fa_across_seeds" in params:
            label = str(params["fa_across_seeds"])
            item.add_marker(pytest.mark.xdist_group(_group_name(f"across-seeds-{label}")))


# -- what each item records --------------------------------------------------------------------
def item_properties(run: CheckRun, item: pytest.Item) -> list[tuple[str, Any]]:
    """The user_properties of an item, from what this process found for its subject."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    diagnostic = getattr(getattr(item, "function", None), "fa_diagnostic", None)
    props: list[tuple[str, Any]] = [] if diagnostic is None else [(GATE, diagnostic)]
    subject_id = params.get("fa_subject")
    if subject_id in run.subjects:
        outcome = run.outcome(subject_id)
        if outcome is None:
            return props
        return props + subject_properties(outcome.to_dict())
    label = params.get("fa_across_seeds")
    if label in run.seed_groups:
        from fa_checks.evaluation import Failure

        gate = run.gate_outcome(label)
        if isinstance(gate, Failure):
            return props + across_seeds_properties(label, error=gate.sentence)
        return props + across_seeds_properties(label, None if gate is None else gate.to_dict())
    return props


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    # after setup the subject's report (or error) is known; the report object built next
    # copies user_properties, and so do those of the call and teardown phases
    if call.when != "setup":
        return
    run = _run(item.config)
    if run is not None:
        item.user_properties.extend(item_properties(run, item))


# -- fixtures ----------------------------------------------------------------------------------
def _require_run(request: pytest.FixtureRequest) -> CheckRun:
    run = _run(request.config)
    if run is None:
        pytest.skip(NO_SUBJECT)
    return run


@pytest.fixture(scope="session")
def fa_subject(request: pytest.FixtureRequest) -> Any:
    """The subject under test (``fa_checks.subjects.Subject``); one test per subject."""
    run = _require_run(request)
    subject_id = getattr(request, "param", None)
    if subject_id is None:
        pytest.skip(NO_SUBJECT)
    if subject_id not in run.subjects:
        pytest.fail(printable(f"unknown fa-checks subject {subject_id!r}; the subjects are "
                              f"{', '.join(run.subjects)}"), pytrace=False)
    return run.subjects[subject_id]


def _or_fail(compute: Callable[[], T]) -> T:
    """``compute()``; a subject that cannot be evaluated fails the test with its reason alone."""
    from fa_checks.evaluation import Failure

    result = compute()
    if isinstance(result, Failure):
        pytest.fail(printable(result.sentence), pytrace=False)  # it may quote a file
    return result


@pytest.fixture(scope="session")
def fa_report(request: pytest.FixtureRequest, fa_subject: Any) -> Any:
    """The subject's ``fa_checks.Report``, computed once per process (and cached on disk)."""
    run = _require_run(request)
    return _or_fail(lambda: run.report(fa_subject.id))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def fa_model(request: pytest.FixtureRequest, fa_subject: Any) -> LoadedSubject:
    """The subject's trained model, its method, its dataset and its checkpoint
    (``fa_checks.evaluation.LoadedSubject``: ``.model``, ``.method``, ``.data``,
    ``.checkpoint``)."""
    run = _require_run(request)
    return _or_fail(lambda: run.load_model(fa_subject.id))


@pytest.fixture(scope="session")
def fa_thresholds(request: pytest.FixtureRequest) -> Any:
    """The ``fa_checks.Thresholds`` in force (command line, else ini, else the defaults)."""
    run = _run(request.config)
    if run is not None:
        return run.settings.thresholds
    from .session import build_settings, usage_errors

    with usage_errors():
        return build_settings(request.config.stash.get(REQUEST_KEY, None)
                              or read_request(request.config)).thresholds


@pytest.fixture(scope="session")
def fa_across_seeds(request: pytest.FixtureRequest) -> Any:
    """``fa_checks.report.AcrossSeeds`` of one method over its seeds (one test per method)."""
    run = _require_run(request)
    label = getattr(request, "param", None)
    if label is None:
        pytest.skip("no method was trained with two or more seeds (--fa-method M --fa-seeds 1 2)")
    return _or_fail(lambda: run.across_seeds(label))
