"""The project's own test run: the Ray tests stay together on one pytest-xdist worker.

They share one local Ray cluster (a session fixture, ``tests/ray_cluster.py``), and one of
them kills a node of it, so they cannot be spread over workers; ``xdist_group`` would say so,
but pytest 9.2 no longer lets xdist's ``loadgroup`` tag node ids.  This scheduler is xdist's
``loadscope`` where every other test is a scope of its own; it replaces only ``load`` (what
``-n N`` distributes by when no other ``--dist`` mode is chosen).
"""

from __future__ import annotations

from typing import Any

import pytest

TOGETHER = ("tests/test_ray.py::",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if getattr(config.option, "dist", None) != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class TogetherScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((prefix for prefix in TOGETHER if nodeid.startswith(prefix)), nodeid)

    return TogetherScheduling(config, log)
