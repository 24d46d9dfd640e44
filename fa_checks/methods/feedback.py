"""Layerwise feedback: every weight layer sends the error to its input through a matrix B, not W.

Rule (feedback alignment, Lillicrap et al. 2016): a targeted layer ``y = x W^T + b`` gives its
input the gradient ``grad_x = grad_y @ B`` instead of ``grad_y @ W``, while W and b still get
their exact gradients ``grad_y^T x`` and ``sum(grad_y)``.  Everything between layers
(activations, LayerNorm, BatchNorm, residual adds) is differentiated exactly by autograd.

Storage convention: each B is stored with the shape of its W, ``(d_out, d_in)`` (for a
convolution ``(C_out, C_in, kh, kw)``), so backpropagation is ``B = W`` and the alignment is
``||B - W|| / ||W||``, which is the literature's ``||B - W^T|| / ||W||`` for a B shaped like W^T.

How it is installed: while a method runs a forward pass (in ``step`` and ``credit``), the
``forward`` of each target ``nn.Linear`` / ``nn.Conv2d`` is replaced on the instance by one that
calls a custom ``autograd.Function``, and restored in ``finally``.  The model's code is not
edited, no backward hooks are used, and the weights are read at call time (never rebound), so
the optimizer always trains the live parameters.

Not supported: ``nn.MultiheadAttention`` (the ViT) computes its projections inside
``F.multi_head_attention_forward`` from its own weight tensors, so they cannot be re-routed and
part of the backward pass would silently stay exact; such models are refused with a
:class:`MethodError`, as are other weight layers whose backward cannot be re-routed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.anatomy import eval_mode, per_sample_gradients
from .base import Figures, Method, MethodError

#: weight layers whose backward this module cannot re-route (their use would mix in exact BP)
UNSUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Bilinear,
    nn.RNNBase,
)


# -- the re-routed layers ----------------------------------------------------------------------
class FeedbackLinearFunction(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` whose input gradient is ``grad_out @ feedback``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor
    ) -> Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out @ feedback
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_weight = flat_grad.T @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        return grad_x, grad_weight, grad_bias, None


class FeedbackConv2dFunction(torch.autograd.Function):
    """``F.conv2d`` whose input gradient is the transposed convolution with ``feedback``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        feedback: Tensor,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
    ) -> Tensor:
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.weight_shape = weight.shape
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(
                x.shape, feedback, grad_out, stride, padding, dilation, groups
            )
        if ctx.needs_input_grad[1]:
            grad_weight = torch.nn.grad.conv2d_weight(
                x, ctx.weight_shape, grad_out, stride, padding, dilation, groups
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


def _conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    if module.padding_mode != "zeros":
        raise MethodError(
            f"layerwise feedback supports Conv2d with padding_mode='zeros' only, got "
            f"{module.padding_mode!r}"
        )
    padding = module.padding
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(t % 2 for t in totals):
            raise MethodError("layerwise feedback cannot re-route Conv2d padding='same' with an "
                              "even kernel (asymmetric padding); give explicit padding")
        return (totals[0] // 2, totals[1] // 2)
    return (int(padding[0]), int(padding[1]))


def _routed_forward(module: nn.Module, feedback: Tensor) -> Any:
    if isinstance(module, nn.Conv2d):
        padding = _conv_padding(module)
        stride = tuple(module.stride)
        dilation = tuple(module.dilation)

        def conv_forward(x: Tensor) -> Tensor:
            return FeedbackConv2dFunction.apply(
                x, module.weight, module.bias, feedback, stride, padding, dilation, module.groups
            )

        return conv_forward

    def linear_forward(x: Tensor) -> Tensor:
        return FeedbackLinearFunction.apply(x, module.weight, module.bias, feedback)

    return linear_forward


_NO_INSTANCE_FORWARD = object()


@contextmanager
def feedback_routed(modules: Sequence[nn.Module], feedback: Sequence[Tensor]) -> Iterator[None]:
    """Within the block, each module sends its input gradient through its feedback tensor.

    The swap is on the module instances only (their class and other instances are untouched)
    and is undone on exit, also when the block raises.  Graphs built inside keep the feedback
    they were built with, so ``backward`` may be called after the block.
    """
    if len(modules) != len(feedback):
        raise ValueError(f"{len(modules)} modules but {len(feedback)} feedback tensors")
    swapped: list[tuple[nn.Module, Any]] = []
    try:
        for module, matrix in zip(modules, feedback, strict=True):
            if matrix.shape != module.weight.shape:
                raise ValueError(
                    f"feedback of shape {tuple(matrix.shape)} for a weight of shape "
                    f"{tuple(module.weight.shape)}"
                )
            routed = _routed_forward(module, matrix)
            swapped.append((module, module.__dict__.get("forward", _NO_INSTANCE_FORWARD)))
            module.forward = routed  # type: ignore[method-assign]
        yield
    finally:
        for module, previous in reversed(swapped):
            if previous is _NO_INSTANCE_FORWARD:
                del module.forward
            else:
                module.forward = previous  # type: ignore[method-assign]


def feedback_targets(model: nn.Module, method_name: str = "layerwise feedback") -> list[nn.Module]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` of ``model`` in registration order (input first).

    Raises :class:`MethodError` when the model holds a weight layer whose input gradient cannot
    be re-routed (see the module docstring), since the rule would then silently be part BP.
    """
    for name, module in model.named_modules():
        if isinstance(module, UNSUPPORTED_LAYERS):
            reason = (
                "it computes its projections inside F.multi_head_attention_forward, which "
                "cannot be re-routed without editing the model"
                if isinstance(module, nn.MultiheadAttention)
                else "this library re-routes only nn.Linear and nn.Conv2d"
            )
            arch = (getattr(model, "spec", None) or {}).get("arch")
            owner = f"the {arch} model" if arch else f"the {type(model).__name__} model"
            raise MethodError(
                f"method {method_name!r} does not apply to {owner}: it sends each layer's "
                f"input gradient through its own feedback matrix, but "
                f"{name or 'the model'} is a {type(module).__name__}: "
                f"{reason}, so part of the backward pass would silently stay exact "
                "backpropagation. Use an architecture built from Linear/Conv2d layers "
                "(mlp, resmlp, resnet)."
            )
    targets = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not targets:
        raise MethodError(f"method {method_name!r} found no nn.Linear or nn.Conv2d in the model")
    return targets


def fan_out(weight: Tensor) -> int:
    """Number of terms each input-gradient entry sums over: ``d_out`` (times kernel area)."""
    return int(weight.shape[0] * math.prod(weight.shape[2:]))


def default_gain(model: nn.Module) -> float:
    """sqrt(2) for ReLU networks (mlp with activation='relu', resnet), 1 otherwise (the seeds)."""
    spec = getattr(model, "spec", {}) or {}
    relu = spec.get("kwargs", {}).get("activation") == "relu" or spec.get("arch") == "resnet"
    return math.sqrt(2.0) if relu else 1.0


def feedback_alignment(feedback: Tensor, weight: Tensor) -> float:
    """``||B - W|| / ||W||`` (Frobenius) with B stored like W: 0 means backpropagation."""
    diff = (feedback.detach().double() - weight.detach().double()).norm()
    return float(diff / weight.detach().double().norm().clamp_min(1e-300))


# -- the method base ---------------------------------------------------------------------------
class LayerwiseFeedbackMethod(Method):
    """Train every weight layer by the mean cross-entropy, backward re-routed through B.

    Subclasses say what B is (``current_feedback``), how it changes between steps
    (``prepare_step``, ``after_backward``) and what they store (``stored`` under
    ``state_prefix``).  The base stores one random B per target layer, drawn as the seeds'
    ``init_mats``: normal with std ``gain / sqrt(fan_out)``, fan_out = ``d_out`` (times the
    kernel area for convolutions), so the backward pass keeps the forward initialisation's scale.
    """

    name = "layerwise"
    state_prefix = "feedback"

    def __init__(self, *, gain: float | None = None) -> None:
        if gain is not None and not (isinstance(gain, int | float) and gain > 0):
            raise MethodError(f"option gain must be a positive number, got {gain!r}")
        super().__init__(gain=gain)
        self.targets: list[nn.Module] = []
        self.feedback: list[Tensor] = []
        self.gain = 1.0

    # -- life cycle ----------------------------------------------------------------------
    def init_state(self, generator: torch.Generator) -> None:
        assert self.model is not None
        self.targets = feedback_targets(self.model, self.name)
        gain = self.options.get("gain")
        self.gain = float(gain) if gain is not None else default_gain(self.model)
        self.feedback = [self.draw_state(m.weight, generator) for m in self.targets]

    def draw_state(self, weight: Tensor, generator: torch.Generator) -> Tensor:
        """A fresh draw of one layer's stored state (here: a random B)."""
        return self.draw_random(weight, generator)

    def draw_random(self, weight: Tensor, generator: torch.Generator) -> Tensor:
        """A normal tensor shaped like ``weight``, std ``gain / sqrt(fan_out)``, on its device."""
        std = self.gain / math.sqrt(fan_out(weight))
        draw = torch.randn(weight.shape, generator=generator, device=generator.device)
        return (draw * std).to(device=weight.device, dtype=weight.dtype)

    def weights(self) -> list[Tensor]:
        return [m.weight for m in self.targets]

    # -- what B is -----------------------------------------------------------------------
    def current_feedback(self) -> list[Tensor]:
        """The feedback the next forward pass uses (no side effects)."""
        return self.feedback

    def stored(self) -> list[Tensor]:
        """The tensors that define the rule's state (saved as ``<state_prefix>.<i>``)."""
        return self.feedback

    def prepare_step(self) -> None:
        """Called before each training step's forward pass (e.g. to redraw magnitudes)."""

    def after_backward(self) -> dict[str, float]:
        """Called after backward, before the optimizer step; may return extra figures."""
        return {}

    @contextmanager
    def routed(self) -> Iterator[None]:
        with torch.no_grad():
            feedback = [b.detach() for b in self.current_feedback()]
        with feedback_routed(self.targets, feedback):
            yield

    # -- the rule ------------------------------------------------------------------------
    def step(self, x: Tensor, y: Tensor) -> Figures:
        assert self.anatomy is not None and self.optimizer is not None
        self.prepare_step()
        with self.routed():
            logits = self.anatomy.logits(x)
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        figures = self.after_backward()
        self.optimizer.step()
        return {"loss": loss.detach(), **figures}

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """Each sample's own loss gradient at every hidden state, through this rule's backward."""
        assert self.model is not None and self.anatomy is not None
        with eval_mode(self.model), self.routed():
            _, grads, _ = per_sample_gradients(self.anatomy, x, y)
        return grads

    def alignment(self) -> list[float]:
        """Per target layer, ``||B - W|| / ||W||`` (see :func:`feedback_alignment`)."""
        return [
            feedback_alignment(b, w)
            for b, w in zip(self.current_feedback(), self.weights(), strict=True)
        ]

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        """Fresh random state from the initial distribution (in place: optimizers keep track)."""
        if not self.stored():
            return False
        with torch.no_grad():
            for b, w in zip(self.stored(), self.weights(), strict=True):
                b.copy_(self.draw_state(w, generator))
        return True

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return {f"{self.state_prefix}.{i}": b.detach().clone() for i, b in enumerate(self.stored())}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        stored = self.stored()
        expected = [f"{self.state_prefix}.{i}" for i in range(len(stored))]
        missing = [k for k in expected if k not in state]
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise MethodError(
                f"method {self.name!r} state does not fit this model: missing keys "
                f"{missing or 'none'}, unexpected keys {unexpected or 'none'} (expected "
                f"{len(expected)} entries {self.state_prefix}.0..{len(expected) - 1})"
            )
        for key, b in zip(expected, stored, strict=True):
            if tuple(state[key].shape) != tuple(b.shape):
                raise MethodError(
                    f"method {self.name!r} state {key!r} has shape {tuple(state[key].shape)}, "
                    f"but this model's layer needs {tuple(b.shape)}"
                )
        with torch.no_grad():  # in place: an optimizer may hold these tensors (Kolen-Pollack)
            for key, b in zip(expected, stored, strict=True):
                b.copy_(state[key])


class ClassicFA(LayerwiseFeedbackMethod):
    """Classic feedback alignment: fixed random B per weight layer (``grad_x = grad_y @ B``).

    Not registered on its own: the registered ``fa`` uses it for non-residual models (``mlp``).
    B ~ N(0, (gain / sqrt(d_out))^2), stored like W; option ``gain`` (default: sqrt(2) for ReLU
    networks, else 1).  B never changes during training.
    """

    name = "fa"
