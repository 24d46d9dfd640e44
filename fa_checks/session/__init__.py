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
- the outputs (:meth:`Outputs.write`: JSON, HTML, plots).

Nothing here imports torch at module level: a face that only looks a report up in the cache
need not pay for it; torch comes in on the compute path (evaluation, training, loading a
checkpoint to learn its seed group).
"""

from __future__ import annotations

from .check import CheckSession, describe_failure, fill_checkpoints, gate_entry, prepare
from .groups import checkpoint_identity, fresh_identity, group_subjects
from .outputs import Outputs

__all__ = ["CheckSession", "Outputs", "checkpoint_identity", "describe_failure",
           "fill_checkpoints", "fresh_identity", "gate_entry", "group_subjects", "prepare"]
