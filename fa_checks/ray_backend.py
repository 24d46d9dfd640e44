"""Subjects evaluated on a Ray cluster, their artifacts landing in the driver's own cache.

:func:`evaluate_on_ray` is :func:`fa_checks.engine.evaluate_subject` for many subjects at once,
with each expensive step a Ray task: a fresh subject's training *run*, the frozen-blocks
*baseline* it is compared with (one task for every subject that shares it: same arch, data,
seed, epochs and optimiser) and its *evaluation*.  The driver first asks its own cache, with
the engine's own keys, what is missing, and dispatches only that.

No file system is shared.  A task computes into a private temporary cache on its node and
returns the files it created, as bytes with the cache spec that names them; the driver writes
them into its cache as each task finishes.  So a second invocation computes nothing, and a
driver that dies loses only unfinished work.  An evaluation's inputs (the run, the baseline, a
checkpoint file) travel to it as bytes the same way.  A task whose worker or node dies is
retried by Ray; a task that raises gives its subjects that error, and the others go on.

Ray is an optional dependency, imported only here, only when it is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import ArtifactCache
from .errors import ConfigError, UserError, as_user_error, one_line

if TYPE_CHECKING:
    from .engine import Settings, Subject
    from .protocol import Report

Log = Callable[[str], None]

#: how often (seconds) the driver looks at what runs where, when no task has finished
POLL_SECONDS = 1.0
INSTALL_HINT = "pip install 'fa-checks[ray]'"


class RayError(ConfigError):
    """Ray is missing or unreachable, or a Ray option is out of range."""


class TaskError(UserError):
    """A subject's task raised on a worker; ``traceback`` holds the worker's traceback."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


# -- what travels between the driver and a task -----------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """One cache file as bytes, with the spec that names it (so the receiver files it itself)."""

    kind: str
    spec: Any
    suffix: str
    data: bytes


@dataclass(frozen=True)
class Input:
    """A file a task needs in its private cache, at ``relative`` under the cache root."""

    relative: str
    data: bytes


@dataclass(frozen=True)
class TaskResult:
    artifacts: list[Artifact]
    ran_on: dict[str, Any]
    seconds: float


# -- the worker side --------------------------------------------------------------------------
class _RecordingCache(ArtifactCache):
    """A private cache that remembers every artifact it creates (to send back)."""

    def __init__(self, root: str | os.PathLike[str], *, version: str) -> None:
        super().__init__(root, version=version)
        self.made: list[tuple[str, Any, str, Path]] = []

    def get_or_create(self, kind: str, spec: Any, create: Callable[[Path], None], *,
                      suffix: str = ".pt", refresh: bool = False) -> Path:
        existed = not refresh and self.path_for(kind, spec, suffix).is_file()
        path = super().get_or_create(kind, spec, create, suffix=suffix, refresh=refresh)
        if not existed:
            self.made.append((kind, spec, suffix, path))
        return path


def _where() -> dict[str, Any]:
    import ray

    context = ray.get_runtime_context()
    return {"node_ip": ray.util.get_node_ip_address(), "node_id": context.get_node_id(),
            "hostname": socket.gethostname(), "pid": os.getpid()}


