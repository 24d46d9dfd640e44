"""What runs on a worker: one job (a training run, a frozen-blocks baseline or an evaluation)
in a private cache, and the files it made, sent back as bytes.

No file system is shared with the driver.  A task's inputs (the artifacts it needs from the
driver's cache, a checkpoint file) arrive as bytes; it stores them in a temporary cache of its
own, runs the library's own function for its job against that cache, and returns every
artifact the function created, each with the kind and spec that name it, so the driver files
it in its own cache under its own key.  An error a user can cause comes back as a sentence in
the result; any other exception is raised, and Ray carries it with the worker's traceback.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cache.store import ArtifactCache
from ..errors import user_sentence

if TYPE_CHECKING:
    from ..settings import Settings
    from ..subjects import Subject

#: the jobs a task can do
JOBS = ("run", "baseline", "evaluation")


@dataclass(frozen=True)
class Artifact:
    """One cache artifact as bytes, with the kind, spec and suffix that name it."""

    kind: str
    spec: Any
    suffix: str
    data: bytes

    def store(self, cache: ArtifactCache, *, refresh: bool = False) -> Path:
        """Filed in ``cache`` under its own key (atomically, with its digest)."""
        return cache.get_or_create(self.kind, self.spec,
                                   lambda tmp: tmp.write_bytes(self.data),
                                   suffix=self.suffix, refresh=refresh)


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint subject's file: its name and bytes (the worker writes its own copy)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class TaskResult:
    """What a task sends back: the artifacts it made, where it ran, and the sentence of an
    error a user can cause (then the artifacts are what it made before)."""

    artifacts: list[Artifact]
    ran_on: dict[str, Any]
    seconds: float
    error: str | None = None


class RecordingCache(ArtifactCache):
    """A cache that remembers the artifacts it creates (to send them back).

    It wraps the ``create`` / ``compute`` callbacks of the two public methods, which the cache
    calls exactly when it computes an artifact, so it knows nothing of the cache's insides.
    """

    def __init__(self, root: str | os.PathLike[str], *, version: str) -> None:
        super().__init__(root, version=version)
        self.made: list[tuple[str, Any, str]] = []

    def get_or_create(self, kind: str, spec: Any, create: Callable[[Path], None], *,
                      suffix: str = ".pt", refresh: bool = False,
                      validate: Callable[[Path], Any] | None = None) -> Path:
        def recorded(tmp: Path) -> None:
            create(tmp)
            self.made.append((kind, spec, suffix))

        return super().get_or_create(kind, spec, recorded, suffix=suffix, refresh=refresh,
                                     validate=validate)

    def get_or_create_json(self, kind: str, spec: Any, compute: Callable[[], Any], *,
                           refresh: bool = False,
                           validate: Callable[[Any], Any] | None = None) -> Any:
        def recorded() -> Any:
            value = compute()
            self.made.append((kind, spec, ".json"))
            return value

        return super().get_or_create_json(kind, spec, recorded, refresh=refresh,
                                          validate=validate)

    def artifacts(self) -> list[Artifact]:
        return [Artifact(kind, spec, suffix, self.path_for(kind, spec, suffix).read_bytes())
                for kind, spec, suffix in self.made]


def where() -> dict[str, Any]:
    """The node and process this task runs in."""
    import ray

    return {"node_ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(), "pid": os.getpid()}


def run_task(job: str, subject: Subject, settings: Settings, cache_version: str,
             tracker: Any, job_id: str, checkpoint: CheckpointFile | None,
             *inputs: Artifact) -> TaskResult:
    """One job on a worker (a Ray task's body): ``"run"`` trains ``subject``, ``"baseline"``
    trains the frozen-blocks baseline ``subject``, ``"evaluation"`` evaluates it.

    ``inputs`` are stored in the private cache first; ``checkpoint`` (a checkpoint subject's
    file) is written under its own name and the subject pointed at it.  A user error's
    sentence names the driver's file, not the worker's copy.
    """
    import ray

    from ..evaluation import evaluate_subject
    from ..training.runs import frozen_baseline, train_subject
    from ..training.threads import use_threads

    started = time.monotonic()
    ran_on = where()
    if tracker is not None:
        tracker.started.remote(job_id, ran_on)  # progress only: not waited for
    use_threads(settings.threads)
    if str(settings.device).strip().lower() == "auto" and not ray.get_gpu_ids():
        # a task given no GPU by Ray must not take one that Ray lends to others
        settings = dataclasses.replace(settings, device="cpu")
    with tempfile.TemporaryDirectory(prefix="fa-checks-ray-") as root:
        placed = ArtifactCache(root, version=cache_version)
        for artifact in inputs:
            artifact.store(placed)
        cache = RecordingCache(root, version=cache_version)
        local = original = None
        if checkpoint is not None:
            original = str(subject.path)
            local = Path(root, "subjects", checkpoint.name)
            local.parent.mkdir()
            local.write_bytes(checkpoint.data)
            subject = dataclasses.replace(subject, path=str(local))
        error = None
        try:
            work = {"run": train_subject, "baseline": frozen_baseline,
                    "evaluation": evaluate_subject}[job]
            work(subject, settings, cache)
        except Exception as exc:
            error = user_sentence(exc)  # a fault: Ray sends it with the worker's traceback
            if local is not None and original is not None:
                error = error.replace(str(local), original)
        artifacts = cache.artifacts()
    return TaskResult(artifacts, ran_on, time.monotonic() - started, error)


@dataclass
class ProgressTracker:
    """A small actor on the driver's node that each task tells where it started; the driver
    asks it for the record (progress, and how often a task was started again)."""

    starts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def started(self, job_id: str, ran_on: dict[str, Any]) -> None:
        self.starts.setdefault(job_id, []).append(ran_on)

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return self.starts


__all__ = ["JOBS", "Artifact", "CheckpointFile", "ProgressTracker", "RecordingCache",
           "TaskResult", "run_task", "where"]
