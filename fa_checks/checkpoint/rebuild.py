"""A loaded checkpoint, :class:`Checkpoint`: its checked fields, and the model and training rule
they rebuild.

Loading (:mod:`.load`) has checked every field against the limits and the tensors present;
rebuilding checks the keywords again (the fields of a dataclass can be changed after loading),
builds the model, loads its state strictly, and resolves the method name only to a built-in or
an entry point unless the file was trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError, one_line
from ..limits import (
    Limits,
    check_arch_options,
    check_method_options,
    default_limits,
    method_network_size,
)
from .architecture import check_state_fits
from .errors import CheckpointError, is_allocation_failure, machine_fault, short

FORMAT = "fa-checks/1"

#: ``Checkpoint.source_format`` of the research code's two layouts
SEED_DICT_FORMAT = "seed-dict"
SEED_STATE_DICT_FORMAT = "seed-state-dict"

# how far a method's declared network may exceed its saved state (the size is an estimate)
_BACKING, _BACKING_SLACK = 4, 1_000_000


@dataclass
class Checkpoint:
    """A loaded checkpoint: everything needed to rebuild the model and its training rule."""

    path: Path
    arch: str
    arch_kwargs: dict[str, Any]
    model_state: dict[str, Tensor]
    method: str | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    method_state: dict[str, Tensor] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    seed: int | None = None
    epochs: int | None = None
    optimizer: dict[str, Any] | None = None
    test_acc: float | None = None
    history: list[Any] | None = None
    version: str | None = None
    #: FORMAT, SEED_DICT_FORMAT or SEED_STATE_DICT_FORMAT
    source_format: str = FORMAT
    #: a dataset name suggested by the input size when the file names no data (older formats)
    data_hint: str | None = None
    #: the research code's own ``config`` dict, when the file came with one
    source_config: dict[str, Any] | None = None
    #: whether it was loaded with trust=True: only then may its method name import a module
    trusted: bool = False
    #: method names the user gave the caller, which may import even when not trusted
    importable_methods: frozenset[str] = frozenset()
    #: architecture names (model factories) the user gave the caller, likewise
    importable_archs: frozenset[str] = frozenset()
    #: the limits it was checked against (None: :func:`fa_checks.limits.default_limits`)
    limits: Limits | None = field(default=None, repr=False)

    @property
    def may_import_arch(self) -> bool:
        """Whether its architecture, a ``module:callable``, may import its module."""
        return self.trusted or self.arch in self.importable_archs

    @property
    def num_classes(self) -> int:
        return int(self.arch_kwargs["num_classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.arch_kwargs["input_shape"])

    def build_model(self, device: torch.device | str | None = None) -> nn.Module:
        """The model with its saved weights (loaded strictly), in eval mode, on ``device``."""
        from ..models import ModelError, build_model

        limits = self.limits if self.limits is not None else default_limits()
        arch_kwargs = check_arch_options(self.arch, self.arch_kwargs, limits,
                                         where=f"{self.path}: ", prefix="arch_kwargs.",
                                         error=CheckpointError)
        try:
            model = build_model(self.arch, allow_import=self.may_import_arch, **arch_kwargs)
        except (ModelError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: cannot build {self.arch!r}: {one_line(exc)}") from None
        except Exception as exc:  # memory
            raise machine_fault(self.path, exc, f"building its {self.arch}") from None
        check_state_fits(self.path, self.arch, arch_kwargs, self.model_state, model,
                         allow_import=self.may_import_arch)
        try:
            model.load_state_dict(self.model_state, strict=True)
            if device is not None:
                model.to(device)
        except RuntimeError as exc:  # e.g. a dtype that cannot be copied
            if is_allocation_failure(exc):
                raise machine_fault(self.path, exc, "loading its weights") from None
            raise CheckpointError(
                f"{self.path}: the model state does not load: {one_line(exc)}") from None
        return model.eval()

    def build_method(self, model: nn.Module) -> Any:
        """The training rule set up on ``model`` with its saved state, or None if none was saved.

        The stored name resolves to a built-in or an entry point of ``fa_checks.methods``; a
        ``module:Class`` imports its module only when the file was loaded with ``trust=True``.
        Feedback is first drawn from ``torch.Generator().manual_seed(seed or 0)`` by ``setup``,
        then replaced by the saved tensors, so the result does not depend on that draw.
        """
        if self.method is None:
            return None
        from ..methods.base import method_from_name

        limits = self.limits if self.limits is not None else default_limits()
        options = check_method_options(self.method, self.method_options, limits,
                                       where=f"{self.path}: ", prefix="method_options.",
                                       error=CheckpointError)
        self._check_method_backed(options)
        try:
            allow_import = self.trusted or self.method in self.importable_methods
            method = method_from_name(self.method, options, allow_import=allow_import)
            method.input_shape = self.input_shape  # for rules that probe the hidden sizes
            method.setup(model, self.num_classes, torch.Generator().manual_seed(self.seed or 0))
        except (UserError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{self.path}: cannot rebuild its method {short(self.method)}: {one_line(exc)}"
            ) from None
        except Exception as exc:  # memory
            fault = machine_fault(self.path, exc, f"setting up method {self.method!r}")
            raise fault from None
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        state = {k: v.to(device) for k, v in self.method_state.items()}
        try:
            method.load_state_dict(state)
        except (UserError, KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise CheckpointError(
                f"{self.path}: the saved state of method {short(self.method)} does not load: "
                f"{one_line(exc)}"
            ) from None
        return method

    def _check_method_backed(self, options: Mapping[str, Any]) -> None:
        """A network the options size (``vnet_width``, ``vnet_depth``) must be one the file's
        method state could hold: its setup allocates it before the state is compared."""
        declared = method_network_size(options)
        held = sum(t.numel() for t in self.method_state.values())
        if declared is not None and declared > _BACKING * held + _BACKING_SLACK:
            raise CheckpointError(
                f"{self.path}: method_options {short(dict(options))} size a network of about "
                f"{declared:,} elements but its method_state holds {held:,}; the options do not "
                "match the saved state"
            )
