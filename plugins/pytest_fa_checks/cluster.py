"""``--fa-ray ADDRESS``: every subject evaluated on a Ray cluster in one call.

The first item that needs a report asks for all of them at once (the library's
:func:`fa_checks.cluster.evaluate_on_ray`); the cluster runs the subjects in parallel while
this process waits, then each item reads its subject's outcome as it would have without Ray,
so the items, the verdict table, the JSON report and JUnit are the same.  The driver's
progress lines go to the terminal like the training progress does.  Where each subject ran is
in its report (``subject["ran_on"]``).  ``-n`` with ``--fa-ray`` is a usage error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fa_checks.errors import UserError, one_line

from .checks import CheckRun, SubjectError, internal_error
from .progress import shows_progress, write_line

if TYPE_CHECKING:
    from fa_checks.report import Report

log = logging.getLogger("fa_checks.pytest")


def evaluate_on_cluster(run: CheckRun) -> dict[str, Report | SubjectError]:
    """Every subject's report, or the error its items show, from one call to the cluster."""
    from fa_checks.cluster import TaskFault, evaluate_on_ray
    from fa_checks.evaluation import Failure

    config = run.config

    def say(line: str) -> None:
        log.info(line)
        if shows_progress(config):
            write_line(config, f"fa-checks: {line}")

    try:
        outcomes = evaluate_on_ray(list(run.subjects.values()), run.settings, run.cache,
                                   log=say)
    except UserError as exc:  # no cluster answers: every item says so
        error = SubjectError(one_line(exc))
        return dict.fromkeys(run.subjects, error)
    except Exception as exc:
        fault = internal_error(exc)
        return dict.fromkeys(run.subjects, fault)
    results: dict[str, Report | SubjectError] = {}
    for subject_id in run.subjects:
        outcome = outcomes.get(subject_id)
        if isinstance(outcome, TaskFault):  # as a fault in this process would be
            log.error("fa-checks: %s; on the worker:\n%s", outcome.message, outcome.traceback)
            results[subject_id] = internal_error(outcome.cause or RuntimeError(outcome.message))
        elif isinstance(outcome, Failure):
            results[subject_id] = SubjectError(outcome.message)
        elif outcome is None:
            results[subject_id] = internal_error(RuntimeError(
                f"the cluster gave no outcome for {subject_id}"))
        else:
            results[subject_id] = outcome
    return results
