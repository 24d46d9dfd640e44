"""Local-loss training: one forward pass, one backward pass, one optimizer step.

Rule.  Given a credit signal ``a_l`` for every hidden state (a subclass's ``local_credit``), block
``l`` is trained on the batch-mean local loss

    loss_l = mean_n [ <f_l(h_l.detach()), a_{l+1} / rms(a_{l+1})> + penalty * ||f_l(h_l)||^2 ]

the embedding on ``mean_n <h_0, a_0 / rms(a_0)>`` and the readout on the mean cross-entropy of
``readout(h_L.detach())``.  ``rms`` is taken over the feature axis (per position) plus 1e-6, as
the seeds do.

Why one backward pass is enough: the local losses share no parameters and each block's input is
detached, so the gradient of ``loss_l`` with respect to ``f_l`` is simply

    g_{l+1} = a_{l+1} / rms(a_{l+1}) / N + 2 * penalty * f_l / N

and ``torch.autograd.backward([head_loss, f_0..f_{L-1}, h_0], [None, g_1..g_L, g_0])`` fills every
parameter's gradient exactly as the seeds' loop of L+2 separate backward passes did.  AdamW
updates each parameter on its own, so one optimizer over all groups takes the same step as the
seeds' separate head, block and embedding optimizers (tested to float32 rounding).

Low rank: a rule whose ``g_l`` has low rank (DFA's ``diag(s) E B_l^T``, rank <= C) says so with
``can_factor`` and gives ``factored_gradients``; where a block's output is a Linear layer's, the
step then takes that layer's backward in the factors (:mod:`fa_checks.methods.low_rank`), the
same gradients to float rounding for a ninth of the layer's backward arithmetic.
``low_rank = False`` keeps the dense arithmetic of the seeds' loop, to the bit.

Conventions where hidden states have positions (vit tokens, resnet maps): ``<f, a>`` and
``||f||^2`` sum over every non-batch axis, positions included (the seeds averaged over positions
for convolutional maps; under Adam this constant factor per block only meets the optimizer's
epsilon), and a per-feature signal ``(N, d)`` is spread over positions with
``Anatomy.broadcast``.

Subclasses implement ``local_credit`` and may declare fixed random feedback matrices with
``feedback_specs``; this class draws them, saves them as ``{"feedback.<i>": B_i}`` and redraws
them for the fresh-feedback null.  A subclass with more options than ``penalty`` and ``clip``
defines its own ``__init__`` with explicit keywords, calls ``super().__init__(penalty=...,
clip=...)`` and adds its options to ``self.options`` (so unknown options stay an error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.anatomy import eval_mode
from .base import Figures, Method, MethodError
from .contract import fit_signals
from .low_rank import Factors, fits, linear_backward_in_factors, linear_producing, written_out

RMS_EPS = 1e-6
FEEDBACK_PREFIX = "feedback."


# -- helpers shared by local-loss rules -----------------------------------------------------
def output_error(logits: Tensor, y: Tensor) -> Tensor:
    """``softmax(logits) - onehot(y)``: each sample's cross-entropy gradient at the logits."""
    probs = torch.softmax(logits, dim=-1)
    return probs - F.one_hot(y, probs.shape[-1]).to(probs.dtype)


def rms_normalise(a: Tensor, feature_axis: int = -1) -> Tensor:
    """``a / (rms(a) + 1e-6)`` with the rms over the feature axis (per sample and position)."""
    rms = (a**2).mean(dim=feature_axis, keepdim=True).sqrt() + RMS_EPS
    return a / rms


