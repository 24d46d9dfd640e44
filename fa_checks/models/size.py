"""How large a model is, measured on the model itself before any weight is allocated.

:mod:`fa_checks.limits` bounds every size keyword by type and range, without torch: at most
``max_blocks`` blocks, each at most ``max_width`` wide.  The model those keywords describe can
then be built on the meta device, where a tensor has a shape and no storage, at a cost that
grows with the number of blocks only; and the model, the one definition of its architecture,
says which tensors its state holds, how many elements they have, and (``hidden_shape``, set by
its constructor) how large one sample's hidden state is.  No second description of any
architecture is kept anywhere.

Nothing is computed on the meta device, not even initial values: torch's meta kernels for
``normal_`` and for every forward operation are Python that imports sympy on first use, a
second of start-up for a command that otherwise never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError
from ..limits import Limits, Refusal, check_total, default_limits

#: torch.nn.init's initialisers: those that draw values hand themselves to the active
#: torch-function mode, the others only fill, which the meta device does without Python
_INITIALISERS = frozenset(getattr(nn.init, name) for name in dir(nn.init)
                          if name.endswith("_") and not name.startswith("_"))


class _NoValuesOnMeta(TorchFunctionMode):
    """Leave a meta tensor as it is where ``torch.nn.init`` would fill it: it has no values."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _INITIALISERS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: every parameter and buffer with its shape, no storage and
    no values."""
    with torch.device("meta"), _NoValuesOnMeta():
        return build()


def state_elements(model: nn.Module) -> int:
    """Elements of the model's state: its parameters and buffers."""
    return sum(tensor.numel() for tensor in model.state_dict().values())


def hidden_elements(model: nn.Module) -> int:
    """Elements of one sample's hidden state, as the model's ``hidden_shape`` says."""
    return math.prod(model.hidden_shape)


def check_model_size(
    model: nn.Module,
    limits: Limits | None = None,
    *,
    label: str,
    where: str = "",
    error: Refusal = ConfigError,
) -> None:
    """Refuse ``model`` (built on the meta device) when its state or one sample's hidden state
    exceeds the limits ``max_params`` and ``max_hidden_elements``.

    ``label`` names the model in the sentence (``"arch_kwargs.resmlp"``), ``where`` goes first.
    """
    limits = limits if limits is not None else default_limits()
    check_total(label, state_elements(model), "max_params", limits,
                detail="elements of model state (parameters and buffers)", where=where,
                error=error)
    check_total(label, hidden_elements(model), "max_hidden_elements", limits,
                detail="hidden-state elements per sample", where=where, error=error)


__all__ = ["build_on_meta", "check_model_size", "hidden_elements", "state_elements"]
