"""The research code's own checkpoints: ``{"state_dict", "Bs", "config", "test_acc"}`` and a bare
ResMLP ``state_dict``.

Neither says what it holds, so the dimensions are read off the tensor shapes (``embed.weight``
is ``(d_hidden, features)``, ``out_head.weight`` ``(classes, d_hidden)``, one ``blocks.<i>.`` per
block), ``Bs`` of shape ``(d, C)`` are DFA's feedback and ``(d, d)`` FA's, and the input size
suggests the dataset.  Every value is checked against the limits as a ``fa-checks/1`` field is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from ..limits import Limits, beyond, check_method_options, check_training
from .architecture import checked_arch
from .errors import CheckpointError, preview, short
from .fields import check_tensor, checked_test_acc, is_number, tensor_dict
from .rebuild import SEED_DICT_FORMAT, SEED_STATE_DICT_FORMAT, Checkpoint

# input feature counts of the datasets the research code used, to suggest one for its files
_DATA_HINTS = {3072: "cifar10", 784: "mnist", 40: "mnist1d"}

_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")


def from_seed_dict(path: Path, raw: Mapping[str, Any], limits: Limits) -> Checkpoint:
    """``{"state_dict", "Bs", "config", "test_acc"}``: a ResMLP, its feedback, its settings."""
    state = tensor_dict(path, raw, "state_dict", limits)
    arch_kwargs, model_state = _seed_resmlp(path, state, "state_dict", limits)
    config = _seed_config(path, raw.get("config"))
    method, method_options, method_state = None, {}, {}
    feedback = raw.get("Bs")
    if feedback is not None:
        method, method_state = _seed_feedback(path, feedback, arch_kwargs)
        penalty = (config or {}).get("lam")
        if method == "dfa" and is_number(penalty) and penalty > 0:
            method_options = {"penalty": float(penalty)}
        method_options = check_method_options(method, method_options, limits,
                                              where=f"{path}: ", prefix="config.",
                                              error=CheckpointError)
    settings = {key: (config or {}).get(key) for key in ("seed", "epochs", "lr", "wd")}
    given = {key: value for key, value in settings.items() if value is not None}
    names = {"seed": "config.seed", "epochs": "config.epochs", "lr": "config.lr",
             "weight_decay": "config.wd"}
    if "wd" in given:
        given["weight_decay"] = given.pop("wd")
    training = check_training(**given, limits=limits, names=names, where=f"{path}: ",
                              error=CheckpointError)
    optimizer = {k: training[k] for k in ("lr", "weight_decay") if k in training} or None
    return Checkpoint(
        path=path,
        arch="resmlp",
        arch_kwargs=arch_kwargs,
        model_state=model_state,
        method=method,
        method_options=method_options,
        method_state=method_state,
        seed=training.get("seed"),
        epochs=training.get("epochs"),
        optimizer=optimizer,
        test_acc=checked_test_acc(path, raw),
        source_format=SEED_DICT_FORMAT,
        data_hint=_data_hint(arch_kwargs),
        source_config=config,
    )


def from_seed_state_dict(path: Path, raw: Mapping[str, Tensor], limits: Limits) -> Checkpoint:
    """A bare ResMLP ``state_dict``."""
    state = tensor_dict(path, {"the state dict": raw}, "the state dict", limits)
    arch_kwargs, model_state = _seed_resmlp(path, state, "the state dict", limits)
    return Checkpoint(
        path=path,
        arch="resmlp",
        arch_kwargs=arch_kwargs,
        model_state=model_state,
        source_format=SEED_STATE_DICT_FORMAT,
        data_hint=_data_hint(arch_kwargs),
    )


def _seed_config(path: Path, config: Any) -> dict[str, Any] | None:
    """The research code's ``config`` (``vars(args)``): plain values and short lists of them."""
    if config is None:
        return None
    if not isinstance(config, Mapping) and hasattr(config, "__dict__"):
        config = vars(config)  # an argparse.Namespace, readable only from a trusted file
    if not isinstance(config, Mapping) or len(config) > 1000:
        raise CheckpointError(f"{path}: 'config' must be a dict of settings, got "
                              f"{short(config)}")

    def plain(value: Any) -> bool:
        return value is None or isinstance(value, (bool, str, int, float))

    for key, value in config.items():
        ok = plain(value) or (isinstance(value, (list, tuple)) and len(value) <= 1000
                              and all(plain(v) for v in value))
        if not isinstance(key, str) or not ok:
            raise CheckpointError(f"{path}: config[{short(key)}] must be a plain setting, got "
                                  f"{short(value)}")
    return dict(config)


