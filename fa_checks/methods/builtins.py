"""Importing this module registers every built-in method (each lives in a module of its own)."""

from . import (  # noqa: F401 - imported for their @register side effect
    baselines,
    bp,
    dfa,
    fa,
    kp,
    ra,
    sign_symmetry,
    vector,
)
