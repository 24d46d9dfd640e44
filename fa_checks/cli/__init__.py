"""The command line, ``fa-checks train | check | report | sweep | compare | cache``: a thin face of
:class:`fa_checks.session.CheckSession` (:mod:`.main`), with the CI loop's commands and flags
(compare, autosave, the job page, sweep files) in :mod:`.loop`."""
