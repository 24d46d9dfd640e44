"""A local-loss step that keeps a low-rank gradient in its factors through the layer it reaches.

DFA's gradient at a block's output is ``g_l = diag(s_l) E B_l^T``: rank at most C (the number of
classes), because every sample's signal is a projection of its C-dimensional error.  When the
block's output is a linear layer's output ``f = u W^T + b``, the layer's backward pass needs two
products with g, each ``N x d_out x d_in``::

    dW = g^T u = B (E_s^T u)          # C x N x d_in, then d_out x C x d_in
    du = g W   = E_s (B^T W)          # C x d_out x d_in, then N x C x d_in

with ``E_s = diag(s) E``.  In the factors each costs ``(N + d_out) C d_in`` multiply-adds
instead of ``N d_out d_in``: at d = 256, N = 128, C = 10, a ninth.  The result is the same
gradient up to float rounding (the sums are taken in another order), so a rule whose training
must match other code to the bit turns it off with ``low_rank = False``.

How the layer is found: from the output's autograd node.  A 2-D ``F.linear`` (``nn.Linear``)
records ``addmm(bias, u, W^T)`` (``mm`` without a bias); when the node is that, its weight is a
leaf reached through the transpose, and its bias (if it needs a gradient) a leaf vector, the
node's whole backward is done here and the backward pass starts at ``u`` instead.  By linearity
this is exact whatever else uses ``f``, ``u`` or ``W``.  Anything else (a block ending in an
addition, an activation, a convolution, a weight under autocast or a parametrisation, a saved
input modified in place) keeps autograd's dense backward.  Reading the graph costs nothing in
the forward pass, where a forward hook on every layer cost 4% of a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: ``g = left @ right.T`` with ``left`` (N, r) and ``right`` (d_out, r)
Factors = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class LinearCall:
    """``output = input @ weight.T (+ bias)`` as the autograd graph recorded it."""

    weight: Tensor
    bias: Tensor | None  # None: no bias, or one that needs no gradient
    input: Tensor


def _leaf(node: object) -> Tensor | None:
    """The tensor an ``AccumulateGrad`` node accumulates into, else None."""
    if type(node).__name__ != "AccumulateGrad":
        return None
    variable = getattr(node, "variable", None)
    return variable if isinstance(variable, Tensor) else None


def linear_producing(output: Tensor) -> LinearCall | None:
    """The linear layer whose output is ``output`` itself, read off its autograd node."""
    node = output.grad_fn
    kind = type(node).__name__
    try:
        if kind == "AddmmBackward0":
            if node._saved_alpha != 1 or node._saved_beta != 1:  # type: ignore[union-attr]
                return None
            bias_edge, _, weight_edge = node.next_functions  # type: ignore[union-attr]
            # W^T is saved only where u needs a gradient; the graph's t(W) edge is the proof
            x, transposed = node._saved_mat1, node._saved_mat2  # type: ignore[union-attr]
        elif kind == "MmBackward0":
            _, weight_edge = node.next_functions  # type: ignore[union-attr]
            bias_edge = (None, 0)
            x, transposed = node._saved_self, node._saved_mat2  # type: ignore[union-attr]
        else:
            return None
    except RuntimeError:  # a saved tensor was modified in place since: the dense backward
        return None
    through = weight_edge[0]
    if type(through).__name__ != "TBackward0":
        return None
    weight = _leaf(through.next_functions[0][0])
    bias = _leaf(bias_edge[0]) if bias_edge[0] is not None else None
    if weight is None or (bias_edge[0] is not None and bias is None):
        return None
    d_out, d_in = output.shape[-1], x.shape[-1]
    if not (output.dim() == x.dim() == weight.dim() == 2 and weight.shape == (d_out, d_in)
            and (transposed is None or transposed.data_ptr() == weight.data_ptr())
            and x.dtype == weight.dtype == output.dtype
            and (bias is None or tuple(bias.shape) == (d_out,))):
        return None
    return LinearCall(weight, bias, x)


def _accumulate(parameter: Tensor, gradient: Tensor) -> None:
    if parameter.grad is None:
        parameter.grad = gradient
    else:
        parameter.grad = parameter.grad + gradient


def linear_backward_in_factors(call: LinearCall, factors: Factors) -> Tensor | None:
    """The backward pass of ``call`` for the output gradient ``left @ right.T``.

    Adds the weight's and the bias's gradients to their ``.grad`` and returns the input's
    gradient, or None when the input needs none.
    """
    left, right = factors
    x = call.input
    with torch.no_grad():
        _accumulate(call.weight, right @ (left.T @ x))
        if call.bias is not None:
            _accumulate(call.bias, right @ left.sum(0))
        if x.requires_grad:
            return left @ (right.T @ call.weight)
    return None


def written_out(factors: Factors) -> Tensor:
    """The gradient ``left @ right.T`` itself, for an output no Linear produced."""
    left, right = factors
    return left @ right.T


def fits(factors: Factors | None, output: Tensor) -> bool:
    """Whether ``factors`` describe a gradient shaped like ``output`` (N, d_out)."""
    if factors is None:
        return False
    left, right = factors
    return (left.dim() == right.dim() == 2 and left.shape[1] == right.shape[1]
            and left.shape[0] == output.shape[0] and right.shape[0] == output.shape[1])