def run_task(
    job: str,
    subject: Subject | None,
    baseline: Mapping[str, Any] | None,
    settings: Settings,
    cache_version: str,
    threads: int,
    tracker: Any,
    job_id: str,
    checkpoint: Input | None,
    *inputs: Input,
) -> TaskResult:
    """One job on a worker: ``"run"``, ``"baseline"`` or ``"evaluation"`` (a Ray task body).

    ``inputs`` are placed in a private cache first; ``checkpoint`` (a checkpoint subject's
    file) is written under its own name and the subject pointed at it.  A user error's message
    names the driver's file, not the worker's copy.
    """
    import ray
    import torch

    from . import engine

    started = time.monotonic()
    ran_on = _where()
    if tracker is not None:
        tracker.started.remote(job_id, ran_on)  # progress only: not waited for
    torch.set_num_threads(max(1, int(threads)))
    if str(settings.device).strip().lower() == "auto" and not ray.get_gpu_ids():
        # a task given no GPU by Ray must not take one that Ray lends to others
        settings = dataclasses.replace(settings, device="cpu")
    with tempfile.TemporaryDirectory(prefix="fa-checks-ray-") as root:
        cache = _RecordingCache(root, version=cache_version)
        for item in inputs:
            target = Path(root, item.relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data)
        original = local = None
        if checkpoint is not None and subject is not None:
            original = subject.path
            folder = Path(root, "subjects")
            folder.mkdir()
            local = folder / checkpoint.relative
            local.write_bytes(checkpoint.data)
            subject = dataclasses.replace(subject, path=str(local))
        try:
            if job == "run":
                engine.train_subject(subject, settings, cache)
            elif job == "baseline":
                engine.frozen_baseline_accuracy(**baseline, settings=settings, cache=cache)
            elif job == "evaluation":
                engine.evaluate_subject(subject, settings, cache)
            else:
                raise ValueError(f"unknown job {job!r}")
        except UserError as exc:
            if original and local:
                exc.args = tuple(a.replace(str(local), original) if isinstance(a, str) else a
                                 for a in exc.args)
            raise
        artifacts = [Artifact(kind, spec, suffix, path.read_bytes())
                     for kind, spec, suffix, path in cache.made]
    return TaskResult(artifacts, ran_on, time.monotonic() - started)


class ProgressTracker:
    """A small actor on the driver's node that tasks tell where they started (for progress)."""

    def __init__(self) -> None:
        self.starts: dict[str, list[dict[str, Any]]] = {}

    def started(self, job_id: str, ran_on: dict[str, Any]) -> None:
        self.starts.setdefault(job_id, []).append(ran_on)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return self.starts


# -- the driver side --------------------------------------------------------------------------
class _Missing(Exception):
    """Raised by :class:`_Lookup` for an artifact that is not in the driver's cache."""

    def __init__(self, kind: str, spec: Any, suffix: str, path: Path) -> None:
        super().__init__(f"{kind} {path.name} is not cached")
        self.kind, self.spec, self.suffix, self.path = kind, spec, suffix, path


class _Lookup(ArtifactCache):
    """The driver's cache, read only: what the engine would compute raises :class:`_Missing`.

    Running the engine's own functions against it gives the exact specs (and so keys) of what
    a subject needs, with no copy of the engine's key logic.  ``fresh``: treat every artifact
    as missing (``retrain``).
    """

    def __init__(self, cache: ArtifactCache, *, fresh: bool = False) -> None:
        super().__init__(cache.root, version=cache.version)
        self.fresh = fresh
        self.found: list[Path] = []

    def get_or_create(self, kind: str, spec: Any, create: Callable[[Path], None], *,
                      suffix: str = ".pt", refresh: bool = False) -> Path:
        path = self.path_for(kind, spec, suffix)
        if self.fresh or not path.is_file():
            raise _Missing(kind, spec, suffix, path)
        self.found.append(path)
        return path

    def get_or_create_json(self, kind: str, spec: Any, compute: Callable[[], Any], *,
                           refresh: bool = False) -> Any:
        path = self.path_for(kind, spec, ".json")
        value = None if self.fresh else self.read_json(kind, spec)
        if value is None:
            raise _Missing(kind, spec, ".json", path)
        self.found.append(path)
        return value


@dataclass
class _Job:
    id: str  # "run:<relative path>", "baseline:<relative path>", "evaluation:<subject id>"
    kind: str  # run | baseline | evaluation
    label: str  # for the log: "run of bp-seed1"
    subject: Subject | None = None
    baseline: dict[str, Any] | None = None
    expected: str | None = None  # the artifact (relative path) the job must deliver
    inputs: list[str] = field(default_factory=list)  # relative paths in the driver's cache
    checkpoint: str | None = None  # a checkpoint subject's file, sent as bytes
    waits_for: set[str] = field(default_factory=set)  # job ids
    subjects: list[str] = field(default_factory=list)  # whose outcome depends on this job
    ref: Any = None
    result: TaskResult | None = None
    error: UserError | None = None


