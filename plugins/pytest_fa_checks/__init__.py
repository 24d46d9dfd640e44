"""pytest-fa-checks: the fa-checks protocol as pytest items, for checkpoints and fresh runs.

    pytest --fa-checkpoint run.pt
    pytest --fa-method dfa --fa-seeds 1 2 3 4 -n 4 --fa-json fa.json
    pytest tests/ --fa-checkpoint run.pt          # your own tests, with the fa_* fixtures

The rooms, as pytest-xdist has them: :mod:`.plugin` (the hooks and fixtures pytest loads),
:mod:`.session` (the run-wide state of one process: the library's
:class:`fa_checks.session.CheckSession` adapted to pytest), :mod:`.flags`, :mod:`.parallel`
(xdist), :mod:`.terminal` (the controller's table and outputs), :mod:`.records`,
:mod:`.progress`, :mod:`.html` (pytest-html) and :mod:`.suite` (the built-in items).
Importing this package imports nothing else.
"""
