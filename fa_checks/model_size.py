"""How large a model is, measured on the model itself before any weight is allocated.

:mod:`fa_checks.limits` bounds every size keyword by type and range, without torch: at most
``max_blocks`` blocks, each at most ``max_width`` wide.  The model those keywords describe can
then be built on the meta device, where a tensor has a shape and no storage, at a cost that
grows with the number of blocks only; and the model, the one definition of its architecture,
says which tensors its state holds, how many elements they have, and how large one sample's
hidden state is.  No second description of any architecture is kept anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .anatomy import Anatomy, eval_mode
from .errors import ConfigError
from .limits import Limits, Refusal, check_total, default_limits


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: every parameter and buffer with its shape, no storage."""
    with torch.device("meta"):
        return build()


def state_elements(model: nn.Module) -> int:
    """Elements of the model's state: its parameters and buffers."""
    return sum(tensor.numel() for tensor in model.state_dict().values())


def hidden_elements(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Elements of one sample's hidden state ``h_0``: the anatomy's embedding of one sample.

    The sample lives on the model's device: on the meta device nothing is computed but shapes.
    A block maps ``h_l`` to a state of the same shape (a residual stream must), so ``h_0``
    stands for every hidden state of a built-in model.
    """
    device = next((t.device for t in model.state_dict().values()), torch.device("meta"))
    with torch.no_grad(), eval_mode(model):  # a batch norm's running statistics stay as they are
        h = Anatomy(model).embed(torch.zeros(1, *input_shape, device=device))
    return math.prod(h.shape[1:])


def check_model_size(
    model: nn.Module,
    input_shape: Sequence[int],
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
    check_total(label, hidden_elements(model, input_shape), "max_hidden_elements", limits,
                detail="hidden-state elements per sample", where=where, error=error)


__all__ = ["build_on_meta", "check_model_size", "hidden_elements", "state_elements"]
