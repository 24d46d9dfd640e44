"""Subjects evaluated in parallel processes on this machine (``fa-checks sweep -j N``).

Each process evaluates whole subjects with the library's own :func:`outcome` against the one
shared cache (its file locks let two processes that need the same frozen baseline compute it
once), with its torch threads chosen by the threads rule for one of ``N`` processes sharing
the cores (:func:`fa_checks.training.threads.share_cores`).  Results come back in the order of
the subjects, so the table is the one ``-j 1`` prints.  Processes are forked from a fresh
server process that has imported torch but run nothing (``forkserver``; ``spawn`` where there
is none): a child forked from this process, which has used torch's thread pool, can hang, and
a spawned one pays torch's import again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..evaluation import Outcome
    from ..settings import Settings
    from ..subjects import Subject


def _start_worker(jobs: int) -> None:
    from ..training.threads import share_cores

    share_cores(jobs)


def _evaluate_one(subject: Subject, settings: Settings) -> Outcome:
    from ..evaluation import outcome
    from ..training.threads import use_threads

    use_threads(settings.threads)
    return outcome(subject, settings, settings.open_cache(None), log=None)


def evaluate_in_processes(subjects: Sequence[Subject], settings: Settings, jobs: int, *,
                          log: Callable[[str], None] | None = None) -> list[Outcome]:
    """Each subject's outcome, in order, from ``jobs`` processes.  A fault of fa-checks in a
    process is raised here, with its traceback."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    quiet = dataclasses.replace(settings, progress=False)  # a sink does not cross processes
    workers = max(1, min(jobs, len(subjects)))
    results: dict[int, Outcome] = {}
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", "fa_checks.evaluation"])
    else:
        context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_start_worker, initargs=(workers,)) as pool:
        futures = {pool.submit(_evaluate_one, s, quiet): i for i, s in enumerate(subjects)}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            if log is not None:
                log(f"fa-checks: [{subjects[index].id}] done ({len(results)} of "
                    f"{len(subjects)})")
    return [results[i] for i in range(len(subjects))]


__all__ = ["evaluate_in_processes"]

