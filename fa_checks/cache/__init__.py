"""Content-addressed artifacts (trained runs, baselines, reports) shared by every process.

:mod:`.store` decides when an artifact is computed, locked, written and read; :mod:`.files`
holds the file-level rules (names, digests, bounded no-follow reads) and imports no torch.
"""
