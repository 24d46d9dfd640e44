"""Content-addressed artifacts (trained runs, baselines, reports) shared by every process.

:mod:`.store` decides when an artifact is computed, locked, written and read, and binds each
entry to its key; :mod:`.index` keeps the creation log (what ``clear`` may remove) and refuses
parts that are links; :mod:`.files` holds the file-level rules (names, digests, bounded
no-follow reads, exclusive creates).  None imports torch.
"""
