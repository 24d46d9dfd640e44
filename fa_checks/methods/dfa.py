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

    def local_gradients(
        self, hidden: list[Tensor], logits: Tensor, y: Tensor, branches: list[Tensor]
    ) -> list[Tensor]:
        """The step's gradients with one RMS normalisation of all L signals instead of L: a
        step spends less on small operations (on a GPU, fewer launches).  Each projection
        ``e @ B_l^T`` stays its own product (one product with every B stacked rounds
        differently at batch sizes 1-3), so the bits are the per-block form's (tested); that
        form remains for hidden states with positions and for subclasses with their own credit.
        """
        flat = all(h.dim() == 2 for h in hidden) and self.anatomy is not None and (
            self.anatomy.feature_axis in (-1, 1))
        sizes = {b.shape[0] for b in self.feedback}
        if type(self).local_credit is not DFA.local_credit or not flat or len(sizes) != 1:
            return super().local_gradients(hidden, logits, y, branches)
        with torch.no_grad():
            signal = self.error_signal(logits.detach(), y)
            a = torch.stack([signal @ b.T for b in self.feedback], dim=1)  # (N, L, d)
            rms = (a**2).mean(dim=-1, keepdim=True).sqrt() + RMS_EPS  # as rms_normalise
            # in place: a CPU pays for every fresh buffer of this size (page faults)
            scaled = a.div_(rms).mul_(self._inverse_batch(a, signal.shape[0]))
            per_block = list(scaled.unbind(1))
            return self._add_penalty([per_block[0], *per_block], branches)


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