def along_features(a: Tensor, matrix: Tensor, feature_axis: int = -1) -> Tensor:
    """``a @ matrix`` along ``feature_axis`` (``a``'s features contract ``matrix``'s rows)."""
    axis = feature_axis % a.dim()
    if axis == a.dim() - 1:
        return a @ matrix
    return (a.movedim(axis, -1) @ matrix).movedim(-1, axis)


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float (numbers and numeric strings, as a command line gives them);
    None for booleans, non-numbers, NaN and infinities."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_state_tensor(method: str, key: str, value: Any, current: Tensor) -> Tensor:
    """``value`` if it is a tensor shaped like ``current``, else a MethodError naming ``key``."""
    if not isinstance(value, Tensor) or tuple(value.shape) != tuple(current.shape):
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise MethodError(
            f"method {method!r} state {key} must have shape {tuple(current.shape)} for this "
            f"model, got {got}"
        )
    return value


def _number(method: str, option: str, value: Any, *, allow_none: bool, minimum: float) -> Any:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if allow_none:
            return None
        raise MethodError(f"method {method!r} option {option} needs a number, got None")
    number = finite_number(value)
    if number is None:
        raise MethodError(
            f"method {method!r} option {option} must be a number (finite), got {value!r}"
        )
    if number < minimum or (allow_none and number == 0):
        bound = "> 0" if allow_none else f">= {minimum:g}"
        raise MethodError(f"method {method!r} option {option} must be {bound}, got {value!r}")
    return number


@dataclass(frozen=True)
class LocalForward:
    """One forward pass of the fused step: the graphs the backward pass starts from."""

    h0: Tensor  # the embedding's output, with its graph
    inputs: list[Tensor]  # [h_0..h_L], detached: each block's input
    branches: list[Tensor]  # [f_0..f_{L-1}], each with its block's graph
    logits: Tensor
    head_loss: Tensor


