"""One check session for both faces: ``fa-checks check/report/sweep`` and the pytest plugin.

A :class:`CheckSession` is built from the :class:`~fa_checks.settings.Settings`, the subjects
and the :class:`Outputs` asked for.  It owns what both faces used to do each in its own way:

- the checks made before any work (:func:`prepare`: the device or the Ray cluster, the torch
  threads; :meth:`Outputs.check`: every output path writable);
- the one rule for a checkpoint's data (:func:`fill_checkpoints`: ``--data``, ``--data-arg`` and
  ``--epochs`` fill in what a checkpoint does not record, in both faces);
- the cache and a memoised local-or-Ray :meth:`CheckSession.outcome`: a
  :class:`~fa_checks.report.Report` or a :class:`~fa_checks.evaluation.Failure` saying whether
  it is the user's or ours;
- the seed groups and the across-seeds gate (:func:`group_subjects`): fresh subjects and
  checkpoints with the same method, options, architecture, data and training that differ only
  in seed form a group, in both faces;
- the outputs (:meth:`Outputs.write`: JSON, HTML, plots; a Markdown summary or a comparison
  with an earlier run is one more writer there) and the saved reports read back
  (:func:`.reports.load_report_files`).

Rooms: :mod:`.check` (the session, the checks before work, a checkpoint's data),
:mod:`.groups` (seed groups), :mod:`.outputs`, :mod:`.reports`.

Nothing here imports torch at module level: a face that only looks a report up in the cache
need not pay for it; torch comes in on the compute path (evaluation, training, loading a
checkpoint to learn its seed group).  Two places still resolve the device (and so import torch)
before any cache lookup: :func:`prepare` with ``device=True`` (the command line) and the first
line of :func:`fa_checks.evaluation.evaluate_subject`; a torch-free lookup of a cached report
(its key: the file's digest and :meth:`Settings.evaluation_key`) belongs in
:meth:`CheckSession.outcome`, before ``_evaluate``.
"""

from __future__ import annotations

from .check import CheckSession, describe_failure, fill_checkpoints, gate_entry, prepare
from .groups import checkpoint_identity, fresh_identity, group_subjects
from .outputs import Outputs

__all__ = ["CheckSession", "Outputs", "checkpoint_identity", "describe_failure",
           "fill_checkpoints", "fresh_identity", "gate_entry", "group_subjects", "prepare"]
