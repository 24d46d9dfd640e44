"""pytest-xdist: one worker per subject, a fair share of CPU threads, GPUs spread over workers.

Scheduling.  A subject's items should run on one worker: its report is then computed once
there and its model loaded once.  xdist's ``--dist loadgroup`` would do this from
``xdist_group`` markers, but it tags node ids by assigning ``item._nodeid``, which pytest 9.2
no longer reads (node ids are derived from a structured id), so the groups are silently lost.
The plugin therefore provides its own scheduler (``pytest_xdist_make_scheduler``): xdist's
``LoadScopeScheduling`` with the scope of a node id being the subject named in its parameter
id.  Whole subjects go to idle workers, largest first, which is what training-bound work
wants.  It is used when the user runs ``-n N`` without choosing ``--dist``; any mode the user
picks is respected and still gives correct results (the library's cache computes each
artifact once across workers), and the items keep ``xdist_group`` markers for ``loadgroup``
where pytest still honours it.

Workers re-parse the original command line, so what the controller decides reaches them
through ``workerinput``: the device each worker uses (GPUs round-robin) and the run's id.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from typing import Any

import pytest

from fa_checks.settings import visible_gpu_count

from .progress import ProgressWatcher, progress_dir, shows_progress
from .session import CheckRun

DEVICE_KEY = "fa_device"
#: set in config.stash when the plugin, not the user, chose how xdist distributes items
SCHEDULE_KEY = pytest.StashKey[bool]()


def worker_index(worker_id: str) -> int:
    """``"gw3"`` -> 3 (xdist names its workers gw0, gw1, ...)."""
    digits = "".join(ch for ch in str(worker_id) if ch.isdigit())
    return int(digits) if digits else 0


def worker_device(requested: str, index: int, gpu_count: int) -> str:
    """The device worker ``index`` uses: ``auto``/``cuda`` spread round-robin over the GPUs.

    ``auto`` without a GPU is the CPU; ``cpu`` and an explicit ``cuda:N`` stay as asked; ``cuda``
    without a GPU is passed on for the library to refuse with its own message.
    """
    if requested in ("auto", "cuda") and gpu_count > 0:
        return f"cuda:{index % gpu_count}"
    if requested == "auto":
        return "cpu"
    return requested


def choose_dist_mode(config: pytest.Config) -> None:
    """With ``-n N``, a subject option and no ``--dist`` chosen, schedule by subject.

    Runs before xdist's own ``pytest_cmdline_main``, which turns the unset mode ``no`` into
    ``load``; setting ``load`` here keeps xdist's bookkeeping and records that the plugin may
    replace the scheduler.
    """
    option = config.option
    subjects = getattr(option, "fa_checkpoint", None) or getattr(option, "fa_method", None)
    if not subjects or not getattr(option, "numprocesses", None):
        return
    if getattr(option, "dist", None) == "no" and not getattr(option, "distload", False):
        option.dist = "load"
        config.stash[SCHEDULE_KEY] = True


def _has_id(params: str, ident: str) -> bool:
    """Whether ``ident`` is one of the ``-``-joined parameter ids in ``params``."""
    return (params == ident or params.startswith(ident + "-") or params.endswith("-" + ident)
            or f"-{ident}-" in params)


def subject_scope(nodeid: str, subject_ids: Iterable[str], group_labels: Iterable[str]) -> str:
    """The scheduling unit of a node id: its subject, its across-seeds method, or itself.

    ``tests/test_x.py::test_y[dfa-seed3]`` -> ``subject:dfa-seed3``; with other parameters
    (``test_y[dfa-seed3-0.5]``) the longest subject id among them wins.
    """
    name = nodeid.rsplit("::", 1)[-1]
    if "[" not in name or not name.endswith("]"):
        return nodeid
    params = name[name.index("[") + 1 : -1]
    for prefix, idents in (("subject", subject_ids), ("across-seeds", group_labels)):
        matches = [ident for ident in idents if _has_id(params, ident)]
        if matches:
            return f"{prefix}:{max(matches, key=len)}"
    return nodeid


def make_subject_scheduler(config: pytest.Config, log: Any, subject_ids: list[str],
                           group_labels: list[str]) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class SubjectScheduling(LoadScopeScheduling):
        """xdist's scope scheduling, where a scope is one fa-checks subject."""

        def _split_scope(self, nodeid: str) -> str:
            return subject_scope(nodeid, subject_ids, group_labels)

    return SubjectScheduling(config, log)


def configure_worker(config: pytest.Config) -> dict[str, Any]:
    """On an xdist worker: its share of the cores; returns the device and the run's id."""
    from fa_checks.training.threads import share_cores

    workerinput = config.workerinput  # type: ignore[attr-defined]
    share_cores(int(workerinput.get("workercount", 1)))
    return {"device": workerinput.get(DEVICE_KEY), "run_id": workerinput.get("testrunuid")}


class XdistController:
    """Registered on the controller when xdist is loaded: the scheduler and each worker's input."""

    def __init__(self, config: pytest.Config, run: CheckRun) -> None:
        self.config = config
        self.run = run
        self.subject_ids = list(run.subjects)
        self.group_labels = list(run.seed_groups)
        self._gpu_count: int | None = None
        self.run_id: str | None = None
        self.watcher: ProgressWatcher | None = None

    @property
    def requested_device(self) -> str:
        return self.run.settings.device

    def gpu_count(self) -> int:
        if self._gpu_count is None:
            wants_gpu = self.requested_device in ("auto", "cuda")
            self._gpu_count = visible_gpu_count() if wants_gpu else 0  # imports torch if any
        return self._gpu_count

    def pytest_configure_node(self, node: Any) -> None:
        workerinput = node.workerinput
        index = worker_index(workerinput.get("workerid", "gw0"))
        workerinput[DEVICE_KEY] = worker_device(self.requested_device, index, self.gpu_count())
        self.run_id = workerinput.get("testrunuid")
        if self.watcher is None and self.run_id and shows_progress(self.config):
            self.watcher = ProgressWatcher(self.config,
                                           progress_dir(self.run.cache.root, self.run_id))
            self.watcher.start()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.run_id:
            shutil.rmtree(progress_dir(self.run.cache.root, self.run_id), ignore_errors=True)
        if self.run.settings.retrain and self.run_id:
            from .session import retrain_claims_dir

            shutil.rmtree(retrain_claims_dir(self.run.cache.root, self.run_id),
                          ignore_errors=True)

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if not config.stash.get(SCHEDULE_KEY, False):
            return None  # the user chose --dist: xdist's own scheduler
        return make_subject_scheduler(config, log, self.subject_ids, self.group_labels)
