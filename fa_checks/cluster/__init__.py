"""Subjects evaluated on a Ray cluster, their artifacts landing in this machine's cache.

:func:`evaluate_on_ray` gives many subjects at once what :func:`fa_checks.evaluation.outcome`
gives one, with each expensive step a Ray task: a fresh subject's training *run*, the
frozen-blocks *baseline* it is compared with (one task for all the subjects that share it) and
its *evaluation*.  Only what the driver's cache lacks is computed; no file system is shared:
inputs travel to a task as bytes and what it made comes back as bytes, landing in the driver's
cache as each task finishes, so a second invocation computes nothing and a driver that dies
loses only unfinished work.

One module per job: :mod:`.connect` (what the settings ask of Ray, checked before any work;
the connection; the runtime environment that carries a user's rules), :mod:`.plan` (what the
cache lacks, as jobs), :mod:`.tasks` (what runs on a worker), :mod:`.driver` (submitting,
landing, retries, Ctrl-C) and :mod:`.progress` (what the driver says, where each subject ran).

Ray is an optional dependency (``pip install 'fa-checks[ray]'``), imported only inside the
functions that use it; importing this package imports neither Ray nor torch.
"""

from .connect import INSTALL_HINT, RayError, check_settings
from .driver import evaluate_on_ray

__all__ = ["INSTALL_HINT", "RayError", "check_settings", "evaluate_on_ray"]
