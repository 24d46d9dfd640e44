"""Reciprocal alignment on the plain MLP: W trained by feedback alignment through B, B trained too.

Rule (the research code's ``ra_mlp.py``; weights ``W_0..W_{D-1}``, B stored like W, activations
``a_0 = x``, ``a_1 .. a_{D-1}`` the hidden states, ``a_D`` the logits, all from one forward pass):

* W: mean cross-entropy, backward re-routed through B (:mod:`fa_checks.methods.feedback`), by the
  trainer's optimizer.  Unlike the research code, the backward between layers is exact, so the
  LayerNorm derivative is included (the research code dropped it).
* B: plain SGD with rate ``lr_b`` (default 0.05, the research code's rate), on the gradient
  ``(1 - lam) * G_rev + lam * G_recon`` computed from the same forward pass and the weights
  before this step's update:

  - ``G_recon`` (layer-local reconstruction), per layer: the gradient of
    ``0.5 * mean_n ||a_{l+1} B_l - a_l||^2``, that is ``a_{l+1}^T r / N`` with
    ``r = a_{l+1} B_l - a_l`` (the research code's ``b_grads_recon``).
  - ``G_rev`` (reverse task): a top-down pathway ``b_D = a_D``, ``b_l = LN(b_{l+1} B_l)``
    (no LayerNorm on ``b_0``; none at all when the model has none) reconstructs the input; B
    learns ``0.5 * mean_n ||b_0 - x||^2`` by feedback alignment with W as the reverse pathway's
    feedback (the research code's ``b_grads_rev``).  Again the LayerNorm derivative is exact
    here, where the research code dropped it; ``rev_loss`` is reported as it logged it
    (``mean_n ||b_0 - x||^2``).

``ra_rev`` is lam = 0, ``ra_recon`` lam = 1, ``ra_comb`` takes ``lam`` (default 0.5).  ``step``
returns the loss, ``rev_loss`` / ``recon_loss`` and the per-layer alignment ``||B_l - W_l|| /
||W_l||`` after the update as ``alignment_<l>``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Figures, MethodError, register
from .feedback import FeedbackLinearFunction, LayerwiseFeedbackMethod


def reconstruction_gradients(
    acts: list[Tensor], feedback: list[Tensor]
) -> tuple[list[Tensor], float]:
    """Per layer ``a_{l+1}^T (a_{l+1} B_l - a_l) / N`` and the summed ``mean_n ||r_n||^2``."""
    n = acts[0].shape[0]
    grads, total = [], 0.0
    for l, b in enumerate(feedback):
        upper, lower = acts[l + 1], acts[l]
        residual = upper @ b - lower
        grads.append(upper.T @ residual / n)
        total += float(residual.pow(2).sum(-1).mean())
    return grads, total


def reverse_gradients(
    acts: list[Tensor], weights: list[Tensor], feedback: list[Tensor], layer_norm: bool
) -> tuple[list[Tensor], float]:
    """Gradients of the reverse task for every B (feedback alignment through W), and its loss."""
    leaves = [b.detach().requires_grad_(True) for b in feedback]
    with torch.enable_grad():
        signal = acts[-1].detach()
        for l in reversed(range(len(leaves))):
            # b_l = b_{l+1} B_l: a linear layer with weight B_l^T, whose transpose-feedback is W_l^T
            signal = FeedbackLinearFunction.apply(signal, leaves[l].T, None, weights[l].detach().T)
            if layer_norm and l > 0:
                signal = F.layer_norm(signal, signal.shape[-1:])
        error = (signal - acts[0]).pow(2).sum(-1).mean()
        grads = torch.autograd.grad(0.5 * error, leaves)
    return list(grads), float(error.detach())


class ReciprocalAlignment(LayerwiseFeedbackMethod):
    """W by feedback alignment through B; B by the reverse task and/or local reconstruction."""

    name = "ra"
    architectures = ("mlp",)
    lam = 0.5
    uses_reverse = True
    uses_reconstruction = True

    def __init__(self, *, lr_b: float = 0.05, gain: float | None = None) -> None:
        if not (isinstance(lr_b, int | float) and lr_b >= 0):
            raise MethodError(f"option lr_b must be a non-negative number, got {lr_b!r}")
        super().__init__(gain=gain)
        self.options["lr_b"] = self.lr_b = float(lr_b)

    def step(self, x: Tensor, y: Tensor) -> Figures:
        assert self.anatomy is not None and self.optimizer is not None
        with self.routed():
            hidden = self.anatomy.hidden_states(x)
            logits = self.anatomy.readout(hidden[-1])
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        acts = [x.reshape(x.shape[0], -1), *(h.detach() for h in hidden), logits.detach()]
        with torch.no_grad():
            grads, figures = self.feedback_gradients(acts)
        self.optimizer.step()
        with torch.no_grad():
            for b, g in zip(self.feedback, grads, strict=True):
                b.sub_(self.lr_b * g)
        alignment = {f"alignment_{l}": a for l, a in enumerate(self.alignment())}
        return {"loss": float(loss.detach()), **figures, **alignment}

    def feedback_gradients(self, acts: list[Tensor]) -> tuple[list[Tensor], dict[str, float]]:
        """The B gradient ``(1 - lam) G_rev + lam G_recon`` and the task losses."""
        figures: dict[str, float] = {}
        rev = recon = None
        if self.uses_reverse:
            weights = [w.detach() for w in self.weights()]
            rev, figures["rev_loss"] = reverse_gradients(
                acts, weights, self.feedback, self.model_layer_norm()
            )
        if self.uses_reconstruction:
            recon, figures["recon_loss"] = reconstruction_gradients(acts, self.feedback)
        if rev is None:
            return recon, figures  # type: ignore[return-value]
        if recon is None:
            return rev, figures
        return [(1 - self.lam) * r + self.lam * c for r, c in zip(rev, recon, strict=True)], figures

    def model_layer_norm(self) -> bool:
        return bool(self.model.first.layer_norm)  # type: ignore[union-attr]


@register
class ReverseAlignment(ReciprocalAlignment):
    """ra_rev: B learns the reverse task (lam = 0)."""

    name = "ra_rev"
    lam = 0.0
    uses_reconstruction = False


@register
class ReconstructionAlignment(ReciprocalAlignment):
    """ra_recon: B learns layer-local reconstruction (lam = 1)."""

    name = "ra_recon"
    lam = 1.0
    uses_reverse = False


@register
class CombinedAlignment(ReciprocalAlignment):
    """ra_comb: B learns ``(1 - lam) * reverse + lam * reconstruction``, ``lam`` in [0, 1].

    Both parts are always computed (and both losses reported), also at lam 0 or 1.
    """

    name = "ra_comb"

    def __init__(self, *, lam: float = 0.5, lr_b: float = 0.05, gain: float | None = None) -> None:
        if not (isinstance(lam, int | float) and 0.0 <= lam <= 1.0):
            raise MethodError(f"option lam of ra_comb must be a number in [0, 1], got {lam!r}")
        super().__init__(lr_b=lr_b, gain=gain)
        self.options["lam"] = self.lam = float(lam)
