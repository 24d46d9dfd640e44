"""Direct feedback alignment (``dfa``) and its kin, sign-DFA (``sdfa``) and DRTP (``drtp``).

Rule.  ``e = softmax(logits) - onehot(y)``; block ``l`` learns from ``a_{l+1} = e @ B_l^T`` and
the embedding from ``a_0 = e @ B_0^T`` (block 0's matrix, as the seeds), each through the
RMS-normalised local loss of :mod:`fa_checks.methods.local`.  ``B_l`` is fixed, shape ``(d, C)``,
drawn once with std ``1/sqrt(C)``.  ``sdfa`` projects ``sign(e)``; ``drtp`` (direct random target
projection, Frenkel et al. 2021) projects the target ``-onehot(y)`` instead of the error.

Options: ``penalty`` (lambda on ``||f_l||^2``) and ``clip`` (per-block gradient norm).  For hidden
states with positions (vit tokens, resnet maps) the per-feature signal is the same at every
position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MethodError, register
from .local import RMS_EPS, LocalLossMethod, output_error
from .low_rank import Factors


@register
class DFA(LocalLossMethod):
    name = "dfa"

    def error_signal(self, logits: Tensor, y: Tensor) -> Tensor:
        """The ``(N, C)`` signal the feedback matrices project."""
        return output_error(logits, y)

    def feedback_specs(self) -> list[tuple[tuple[int, ...], float]]:
        assert self.anatomy is not None
        num_blocks = self.anatomy.num_blocks
        if num_blocks == 0:
            raise MethodError(
                f"method {self.name!r} trains blocks, and this model has none (use 'shallow')"
            )
        dims = self.feature_dims()
        if dims[0] != dims[1]:
            raise MethodError(
                f"method {self.name!r} trains the embedding with block 0's feedback, so h_0 and "
                f"h_1 need the same feature size; this model has {dims[0]} and {dims[1]}"
            )
        classes = self.num_classes
        return [((dims[l + 1], classes), 1.0 / math.sqrt(classes)) for l in range(num_blocks)]

    def local_credit(self, hidden: list[Tensor], logits: Tensor, y: Tensor) -> list[Tensor]:
        assert self.anatomy is not None
        signal = self.error_signal(logits.detach(), y)
        projected = [signal @ b.T for b in self.feedback]
        broadcast = self.anatomy.broadcast
        block_credit = [broadcast(a, h) for a, h in zip(projected, hidden[1:], strict=True)]
        return [broadcast(projected[0], hidden[0]), *block_credit]

    def _flat(self, hidden: list[Tensor]) -> bool:
        """Whether every hidden state is (N, d) and all feedback matrices share one d."""
        return (self.anatomy is not None and self.anatomy.feature_axis in (-1, 1)
                and all(h.dim() == 2 for h in hidden)
                and len({b.shape[0] for b in self.feedback}) == 1)

    def local_gradients(
        self, hidden: list[Tensor], logits: Tensor, y: Tensor, branches: list[Tensor]
    ) -> list[Tensor]:
        """The step's gradients with one RMS normalisation of all L signals instead of L: a
        step spends less on small operations (on a GPU, fewer launches).  Each projection
        ``e @ B_l^T`` stays its own product (one product with every B stacked rounds
        differently at batch sizes 1-3), so the bits are the per-block form's (tested); that
        form remains for hidden states with positions and for subclasses with their own credit.
        """
        if type(self).local_credit is not DFA.local_credit or not self._flat(hidden):
            return super().local_gradients(hidden, logits, y, branches)
        with torch.no_grad():
            signal = self.error_signal(logits.detach(), y)
            a = torch.stack([signal @ b.T for b in self.feedback], dim=1)  # (N, L, d)
            rms = (a**2).mean(dim=-1, keepdim=True).sqrt() + RMS_EPS  # as rms_normalise
            # in place: a CPU pays for every fresh buffer of this size (page faults)
            scaled = a.div_(rms).mul_(self._inverse_batch(a, signal.shape[0]))
            per_block = list(scaled.unbind(1))
            return self._add_penalty([per_block[0], *per_block], branches)

    def can_factor(self) -> bool:
        # the penalty's gradient 2 lam f / N has full rank; a subclass's own credit (or its
        # own gradients) the factors would not follow
        cls = type(self)
        return (not self.penalty and cls.local_credit is DFA.local_credit
                and cls.local_gradients is DFA.local_gradients)

    def factored_gradients(
        self, hidden: list[Tensor], logits: Tensor, y: Tensor, branches: list[Tensor]
    ) -> tuple[list[Tensor | None], list[Factors | None]]:
        """Every ``g_l = (e / rms_l / N) @ B_l^T`` in its factors only (rank at most C).

        ``rms_l`` comes from ``B_l``'s Gram matrix, ``rms_l^2 = e^T (B_l^T B_l / d) e``, in
        float64 (exact to float32 rounding for any B, also a rank-deficient one), so no
        (N, d) projection is written out; the step multiplies the factors out only where a
        block's output is not a Linear's.
        """
        if not (self.can_factor() and self._flat(hidden)):
            return super().factored_gradients(hidden, logits, y, branches)
        with torch.no_grad():
            signal = self.error_signal(logits.detach(), y)
            wide = signal.double()
            # (L, N): each sample's mean square of e @ B_l^T; then 1 / (N (rms + 1e-6))
            mean_square = ((wide @ self._feedback_gram()) * wide).sum(-1)
            scales = mean_square.clamp_min_(0).sqrt_().add_(RMS_EPS).mul_(signal.shape[0])
            scales = scales.reciprocal_().to(signal.dtype)
            left = (signal * scales.unsqueeze(-1)).unbind(0)  # L of (N, C): few operations,
            # since a step pays for each small one far more than its arithmetic
        factors: list[Factors | None] = list(zip(left, self.feedback, strict=True))
        return [None] * (len(factors) + 1), [factors[0], *factors]

    def _feedback_gram(self) -> Tensor:
        """``B_l^T B_l / d`` for every l, (L, C, C) in float64, kept while the matrices are the same
        tensors with the same contents (a redraw or a load gives new tensors; an in-place
        edit bumps a tensor's version)."""
        key = [(b, b._version) for b in self.feedback]  # holds the tensors: no id is reused
        cached = getattr(self, "_gram", None)
        if cached is None or len(cached[0]) != len(key) or any(
                a is not b or va != vb for (a, va), (b, vb) in zip(cached[0], key, strict=True)):
            gram = torch.stack([b.T.double() @ b.double() for b in self.feedback]) / len(
                self.feedback[0])
            cached = self._gram = (key, gram)
        return cached[1]


@register
class SignDFA(DFA):
    name = "sdfa"

    def error_signal(self, logits: Tensor, y: Tensor) -> Tensor:
        return output_error(logits, y).sign()


@register
class DRTP(DFA):
    name = "drtp"

    def error_signal(self, logits: Tensor, y: Tensor) -> Tensor:
        return -F.one_hot(y, logits.shape[-1]).to(logits.dtype)