def evaluate_on_ray(
    subjects: Sequence[Subject],
    settings: Settings,
    cache: ArtifactCache,
    *,
    address: str | None = "auto",
    gpus_per_run: float = 0.0,
    cpus_per_run: int = 1,
    max_retries: int = 3,
    runtime_env: Mapping[str, Any] | None = None,
    log: Log | None = None,
    on_result: Callable[[str, Report | UserError], None] | None = None,
) -> dict[str, Report | UserError]:
    """Every subject's report, or the user error that stopped it, computed as Ray tasks.

    ``address`` is what ``ray.init`` takes (``"auto"``: the cluster started on this machine by
    ``ray start``; ``"ray://..."``; None: ``$RAY_ADDRESS`` or a Ray started in this process);
    when this process is already connected, that connection is used and left open.  Each task
    asks for ``cpus_per_run`` CPUs (its torch threads) and ``gpus_per_run`` GPUs (a fraction
    lets several runs share one GPU) and is retried ``max_retries`` times when its worker or
    node dies.  A user rule named ``module:Class`` travels to the workers with its top-level
    module or package (Ray's ``py_modules``), merged into ``runtime_env``; fa-checks itself
    and rules registered by entry point must be installed on every node.

    Reports are the same as :func:`~fa_checks.engine.evaluate_subject`'s, with
    ``report.subject["ran_on"]``: for each job computed in this call (``run``, ``baseline``,
    ``evaluation``), the node that did it.  ``KeyboardInterrupt`` cancels every outstanding
    task and is raised again.
    """
    prefix = settings.option
    gpus, cpus, retries = _check_resources(settings, gpus_per_run, cpus_per_run, max_retries)
    ray = _import_ray(prefix("ray"))
    driver = _Driver(subjects, settings, cache, log=log, on_result=on_result)
    driver.plan()
    if not driver.jobs:
        driver.say(f"ray: all {len(subjects)} subjects are in the cache; nothing to compute")
        return driver.outcomes()
    env = _runtime_env(subjects, runtime_env)
    connected_here = not ray.is_initialized()
    if connected_here:
        _check_reachable(address, prefix("ray"))
        try:
            # a runtime_env with local modules is uploaded only for a whole job (ray.init)
            ray.init(address=address, runtime_env=env or None, logging_level="ERROR",
                     log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayError(
                f"{prefix('ray')} {address}: no Ray cluster to connect to ({one_line(exc)}); "
                "start one with `ray start --head` or give its address"
            ) from None
    elif env.get("py_modules") and not ray.get_runtime_context().runtime_env.get("py_modules"):
        driver.say("ray: this process was connected to Ray before; the rules' modules reach "
                   "the workers only if installed there or given to ray.init(runtime_env="
                   "{'py_modules': [...]})")
    try:
        # SPREAD: Ray's default prefers the driver's node and, measured on a two-node
        # cluster, left the other node idle while tasks queued on the busy one
        options = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": retries,
                   "scheduling_strategy": "SPREAD"}
        driver.run(ray, options, threads=max(1, int(cpus)))
    finally:
        if connected_here:
            ray.shutdown()
    return driver.outcomes()