class LocalLossMethod(Method):
    """Base of rules that train each block on a local loss from a credit signal (DFA, FA, vec).

    Options: ``penalty`` (lambda on ``||f_l||^2``, default 0) and ``clip`` (max gradient norm of
    each block's parameters, default None: no clipping).
    """

    name = "local"
    #: take a low-rank gradient through a Linear in its factors (:mod:`.low_rank`); False keeps
    #: autograd's dense arithmetic, e.g. to match another implementation to the bit
    low_rank: bool = True

    def __init__(self, penalty: float = 0.0, clip: float | None = None) -> None:
        penalty = _number(self.name, "penalty", penalty, allow_none=False, minimum=0.0)
        clip = _number(self.name, "clip", clip, allow_none=True, minimum=0.0)
        super().__init__(penalty=penalty, clip=clip)
        self.feedback: list[Tensor] = []
        self._feedback_specs: list[tuple[tuple[int, ...], float]] = []

    @property
    def penalty(self) -> float:
        return float(self.options["penalty"])

    @property
    def clip(self) -> float | None:
        return self.options["clip"]

    # -- the hook ------------------------------------------------------------------------------
    def local_credit(self, hidden: list[Tensor], logits: Tensor, y: Tensor) -> list[Tensor]:
        """[a_0..a_L] for this batch from the detached hidden states and logits (may use
        autograd internally, e.g. FA's head gradient)."""
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called after the backward pass (and clipping), before ``optimizer.step()``."""

    # -- the fused step --------------------------------------------------------------------------
    def step(self, x: Tensor, y: Tensor) -> Figures:
        anatomy, optimizer = self._attached()
        optimizer.zero_grad(set_to_none=True)
        forward = self.local_forward(x, y)
        grads, factors = self.step_gradients(forward, y)
        roots = self.backward_roots(forward, grads, factors)
        if roots:
            torch.autograd.backward([out for out, _ in roots], [grad for _, grad in roots])
        if self.clip is not None:
            for l in range(anatomy.num_blocks):
                params = [p for p in anatomy.block_parameters(l) if p.grad is not None]
                if params:
                    torch.nn.utils.clip_grad_norm_(params, self.clip)
        self.after_backward()
        optimizer.step()
        return {"loss": forward.head_loss.detach()}

    # the step's stages, public so a benchmark can time each of them as the step runs them
    def local_forward(self, x: Tensor, y: Tensor) -> LocalForward:
        """The forward pass with every block's input detached (and the readout's)."""
        anatomy, _ = self._attached(optimizer=False)
        h0 = anatomy.embed(x)  # keeps its graph to the embedding parameters
        inputs = [h0.detach()]
        branches: list[Tensor] = []
        for l in range(anatomy.num_blocks):
            f, h_next = anatomy.branch_and_step(l, inputs[-1])
            branches.append(f)
            inputs.append(h_next.detach())
        logits = anatomy.readout(inputs[-1])
        return LocalForward(h0, inputs, branches, logits, F.cross_entropy(logits, y))

    def step_gradients(self, forward: LocalForward, y: Tensor
                       ) -> tuple[list[Tensor | None], list[Factors | None]]:
        """``[g_0..g_L]`` for this pass, in factors where the rule gives them."""
        hidden, logits = forward.inputs, forward.logits.detach()
        if self.low_rank and self.can_factor():
            return self.factored_gradients(hidden, logits, y, forward.branches)
        grads = self.local_gradients(hidden, logits, y, forward.branches)
        return list(grads), [None] * len(grads)

    @staticmethod
    def backward_roots(forward: LocalForward, grads: list[Tensor | None],
                       factors: list[Factors | None]) -> list[tuple[Tensor, Tensor | None]]:
        """``(output, gradient)`` pairs for one ``autograd.backward``: the head's loss, each
        block's output and h_0; where a gradient in factors meets a Linear, that layer's
        backward is done here and its input becomes the root (:mod:`.low_rank`)."""
        outputs = [forward.head_loss, *forward.branches, forward.h0]
        out_grads = [None, *grads[1:], grads[0]]
        out_factors = [None, *factors[1:], factors[0]]
        roots: list[tuple[Tensor, Tensor | None]] = []
        for out, grad, factor in zip(outputs, out_grads, out_factors, strict=True):
            if not out.requires_grad:  # frozen parts have no graph
                continue
            call = linear_producing(out) if fits(factor, out) else None
            if call is not None:
                assert factor is not None
                out, grad = call.input, linear_backward_in_factors(call, factor)
                if grad is None:
                    continue
            elif grad is None and factor is not None:  # (the head's loss has no grad given)
                grad = written_out(factor)
            roots.append((out, grad))
        return roots

    def can_factor(self) -> bool:
        """Whether ``factored_gradients`` gives factors (a rule with low-rank credit says so)."""
        return False

    def factored_gradients(
        self, hidden: list[Tensor], logits: Tensor, y: Tensor, branches: list[Tensor]
    ) -> tuple[list[Tensor | None], list[Factors | None]]:
        """``[g_0..g_L]`` as ``local_gradients`` gives them, and for each ``g_l`` of low rank its
        factors ``(left, right)``, ``g_l = left @ right.T``; a gradient given in factors may be
        None in the first list (the step multiplies it out where it needs it)."""
        grads = self.local_gradients(hidden, logits, y, branches)
        return grads, [None] * len(grads)

    def local_gradients(
        self, hidden: list[Tensor], logits: Tensor, y: Tensor, branches: list[Tensor]
    ) -> list[Tensor]:
        """``[g_0..g_L]``: the gradient of each batch-mean local loss at h_0 and at each f_l,
        from ``local_credit``.  A rule that can produce them with less work (DFA: one
        projection and one normalisation for every block) overrides this, to the same bits."""
        # checked, and per-sample (N, d) signals spread over positions (the contract)
        credits = fit_signals(self, self.local_credit(hidden, logits, y), hidden,
                              hook="local_credit")
        with torch.no_grad():
            axis = self.anatomy.feature_axis if self.anatomy is not None else -1
            inverse = self._inverse_batch(credits[0], hidden[0].shape[0])
            normalised: dict[int, Tensor] = {}  # DFA gives h_0 and block 0 the same tensor
            grads = []
            for a in credits:
                key = id(a)
                if key not in normalised:
                    normalised[key] = rms_normalise(a.detach(), axis) * inverse
                grads.append(normalised[key])
            return self._add_penalty(grads, branches)

    @staticmethod
    def _inverse_batch(like: Tensor, batch: int) -> Tensor:
        # 1/N rounded as autograd rounds it for the seeds' batch-mean losses
        # (``mean(<f, a>) + lam * mean(||f||^2)``), so the dense step matches their loop to the bit
        return torch.ones((), dtype=like.dtype, device=like.device) / batch

    def _add_penalty(self, grads: list[Tensor], branches: list[Tensor]) -> list[Tensor]:
        """``grads`` with the penalty's gradient ``2 lam f_l / N`` added to each block's."""
        if not self.penalty or not branches:
            return grads
        like = {"dtype": grads[0].dtype, "device": grads[0].device}
        scale = torch.full((), self.penalty, **like) / branches[0].shape[0]
        for l, f in enumerate(branches):
            grads[l + 1] = grads[l + 1] + scale * (2 * f.detach())
        return grads

    # -- credit --------------------------------------------------------------------------------
    def credit(self, x: Tensor, y: Tensor) -> list[Tensor]:
        """The signal each hidden state gets, from an eval-mode forward pass."""
        anatomy, _ = self._attached()
        with eval_mode(anatomy.model):
            with torch.no_grad():
                hidden = anatomy.hidden_states(x)
                logits = anatomy.readout(hidden[-1])
            credits = fit_signals(self, self.local_credit(hidden, logits, y), hidden, anatomy,
                                  hook="local_credit")
        return [a.detach().contiguous() for a in credits]

    # -- fixed random feedback -----------------------------------------------------------------
    def feedback_specs(self) -> list[tuple[tuple[int, ...], float]]:
        """``(shape, std)`` of each fixed random feedback matrix; none by default."""
        return []

    def init_state(self, generator: torch.Generator) -> None:
        """Draw the feedback ``feedback_specs`` declares into ``self.feedback``."""
        self._feedback_specs = self.feedback_specs()
        self.feedback = self.draw_feedback(generator)

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        """Replace ``self.feedback`` by a fresh draw (the fresh-feedback null; a rule that
        redraws its feedback every epoch calls it from ``epoch_start``); False if none."""
        if not self._feedback_specs:
            return False
        self.feedback = self.draw_feedback(generator)
        return True

    def draw_feedback(self, generator: torch.Generator) -> list[Tensor]:
        """One draw of every matrix ``feedback_specs`` declares: ``randn(shape) * std`` from
        ``generator``, on the model's device and dtype (``self.feedback`` is left as it is)."""
        # Drawn on the generator's device, then moved: a seed gives the same B on any device.
        device, dtype = self.model_device(), self.model_dtype()
        return [
            (torch.randn(shape, generator=generator, device=generator.device) * std).to(
                device=device, dtype=dtype
            )
            for shape, std in self._feedback_specs
        ]

    _draw_feedback = draw_feedback  # the name before it was public

    def state_dict(self) -> dict[str, Tensor]:
        return {f"{FEEDBACK_PREFIX}{i}": b for i, b in enumerate(self.feedback)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = {f"{FEEDBACK_PREFIX}{i}": b for i, b in enumerate(self.feedback)}
        if set(state) != set(expected):
            raise MethodError(
                f"method {self.name!r} state needs keys {sorted(expected) or 'none'}, "
                f"got {sorted(state) or 'none'}"
            )
        loaded = []
        for key, current in expected.items():
            value = check_state_tensor(self.name, key, state[key], current)
            loaded.append(value.detach().to(device=current.device, dtype=current.dtype).clone())
        self.feedback = loaded

    def _attached(self, optimizer: bool = True) -> tuple[Any, torch.optim.Optimizer]:
        if self.anatomy is None or (optimizer and self.optimizer is None):
            raise MethodError(f"method {self.name!r} is not set up: call setup(model, ...) first")
        return self.anatomy, self.optimizer  # type: ignore[return-value]
