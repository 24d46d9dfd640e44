"""Seed groups: subjects with the same method, options, architecture, data and training that
differ only in seed, fresh runs and checkpoints alike (the across-seeds gate judges each group).

A fresh subject's identity is what the flags name; a checkpoint's is what its file records
(read with :func:`~fa_checks.checkpoint.load_checkpoint`, which imports torch, and only when two
or more checkpoints are checked).  Within one session every subject shares the settings, so
they need not be part of the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..settings import Settings
from ..subjects import Subject

#: ``(label, key, seed)``: the group's name, what its members share, the member's seed
Identity = tuple[str, str, int]


def _label(method: str, options: Mapping[str, Any]) -> str:
    from ..values import format_key_values

    return f"{method}-{format_key_values(options)}" if options else method


def fresh_identity(subject: Subject) -> Identity | None:
    """``(label, key, seed)`` of a fresh subject: what makes its seed group."""
    if subject.kind != "fresh" or subject.method is None or subject.seed is None:
        return None
    key = {"method": subject.method, "method_options": dict(subject.method_options),
           "arch": subject.arch, "arch_options": dict(subject.arch_options),
           "data": {"name": subject.data, **subject.data_options}, "epochs": subject.epochs,
           "optimizer": None}
    return _label(subject.method, subject.method_options), _key(key), subject.seed


def checkpoint_identity(subject: Subject, settings: Settings) -> Identity | None:
    """``(label, key, seed)`` of a checkpoint, from what its file records (loaded, which
    imports torch); None when it records no method or seed, or cannot be read (its own
    evaluation says why)."""
    from ..checkpoint import load_checkpoint
    from ..evaluation import checkpoint_data

    if subject.path is None:
        return None
    try:
        checkpoint = load_checkpoint(subject.path, trust=settings.trust)
        name, options = checkpoint_data(checkpoint, subject)
    except Exception:  # noqa: BLE001 - its evaluation reports it, with the face's sentence
        return None
    if not checkpoint.method or checkpoint.seed is None:
        return None
    epochs = checkpoint.epochs if checkpoint.epochs is not None else subject.epochs
    key = {"method": checkpoint.method, "method_options": dict(checkpoint.method_options),
           "arch": checkpoint.arch, "arch_options": dict(checkpoint.arch_kwargs),
           "data": {"name": name, **options}, "epochs": epochs,
           "optimizer": checkpoint.optimizer}
    # a file records every option, defaults too: the method names the group (two groups of one
    # method are told apart by group_subjects)
    return checkpoint.method, _key(key), int(checkpoint.seed)


def _key(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, default=str)


def group_subjects(identities: Mapping[str, Identity | None]) -> dict[str, list[str]]:
    """label -> subject ids, for every group of two or more seeds.

    ``identities``: subject id -> ``(label, key, seed)`` (None: in no group).  Subjects with the
    same key form a group (one subject per seed, the first given); two groups whose labels
    coincide (the same method on two architectures) are told apart by a numbered suffix.
    """
    groups: dict[str, tuple[str, dict[int, str]]] = {}
    for subject_id, identity in identities.items():
        if identity is None:
            continue
        label, key, seed = identity
        groups.setdefault(key, (label, {}))[1].setdefault(seed, subject_id)
    found: dict[str, list[str]] = {}
    for label, seeds in groups.values():
        if len(seeds) < 2:
            continue
        name, n = label, 1
        while name in found:
            n += 1
            name = f"{label}-{n}"
        found[name] = list(seeds.values())
    return found


__all__ = ["Identity", "checkpoint_identity", "fresh_identity", "group_subjects"]