def _block_count(path: Path, keys: list[str], limits: Limits) -> int:
    """The number of blocks the ``blocks.<i>.`` keys name: ids 0..n-1, every one, n bounded."""
    ids = set()
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match is None:
            continue
        digits = match.group(1)
        if len(digits) > 9 or int(digits) >= limits.max_blocks:
            raise CheckpointError(f"{path}: key {short(key)} names block {digits[:24]}, beyond "
                                  f"{beyond('max_blocks', limits, digits[:24])}")
        ids.add(int(digits))
    if ids != set(range(len(ids))):
        missing = sorted(set(range(max(ids) + 1)) - ids)
        raise CheckpointError(
            f"{path}: its blocks are not numbered 0..{max(ids)}: no keys for block(s) "
            f"{preview(missing)}")
    return len(ids)


def _seed_resmlp(
    path: Path, state: dict[str, Tensor], what: str, limits: Limits
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The research code's ResMLP state (``embed.*``) renamed to ours, and its dimensions."""
    renamed = {
        ("embed_layer." + key[len("embed."):]) if key.startswith("embed.") else key: tensor
        for key, tensor in state.items()
    }
    for key in ("embed_layer.weight", "out_head.weight"):
        if key not in renamed:
            seed_key = key.replace("embed_layer.", "embed.")
            raise CheckpointError(
                f"{path}: {what} is not a ResMLP state dict: missing key {seed_key!r} "
                f"(its keys are {preview(list(state))})"
            )
    embed, head = renamed["embed_layer.weight"], renamed["out_head.weight"]
    if embed.dim() != 2 or head.dim() != 2:
        raise CheckpointError(
            f"{path}: {what} is not a ResMLP state dict: 'embed.weight' {tuple(embed.shape)} "
            f"and 'out_head.weight' {tuple(head.shape)} must be matrices"
        )
    arch_kwargs = {
        "input_shape": [int(embed.shape[1])],
        "num_classes": int(head.shape[0]),
        "d_hidden": int(embed.shape[0]),
        "num_blocks": _block_count(path, list(renamed), limits),
    }
    return checked_arch(path, "resmlp", arch_kwargs, limits), renamed


def _seed_feedback(
    path: Path, feedback: Any, arch_kwargs: Mapping[str, Any]
) -> tuple[str, dict[str, Tensor]]:
    """``Bs`` of shape (d, C) are DFA's feedback, (d, d) FA's."""
    d, classes = arch_kwargs["d_hidden"], arch_kwargs["num_classes"]
    blocks = arch_kwargs["num_blocks"]
    if not isinstance(feedback, (list, tuple)) or not all(
        isinstance(b, Tensor) for b in feedback
    ):
        raise CheckpointError(f"{path}: 'Bs' must be a list of feedback matrices")
    if len(feedback) != blocks:
        raise CheckpointError(
            f"{path}: 'Bs' holds {len(feedback)} feedback matrices for {blocks} blocks"
        )
    for i, b in enumerate(feedback):
        check_tensor(path, f"Bs[{i}]", b)
    shapes = {tuple(b.shape) for b in feedback}
    if shapes <= {(d, d)}:
        method = "fa"
    elif shapes <= {(d, classes)}:
        method = "dfa"
    else:
        raise CheckpointError(
            f"{path}: 'Bs' shapes {sorted(shapes)} are neither DFA's (d_hidden, num_classes) = "
            f"{(d, classes)} nor FA's (d_hidden, d_hidden) = {(d, d)}"
        )
    return method, {f"feedback.{i}": b for i, b in enumerate(feedback)}


def _data_hint(arch_kwargs: Mapping[str, Any]) -> str | None:
    features = math.prod(int(s) for s in arch_kwargs["input_shape"])
    hint = _DATA_HINTS.get(features)
    if hint == "cifar10" and arch_kwargs["num_classes"] == 100:
        return "cifar100"
    return hint
