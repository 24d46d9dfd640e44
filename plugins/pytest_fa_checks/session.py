"""The run-wide state of one pytest process: the library's session, adapted to pytest.

A :class:`CheckRun` exists (in ``config.stash``) only when the user named something to check.
It builds a :class:`fa_checks.session.CheckSession` from the ``--fa-*`` flags (subjects
validated while pytest configures, so a bad flag is a usage error) and asks it for everything:
each subject's outcome (computed at most once per process here, once across processes by the
library's cache, and all at once on the Ray cluster with ``--fa-ray``), the seed groups and
their across-seeds gates.  What is pytest's alone lives here: the usage errors, the log, the
terminal lines of the Ray driver, and the once-per-test-run claim of ``--fa-retrain`` across
xdist workers.  fa_checks' heavy modules and torch are imported on first use, never when the
plugin loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fa_checks.errors import UserError, one_line

from .flags import PREFIX, Request
from .progress import shows_progress, write_line

if TYPE_CHECKING:
    from fa_checks.cache.store import ArtifactCache
    from fa_checks.evaluation import Failure, LoadedSubject
    from fa_checks.report import AcrossSeeds, Report
    from fa_checks.session import CheckSession
    from fa_checks.settings import Settings
    from fa_checks.subjects import Subject

log = logging.getLogger("fa_checks.pytest")


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """While pytest configures: an error a user caused is a usage error (exit 4, one line)."""
    try:
        yield
    except UserError as exc:
        raise pytest.UsageError(one_line(exc)) from None


def build_settings(request: Request, device: str | None = None, **extra: Any) -> Settings:
    """The library's settings from the flags given (library defaults for the rest)."""
    from fa_checks.flags import build_settings as settings_from

    given = dict(request.given)
    if device is not None:
        given["device"] = device
    return settings_from(given, flag_prefix=PREFIX, **extra)


def build_subjects(request: Request, settings: Settings, cwd: Path) -> list[Subject]:
    """The subjects the request names, checked now (raises the library's ConfigError)."""
    from fa_checks.session import fill_checkpoints
    from fa_checks.settings import DEFAULT_DATA
    from fa_checks.subjects import check_data_root, checkpoint_subjects, fresh_subjects
    from fa_checks.values import parse_key_values

    subjects: list[Subject] = []
    data_options = parse_key_values(request.get("data-arg", ()), what=f"{PREFIX}data-arg")
    if request.checkpoints:
        # the one rule of both faces: --fa-data, --fa-data-arg, --fa-epochs fill in what a
        # checkpoint file does not record
        subjects += fill_checkpoints(
            checkpoint_subjects(request.checkpoints, cwd=cwd, what=f"{PREFIX}checkpoint"),
            data=request.get("data"), data_options=data_options, epochs=request.get("epochs"),
            flag_prefix=PREFIX)
    method_options = parse_key_values(request.get("method-arg", ()), what=f"{PREFIX}method-arg")
    arch_options = parse_key_values(request.get("arch-arg", ()), what=f"{PREFIX}arch-arg")
    named = {key: request.get(key) for key in ("arch", "data", "epochs")
             if request.get(key) is not None}
    for method in request.methods:
        subjects += fresh_subjects(method, request.get("seeds", (0,)),
                                   method_options=method_options, arch_options=arch_options,
                                   data_options=data_options, flag_prefix=PREFIX, **named)
    if request.methods:  # fresh runs read their data now; checkpoints name theirs later
        check_data_root(request.get("data", DEFAULT_DATA), settings.data_root,
                        flag_prefix=PREFIX)
    unique: dict[str, Subject] = {}
    for subject in subjects:
        unique.setdefault(subject.id, subject)
    return list(unique.values())


