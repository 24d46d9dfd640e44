"""Repository-wide test configuration: one torch thread, hypothesis profiles."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a dev dependency
    pass
else:
    settings.register_profile(
        "default", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.register_profile("ci", deadline=None, max_examples=15, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("ci" if os.environ.get("CI") else "default")

pytest_plugins = ["pytester"]


def pytest_configure(config):  # noqa: ARG001 - pytest hook signature
    import torch

    torch.set_num_threads(1)
    # matplotlib's figure modules before any test runs: pytester drops from sys.modules every
    # module first imported during a test that uses it, and a matplotlib imported half anew
    # afterwards fails its own isinstance checks (a later test's figures then raise)
    try:
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:  # matplotlib is optional: the figure tests skip without it
        pass
