"""The driver: submits the planned jobs as Ray tasks, lands their files in its own cache as
each finishes, and turns every result into the subject's outcome.

A job is submitted once the jobs it waits for have landed, with its inputs sent from the
driver's cache, so a node that dies never forces a finished task to run again.  Ray restarts a
task whose worker or node dies (``max_retries``); a task that raises fails only the subjects
that depend on it.  Ctrl-C cancels every outstanding task and is raised again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.store import ArtifactCache
from ..errors import Log, as_user_error, one_line, user_sentence
from ..evaluation import Failure, Outcome, evaluate_subject
from .connect import (
    Resources,
    check_settings,
    connection,
    describe_cluster,
    fits_nowhere,
    import_ray,
    rules_environment,
)
from .plan import Job, Missing, Needed, StoredOnly, driver_settings, plan
from .progress import Progress
from .tasks import JOBS, Artifact, CheckpointFile, ProgressTracker, TaskResult, run_task

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..settings import Settings
    from ..subjects import Subject


#: how often (seconds) the driver looks at what runs where, when no task has finished
POLL_SECONDS = 1.0
# Ray colours the task's name in its error text; a log file or a terminal without colour
# would show the escape codes.
TERMINAL_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Problem:
    """Why a job gave no result: a sentence, and whether it is a fault rather than an input
    error (then the exception and the worker's traceback)."""

    message: str
    fault: bool = False
    cause: BaseException | None = None
    traceback: str = ""

    def outcome(self, subject: Subject) -> Failure:
        return Failure(subject, self.message, internal=self.fault, cause=self.cause,
                       traceback=self.traceback)


def evaluate_on_ray(
    subjects: Sequence[Subject],
    settings: Settings,
    cache: ArtifactCache,
    *,
    max_retries: int = 3,
    runtime_env: Mapping[str, Any] | None = None,
    log: Log | None = None,
    on_result: Callable[[str, Outcome], None] | None = None,
) -> dict[str, Outcome]:
    """Every subject's outcome, as :func:`fa_checks.evaluation.outcome` gives it, computed as
    Ray tasks: a :class:`~fa_checks.report.Report`, a
    :class:`~fa_checks.evaluation.Failure` (one sentence; ``internal`` when the task raised an
    exception no user input causes: a bug in fa-checks, with the worker's traceback).

    ``settings.ray_address`` is what ``ray.init`` takes (``"auto"``: the cluster ``ray
    start`` began on this machine; ``"host:port"``; ``"ray://host:port"``; None: Ray's own
    choice, ``$RAY_ADDRESS`` or a Ray started in this process); a process already connected
    keeps its connection.  Each task asks for ``settings.cpus_per_run`` CPUs (its torch
    threads, unless ``settings.threads``) and ``settings.gpus_per_run`` GPUs, and is started
    again up to ``max_retries`` times when its worker or node dies.  A ``module:Class`` rule
    reaches the workers with its top-level module (``py_modules``, merged into
    ``runtime_env``); fa-checks and rules registered by entry point must be installed on every
    node, and ``settings.data_root`` must exist on each.

    Only what the cache lacks is computed (nothing at all, without connecting, when every
    report is there), and every artifact lands in ``cache`` as its task finishes.  A report
    computed in this call records in ``report.subject["ran_on"]`` the node of each of its
    jobs (``run``, ``baseline``, ``evaluation``) and how often it was started.  ``log`` hears
    the progress; ``on_result(subject_id, outcome)`` each outcome as it is known.  Raises
    :class:`~fa_checks.cluster.RayError` (before any work) when Ray is missing, the cluster
    does not answer or a setting is out of range; ``KeyboardInterrupt`` cancels every
    outstanding task and is raised again.
    """
    resources = check_settings(settings, max_retries=max_retries)
    driver = Driver(subjects, settings, cache, log=log, on_result=on_result)
    ray = import_ray(settings.flag("ray"))
    driver.plan()
    if not driver.jobs:
        driver.say(f"ray: all {len(driver.subjects)} subjects are in the cache; nothing to "
                   "compute")
        return driver.outcomes()
    environment = rules_environment(driver.subjects, runtime_env)
    with connection(ray, settings.ray_address, environment, settings.flag("ray"), driver.say):
        driver.run(ray, resources)
    return driver.outcomes()


class Driver:
    """Plans the jobs, submits each when its inputs are in the cache, lands the results."""

    def __init__(self, subjects: Sequence[Subject], settings: Settings, cache: ArtifactCache,
                 *, log: Log | None = None,
                 on_result: Callable[[str, Outcome], None] | None = None) -> None:
        self.subjects = list({s.id: s for s in subjects}.values())
        self.by_id = {s.id: s for s in self.subjects}
        self.settings = settings
        threads = settings.threads if settings.threads is not None else settings.cpus_per_run
        self.worker_settings = dataclasses.replace(settings, retrain=False, progress=False,
                                                   threads=threads)
        self.cache = cache
        self.log = log
        self.on_result = on_result
        self.jobs: dict[str, Job] = {}
        self.results: dict[str, Outcome] = {}
        self.computed: dict[str, dict[str, Job]] = {}  # subject id -> kind -> job done for it
        self.progress = Progress(self.say)
        self._puts: dict[str, Any] = {}  # artifact key -> its bytes in Ray's object store
        self._needs: dict[str, int] = {}  # artifact key -> jobs not yet submitted taking it

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _outcome(self, subject_id: str, outcome: Outcome) -> None:
        self.results[subject_id] = outcome
        if self.on_result is not None:
            self.on_result(subject_id, outcome)

    def plan(self) -> None:
        self.jobs, known = plan(self.subjects, self.settings, self.cache)
        for subject_id, outcome in known.items():
            self._outcome(subject_id, outcome)

    def outcomes(self) -> dict[str, Outcome]:
        return {s.id: self.results[s.id] for s in self.subjects if s.id in self.results}

    # -- running -----------------------------------------------------------------------------
    def run(self, ray: Any, resources: Resources) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        started = time.monotonic()
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.kind] = counts.get(job.kind, 0) + 1
            for needed in job.inputs:
                self._needs[needed.key] = self._needs.get(needed.key, 0) + 1
        self.say(f"ray: {len(self.subjects)} subjects ({len(self.results)} known already); "
                 + ", ".join(f"{counts[kind]} {kind}{'s' if counts[kind] > 1 else ''}"
                             for kind in JOBS if kind in counts)
                 + f" to compute on {describe_cluster(ray)}")
        note = fits_nowhere(ray, resources)
        if note:
            self.say(note)
        here = ray.get_runtime_context().get_node_id()
        tracker = ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            here, soft=False))(ProgressTracker).remote()
        remote = ray.remote(**resources.task_options())(run_task)
        running: dict[Any, Job] = {}  # ref -> job

        def submit(job: Job) -> None:
            if self._submit(ray, remote, tracker, job):
                running[job.ref] = job

        try:
            for job in list(self.jobs.values()):
                if not job.waits_for:
                    submit(job)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                if ready:  # and every other one done by now, so none is counted as running
                    ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                for ref in ready:
                    job = running.pop(ref)
                    self._finish(ray, job)
                    for other in self.jobs.values():
                        if job.id not in other.waits_for:
                            continue
                        other.waits_for.discard(job.id)
                        if job.failed and not other.failed:
                            self._fail(other, None, because=job)
                        elif not other.waits_for and not other.failed:
                            submit(other)
                self._poll(ray, tracker)
        except BaseException:
            for ref in running:
                with contextlib.suppress(Exception):  # one finished or gone meanwhile
                    ray.cancel(ref, force=True)
            if running:
                self.say(f"ray: interrupted; cancelled {len(running)} outstanding tasks")
            raise
        finally:
            with contextlib.suppress(Exception):  # progress only
                self._poll(ray, tracker)
                ray.kill(tracker)
        for subject_id, computed in self.computed.items():  # with the last count of starts
            report = self.results.get(subject_id)
            if report is not None and not isinstance(report, Failure):
                report.subject["ran_on"] = self.progress.ran_on(computed)
        errors = sum(isinstance(r, Failure) for r in self.results.values())
        self.say(f"ray: done in {time.monotonic() - started:.1f} s: "
                 f"{len(self.results) - errors} reports, {errors} errors")

    def _input(self, ray: Any, needed: Needed) -> Any:
        """The artifact as a Ray object, put once however many jobs take it; the driver lets
        go of it when the last of them is submitted (a submitted task keeps its inputs)."""
        if needed.key not in self._puts:
            data = (self.cache.root / needed.key).read_bytes()
            self._puts[needed.key] = ray.put(Artifact(needed.kind, needed.spec, needed.suffix,
                                                      data))
        self._needs[needed.key] = self._needs.get(needed.key, 1) - 1
        if self._needs[needed.key] <= 0:
            return self._puts.pop(needed.key)
        return self._puts[needed.key]

    def _submit(self, ray: Any, remote: Any, tracker: Any, job: Job) -> bool:
        try:
            inputs = [self._input(ray, needed) for needed in job.inputs]
            checkpoint = None
            if job.checkpoint is not None:
                source = Path(job.checkpoint)
                checkpoint = ray.put(CheckpointFile(source.name, source.read_bytes()))
        except OSError as exc:  # a cached file or a checkpoint vanished meanwhile
            self._fail(job, Problem(one_line(as_user_error(exc) or exc)))
            return False
        job.ref = remote.options(name=f"fa-checks {job.label}").remote(
            job.kind, job.subject, self.worker_settings, self.cache.version, tracker, job.id,
            checkpoint, *inputs)
        return True

    def _finish(self, ray: Any, job: Job) -> None:
        try:
            result: TaskResult = ray.get(job.ref)
        except ray.exceptions.RayTaskError as exc:
            self._fail(job, self._raised(job, exc))
            return
        except ray.exceptions.RayError as exc:  # a worker or node lost past its retries
            self._fail(job, Problem(
                f"{job.label} was lost on the cluster after its retries "
                f"({one_line(exc).split('. ')[0]}); run again (what finished is in the cache)"))
            return
        job.result = result
        try:
            landed = {artifact.store(self.cache, refresh=bool(self.settings.retrain))
                      .relative_to(self.cache.root).as_posix() for artifact in result.artifacts}
        except Exception as exc:
            self._fail(job, Problem(user_sentence(exc)))  # a fault of ours is raised again
            return
        if result.error is not None:
            self._fail(job, Problem(result.error))
            return
        if job.expected is not None and job.expected.key not in landed:
            self._fail(job, Problem(
                f"{job.label}: the workers stored it under another cache key than this "
                "machine expects; install the same fa-checks version and the same rule files "
                "on every node"))
            return
        for subject_id in job.subjects:
            self.computed.setdefault(subject_id, {})[job.kind] = job
        if job.kind == "evaluation":
            self._conclude(job)

    def _conclude(self, job: Job) -> None:
        """The report as the library reads it from the driver's cache (the driver's paths)."""
        subject = job.subject
        try:
            report = evaluate_subject(subject, driver_settings(self.settings),
                                      StoredOnly(self.cache))
        except Missing as missing:
            self._fail(job, Problem(
                f"evaluation of {subject.id}: its {missing.kind} is not in the cache after the "
                "task; install the same fa-checks version and rule files on every node"))
            return
        except Exception as exc:
            self._fail(job, Problem(user_sentence(exc)))  # a fault of ours is raised again
            return
        report.subject["ran_on"] = self.progress.ran_on(self.computed.get(subject.id, {}))
        self._outcome(subject.id, report)

    def _raised(self, job: Job, exc: Any) -> Problem:
        """The problem of a task that raised: a user error as its sentence, anything else a
        fault with the worker's traceback (``str`` of Ray's error)."""
        cause = getattr(exc, "cause", None)
        known = as_user_error(cause) if cause is not None else None
        if known is not None:
            return Problem(one_line(known))
        node = self.progress.last_node(job)
        what = (f"{type(cause).__name__}: {one_line(cause)}" if cause is not None
                else one_line(exc))
        return Problem(f"{job.label} raised {what}" + (f" (on {node})" if node else ""),
                       fault=True, cause=cause,
                       traceback=TERMINAL_COLOUR.sub("", str(exc)))

    def _fail(self, job: Job, problem: Problem | None, *, because: Job | None = None) -> None:
        """``job`` gives its subjects ``problem``'s outcome (unless they have one already);
        ``because``: the input job that failed, whose outcome they have."""
        job.failed = True
        for subject_id in job.subjects:
            if problem is not None and not isinstance(self.results.get(subject_id), Failure):
                self._outcome(subject_id, problem.outcome(self.by_id[subject_id]))
        if because is not None:
            self.say(f"ray: {job.label} not run: its {because.kind} failed")
        elif problem is not None:
            line = one_line(problem.message)
            self.say(f"ray: {line}" if line.startswith(job.label)
                     else f"ray: {job.label} failed: {line}")

    def _poll(self, ray: Any, tracker: Any) -> None:
        try:
            starts = ray.get(tracker.snapshot.remote(), timeout=10)
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        except Exception:  # noqa: BLE001 - progress only: never stop the work for it
            return
        self.progress.update(starts, alive, self.jobs.values())


__all__ = ["Driver", "Problem", "evaluate_on_ray"]