class CheckRun:
    """The session of one pytest process (controller or worker), with pytest's manners."""

    def __init__(self, config: pytest.Config, request: Request, *,
                 device: str | None = None, run_id: str | None = None) -> None:
        from fa_checks.session import CheckSession, Outputs, prepare

        self.config = config
        self.request = request
        #: set on xdist workers: the id all workers of one test run share
        self.run_id = run_id
        here = config.invocation_params.dir
        with usage_errors():
            self.settings = build_settings(request, device)
            # Ray, its address and resources, before work; a GPU on the controller, before
            # any worker starts; threads are set by the process that trains (see plugin.py)
            prepare(self.settings, threads=False,
                    device=run_id is None and self.settings.device.startswith("cuda"))
            subjects = build_subjects(request, self.settings, here)
            self.outputs = Outputs.of(request.report_path, request.html_path,
                                      request.plots_dir, flag_prefix=PREFIX, base=here)
        self.session: CheckSession = CheckSession(
            self.settings, subjects, self.outputs, log=self._say, claim=self._retrain_claim)
        self.subjects: dict[str, Subject] = self.session.subjects

    def check_outputs(self) -> None:
        """Every output path can be written (the controller, before any work)."""
        with usage_errors():
            self.outputs.check()

    def _say(self, line: str) -> None:
        log.info(line)
        if self.settings.ray_address is not None and shows_progress(self.config):
            write_line(self.config, f"fa-checks: {line}")  # the Ray driver's progress

    @property
    def cache(self) -> ArtifactCache:
        return self.session.cache

    @property
    def seed_groups(self) -> dict[str, list[str]]:
        """label -> subject ids, for every method (fresh or checkpoints) with two or more
        seeds; the collection of every process sees the same."""
        return self.session.seed_groups

    # -- outcomes ----------------------------------------------------------------------------
    def outcome(self, subject_id: str) -> Report | Failure | None:
        """The memoised report or failure of a subject, None if not evaluated in this process."""
        return self.session.known(subject_id)

    def report(self, subject_id: str) -> Report | Failure:
        """The subject's report (evaluated once per process), or why it could not be."""
        return self._logged(self.session.outcome(subject_id))

    def across_seeds(self, label: str) -> AcrossSeeds | Failure:
        return self._logged(self.session.across_seeds(label))

    def gate_outcome(self, label: str) -> AcrossSeeds | Failure | None:
        return self.session.known_gate(label)

    def load_model(self, subject_id: str) -> LoadedSubject | Failure:
        return self._logged(self.session.load_model(subject_id))

    def _logged(self, result: Any) -> Any:
        """A fault of fa-checks is logged with its traceback once (its item ERRORs and pytest
        exits 3, never 1, which would read as the method failing)."""
        from fa_checks.evaluation import Failure

        if isinstance(result, Failure) and result.internal and not getattr(result, "_logged",
                                                                            False):
            log.error("fa-checks internal error: %s\n%s", result.message, result.traceback)
            result._logged = True  # type: ignore[attr-defined]
        return result

    @contextlib.contextmanager
    def _retrain_claim(self, subject: Subject) -> Iterator[bool]:
        """Whether this evaluation recomputes (``--fa-retrain``): once per subject per test run.

        In one process the memo already evaluates each subject once.  Across xdist workers the
        first to claim a subject recomputes it while holding a lock; any other worker (the
        across-seeds item) waits for it and then reads the fresh artifacts.
        """
        if not self.settings.retrain or self.run_id is None:
            yield bool(self.settings.retrain)
            return
        from filelock import FileLock

        digest = hashlib.sha256(subject.id.encode()).hexdigest()[:20]
        claims = retrain_claims_dir(self.cache.root, self.run_id)
        claims.mkdir(parents=True, exist_ok=True)
        with FileLock(str(claims / f"{digest}.lock")):
            marker = claims / f"{digest}.done"
            first = not marker.exists()
            yield first
            marker.touch()


def retrain_claims_dir(root: Path, run_id: str) -> Path:
    """Where the workers of one ``--fa-retrain`` test run record which subjects they redid."""
    return root / "retrain-claims" / run_id
