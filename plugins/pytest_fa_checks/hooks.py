"""Hooks the plugin offers to other plugins and conftest files."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_fa_checks_update_json(config: pytest.Config, data: dict[str, Any]) -> None:
    """Change the ``--fa-report`` JSON in place before the controller writes it.

    ``data`` is ``{"subjects": [...], "across_seeds": [...]}``: each subject is its
    ``Report.to_dict()`` plus ``id``, ``method``, ``seed`` and ``path`` (or ``verdict: "ERROR"``
    and ``error``); each across-seeds entry is an ``AcrossSeeds`` record with its ``label``.
    """