def _check_resources(settings: Settings, gpus: Any, cpus: Any, retries: Any
                     ) -> tuple[float, int, int]:
    from . import values

    def checked(parse: Callable[[Any], Any], value: Any, option: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise RayError(f"{settings.option(option)} {value}: {exc}") from None

    gpus = checked(values.non_negative_float, gpus, "gpus-per-run")
    if gpus > 1 and not float(gpus).is_integer():
        raise RayError(f"{settings.option('gpus-per-run')} {gpus}: above 1 it must be a whole "
                       "number of GPUs (Ray shares a GPU only as a fraction of one)")
    cpus = checked(values.positive_int, cpus, "cpus-per-run")
    retries = int(retries)
    if retries < 0:
        raise ValueError(f"max_retries must be 0 or more, not {retries}")
    device = str(settings.device).strip().lower()
    if device.startswith("cuda:"):
        raise RayError(f"{settings.option('device')} {settings.device}: on Ray each task gets "
                       f"its GPU from Ray; use {settings.option('device')} cuda or auto")
    if device == "cuda" and gpus == 0:
        raise RayError(f"{settings.option('device')} cuda on Ray needs GPUs for each task: "
                       f"give {settings.option('gpus-per-run')} (e.g. 0.25)")
    return float(gpus), int(cpus), int(retries)


def _check_reachable(address: str | None, option: str, timeout: float = 10.0) -> None:
    """Refuse at once a ``host:port`` where nothing listens (``ray.init`` retries for minutes)."""
    host, sep, port = str(address or "").rpartition(":")
    if not sep or not port.isdigit() or "://" in str(address):
        return  # "auto", "local", "ray://...", $RAY_ADDRESS: Ray's own look-up
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayError(f"{option} {address}: no Ray cluster answers there "
                       f"({exc.strerror or type(exc).__name__}); start one with "
                       "`ray start --head` or give the address it prints") from None


def _import_ray(option: str) -> Any:
    try:
        import ray
    except ImportError:
        raise RayError(f"{option} needs Ray: {INSTALL_HINT}") from None
    return ray


def _runtime_env(subjects: Sequence[Subject], given: Mapping[str, Any] | None
                 ) -> dict[str, Any]:
    """``given`` plus the top-level module of every ``module:Class`` rule, as ``py_modules``
    (Ray uploads them when the driver connects; workers import them from their own copy)."""
    import importlib

    env = dict(given or {})
    modules = list(env.get("py_modules") or [])
    for name in sorted({s.method for s in subjects if s.method and ":" in s.method}):
        top = importlib.import_module(name.partition(":")[0].split(".")[0])
        if top not in modules:
            modules.append(top)
    if modules:
        env["py_modules"] = modules
    return env


class _Driver:
    """Plans the jobs, submits them when their inputs are in the cache, lands their results."""

    def __init__(self, subjects: Sequence[Subject], settings: Settings, cache: ArtifactCache,
                 *, log: Log | None,
                 on_result: Callable[[str, Report | UserError], None] | None = None) -> None:
        self.subjects = list(subjects)
        self.settings = settings
        # the driver decides nothing about devices: the workers resolve their own
        self.lookup_settings = dataclasses.replace(settings, device="cpu", retrain=False,
                                                   progress=False)
        self.worker_settings = dataclasses.replace(settings, retrain=False, progress=False)
        self.cache = cache
        self.log = log
        self.on_result = on_result
        self.jobs: dict[str, _Job] = {}
        self.results: dict[str, Report | UserError] = {}
        self.computed: dict[str, dict[str, _Job]] = {}  # subject id -> kind -> job
        self._starts: dict[str, list[dict[str, Any]]] = {}  # job id -> where it started
        self._last_progress = ""
        self._attempts: dict[str, int] = {}
        self._puts: dict[str, Any] = {}  # relative path -> its bytes in Ray's object store
        self._needs: dict[str, int] = {}  # relative path -> jobs not yet submitted needing it

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _outcome(self, subject_id: str, outcome: Report | UserError) -> None:
        self.results[subject_id] = outcome
        if self.on_result is not None:
            self.on_result(subject_id, outcome)

    # -- planning ----------------------------------------------------------------------------
    def _relative(self, path: Path) -> str:
        return path.relative_to(self.cache.root).as_posix()

    def _job(self, job: _Job, subject_id: str) -> _Job:
        job = self.jobs.setdefault(job.id, job)
        job.subjects.append(subject_id)
        return job

    def plan(self) -> None:
        from . import engine

        fresh = bool(self.settings.retrain)
        for subject in self.subjects:
            if subject.id in self.results or f"evaluation:{subject.id}" in self.jobs:
                continue
            lookup = _Lookup(self.cache, fresh=fresh)
            try:
                self._outcome(subject.id, engine.evaluate_subject(
                    subject, self.lookup_settings, lookup))
                continue
            except _Missing:
                pass
            except UserError as exc:
                self._outcome(subject.id, exc)
                continue
            evaluation = _Job(f"evaluation:{subject.id}", "evaluation",
                              f"evaluation of {subject.id}", subject=subject)
            if subject.kind == "checkpoint":
                evaluation.checkpoint = subject.path
            else:
                self._plan_input(evaluation, "run", subject, lambda c, s=subject:
                                 engine.train_subject(s, self.lookup_settings, c))
                if self.settings.baseline_acc is None and self.settings.depth_utility:
                    arguments = {
                        "arch": subject.arch, "arch_options": dict(subject.arch_options),
                        "data": subject.data, "data_options": dict(subject.data_options),
                        "seed": subject.seed, "epochs": subject.epochs,
                    }
                    self._plan_input(evaluation, "baseline", subject, lambda c, a=arguments:
                                     engine.frozen_baseline_accuracy(
                                         **a, settings=self.lookup_settings, cache=c),
                                     baseline=arguments)
            self._job(evaluation, subject.id)

    def _plan_input(self, evaluation: _Job, kind: str, subject: Subject,
                    ask: Callable[[ArtifactCache], Any],
                    baseline: dict[str, Any] | None = None) -> None:
        """Add the artifact ``ask`` needs to ``evaluation``'s inputs, planning a job if it is
        not cached (one job per artifact, however many subjects need it)."""
        lookup = _Lookup(self.cache, fresh=bool(self.settings.retrain))
        try:
            ask(lookup)
        except _Missing as missing:
            relative = self._relative(missing.path)
            job = self._job(_Job(f"{kind}:{relative}", kind,
                                 f"{kind} of {subject.id}" if kind == "run"
                                 else f"baseline {subject.arch}/{subject.data}/seed "
                                      f"{subject.seed}/{subject.epochs} epochs",
                                 subject=subject, baseline=baseline, expected=relative),
                            subject.id)
            evaluation.inputs.append(relative)
            evaluation.waits_for.add(job.id)
            return
        evaluation.inputs.append(self._relative(lookup.found[-1]))

    # -- running -----------------------------------------------------------------------------
    def run(self, ray: Any, options: dict[str, Any], *, threads: int) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        started = time.monotonic()
        counts: dict[str, int] = {}
        for job in self.jobs.values():
            counts[job.kind] = counts.get(job.kind, 0) + 1
        cached = sum(not isinstance(r, UserError) for r in self.results.values())
        self.say(f"ray: {len(self.subjects)} subjects ({cached} from the cache); "
                 + ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in counts.items())
                 + f" to compute on {self._describe_cluster(ray)}")
        self._check_fits(ray, options)
        for job in self.jobs.values():
            for relative in job.inputs:
                self._needs[relative] = self._needs.get(relative, 0) + 1
        tracker = ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False))(ProgressTracker).remote()
        remote = ray.remote(run_task)
        running: dict[Any, _Job] = {}  # ref -> job
        try:
            for job in self.jobs.values():
                if not job.waits_for:
                    self._submit(ray, remote, options, threads, tracker, job, running)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                for ref in ready:
                    job = running.pop(ref)
                    self._finish(ray, job)
                    for other in self.jobs.values():
                        if job.id in other.waits_for:
                            other.waits_for.discard(job.id)
                            if job.error is not None:
                                self._fail(other, job.error, because=job)
                            elif not other.waits_for and other.error is None:
                                self._submit(ray, remote, options, threads, tracker, other,
                                             running)
                self._progress(ray, tracker)
        except BaseException:
            for ref in running:
                # one already finished or gone has nothing to cancel
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            if running:
                self.say(f"ray: interrupted; cancelled {len(running)} outstanding tasks")
            raise
        finally:
            with contextlib.suppress(Exception):  # progress only
                ray.kill(tracker)
        self._record_where()
        errors = sum(isinstance(r, UserError) for r in self.results.values())
        self.say(f"ray: done in {time.monotonic() - started:.1f} s: "
                 f"{len(self.results) - errors} reports, {errors} errors")

    def _describe_cluster(self, ray: Any) -> str:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} "
                f"({total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs)")

    def _check_fits(self, ray: Any, options: Mapping[str, Any]) -> None:
        """Say so when no node has room for one task now (they wait: an autoscaler may add
        one, as a GPU group that scales from zero does)."""
        wanted = {"CPU": options["num_cpus"], "GPU": options["num_gpus"]}
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(all(node.get(k, 0) >= v for k, v in wanted.items() if v) for node in nodes):
            self.say(f"ray: no node has {wanted['CPU']:g} CPUs and {wanted['GPU']:g} GPUs for "
                     "a task; the tasks wait until one joins the cluster")

    def _input(self, ray: Any, relative: str) -> Any:
        """The file as a Ray object, put once however many jobs take it; the driver lets go of
        it when the last of them is submitted (a submitted task keeps its inputs alive)."""
        if relative not in self._puts:
            data = (self.cache.root / relative).read_bytes()
            self._puts[relative] = ray.put(Input(relative, data))
        self._needs[relative] = self._needs.get(relative, 1) - 1
        if self._needs[relative] <= 0:
            return self._puts.pop(relative)
        return self._puts[relative]

    def _submit(self, ray: Any, remote: Any, options: dict[str, Any], threads: int,
                tracker: Any, job: _Job, running: dict[Any, _Job]) -> None:
        try:
            inputs = [self._input(ray, relative) for relative in job.inputs]
            checkpoint = None
            if job.checkpoint is not None:
                source = Path(job.checkpoint)
                checkpoint = ray.put(Input(source.name, source.read_bytes()))
        except OSError as exc:  # a cached file or a checkpoint vanished meanwhile
            self._fail(job, as_user_error(exc))
            return
        job.ref = remote.options(name=f"fa-checks {job.label}", **options).remote(
            job.kind, job.subject, job.baseline, self.worker_settings, self.cache.version,
            threads, tracker, job.id, checkpoint, *inputs)
        running[job.ref] = job

    def _finish(self, ray: Any, job: _Job) -> None:
        try:
            job.result = ray.get(job.ref)
        except ray.exceptions.RayTaskError as exc:
            starts = self._starts.get(job.id)
            self._fail(job, _task_error(job, exc, _node(starts[-1]) if starts else None))
            return
        except ray.exceptions.RayError as exc:  # a worker or node lost past its retries
            self._fail(job, TaskError(f"{job.label} was lost on the cluster after its "
                                      f"retries ({one_line(exc).split('. ')[0]}); run again "
                                      "(what finished is in the cache)"))
            return
        try:
            landed = self._land(job.result)
        except UserError as exc:
            self._fail(job, exc)
            return
        if job.expected is not None and job.expected not in landed:
            self._fail(job, TaskError(
                f"{job.label}: the workers stored it under another cache key than this "
                "machine expects; install the same fa-checks version and the same rule "
                "files on every node"))
            return
        for subject_id in job.subjects:
            self.computed.setdefault(subject_id, {})[job.kind] = job
        if job.kind == "evaluation":
            self._conclude(job)

    def _land(self, result: TaskResult) -> set[str]:
        """Write the artifacts into the driver's cache (atomically, counted in created.jsonl)."""
        landed = set()
        for artifact in result.artifacts:
            path = self.cache.get_or_create(
                artifact.kind, artifact.spec,
                lambda tmp, data=artifact.data: tmp.write_bytes(data),
                suffix=artifact.suffix, refresh=bool(self.settings.retrain))
            landed.add(self._relative(path))
        return landed

    def _conclude(self, job: _Job) -> None:
        """The report as the engine reads it from the driver's cache (the driver's paths)."""
        from . import engine

        subject = job.subject
        try:
            report = engine.evaluate_subject(subject, self.lookup_settings, _Lookup(self.cache))
        except _Missing as missing:
            self._fail(job, TaskError(
                f"evaluation of {subject.id}: its {missing.kind} is not in the cache after the "
                "task; install the same fa-checks version and rule files on every node"))
            return
        except UserError as exc:
            self._fail(job, exc)
            return
        report.subject["ran_on"] = self._where(subject.id)
        self._outcome(subject.id, report)

    def _fail(self, job: _Job, error: UserError | None, *, because: _Job | None = None
              ) -> None:
        """``job`` gives its subjects ``error``; ``because``: the input job that failed."""
        error = error or TaskError(f"{job.label} failed")
        job.error = error
        for subject_id in job.subjects:
            if not isinstance(self.results.get(subject_id), UserError):
                self._outcome(subject_id, error)
        if because is not None:
            self.say(f"ray: {job.label} not run: its {because.kind} failed")
        elif one_line(error).startswith(job.label):
            self.say(f"ray: {one_line(error)}")
        else:
            self.say(f"ray: {job.label} failed: {one_line(error)}")

    def _where(self, subject_id: str) -> dict[str, dict[str, Any]]:
        """Per job computed for the subject in this call: its node and how often it was
        started (more than once: its worker or node died and Ray ran it again)."""
        return {kind: {
            "task": job.id,
            "node_ip": job.result.ran_on.get("node_ip"),
            "node_id": job.result.ran_on.get("node_id"),
            "hostname": job.result.ran_on.get("hostname"),
            "attempts": max(1, len(self._starts.get(job.id, []))),
        } for kind, job in self.computed.get(subject_id, {}).items() if job.result is not None}

    def _record_where(self) -> None:
        """``ran_on`` again with the last count of starts."""
        for subject_id in self.computed:
            report = self.results.get(subject_id)
            if report is not None and not isinstance(report, UserError):
                report.subject["ran_on"] = self._where(subject_id)

    # -- progress ----------------------------------------------------------------------------
    def _progress(self, ray: Any, tracker: Any) -> None:
        try:
            starts = ray.get(tracker.snapshot.remote(), timeout=10)
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        except Exception:  # noqa: BLE001 - progress only: never stop the work for it
            return
        self._starts = starts
        per_node: dict[str, dict[str, int]] = {}
        done = running = queued = 0
        for job in self.jobs.values():
            attempts = starts.get(job.id, [])
            if len(attempts) > self._attempts.get(job.id, 1) and job.result is None:
                self.say(f"ray: {job.label} started again on {_node(attempts[-1])} "
                         f"(attempt {len(attempts)})")
            self._attempts[job.id] = max(len(attempts), self._attempts.get(job.id, 1))
            if job.result is not None or job.error is not None:
                done += 1
                if job.result is not None:
                    node = _node(job.result.ran_on)
                    per_node.setdefault(node, {"done": 0, "running": 0})["done"] += 1
            elif job.ref is not None and attempts and attempts[-1]["node_id"] in alive:
                running += 1
                node = _node(attempts[-1])
                per_node.setdefault(node, {"done": 0, "running": 0})["running"] += 1
            else:
                queued += 1
        nodes = "; ".join(f"{node}: {c['done']} done, {c['running']} running"
                          for node, c in sorted(per_node.items()))
        line = (f"ray: {done}/{len(self.jobs)} tasks done, {running} running, {queued} queued"
                + (f" ({nodes})" if nodes else ""))
        if line != self._last_progress:
            self._last_progress = line
            self.say(line)

    def outcomes(self) -> dict[str, Report | UserError]:
        return {s.id: self.results[s.id] for s in self.subjects if s.id in self.results}


def _node(ran_on: Mapping[str, Any]) -> str:
    return f"{ran_on.get('node_ip')}/{str(ran_on.get('node_id'))[:6]}"


def _task_error(job: _Job, exc: Any, node: str | None) -> UserError:
    """The subject's error for a task that raised: a user error as it was, else one line
    (the worker's traceback kept in ``TaskError.traceback``)."""
    cause = getattr(exc, "cause", None)
    if cause is None:
        return TaskError(f"{job.label} failed: {one_line(exc)}", traceback=str(exc))
    known = as_user_error(cause)
    if known is not None:
        return known
    # str() of Ray's error is the worker's traceback
    return TaskError(f"{job.label} raised {type(cause).__name__}: {one_line(cause)}"
                     + (f" (on {node})" if node else ""), traceback=str(exc))


__all__ = ["Artifact", "Input", "RayError", "TaskError", "TaskResult", "evaluate_on_ray",
           "run_task"]
