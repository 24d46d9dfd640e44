"""Learned vector credit (``vec``): a small network ``V(h_l, t=l/L, e)`` predicts ``dLoss/dh_l``.

Rule.  ``e = softmax(logits) - onehot(y)``.  ``V`` reads a LayerNorm of the hidden state, a
sinusoidal embedding of the depth ``t = l/L`` and ``e``, and outputs a vector shaped like ``h_l``.
It is trained on every batch (before the model's update, as the seeds do) with

    terminal:  mean_n || V(h_L, 1, e) - dLoss_n/dh_L ||^2         (each sample's own gradient)
    probes:    mean_j mean_n ( <V(h_l, l/L, e), v_j> - D_j )^2    (one random block l < L)
               D_j = (loss_n(h_l + eps v_j) - loss_n(h_l - eps v_j)) / (2 eps),  ||v_j|| = 1

summed, its gradient clipped to norm 1, one Adam step at ``lr_fb``.  The model is then trained on
local losses (:class:`~fa_checks.methods.local.LocalLossMethod`) with a credit chosen by the
schedule: DFA's ``e @ B_l^T``, V's output, or the blend ``alpha V/rms(V) + (1-alpha) D/rms(D)``.

Choices where the seeds are silent or differ from the project's conventions:

* The seeds import ``SinusoidalTimeEmbed`` from a module we do not have.  Ours
  (:class:`SinusoidalTimeEmbedding`) is the transformer/diffusion embedding of dimension 32:
  ``[sin(s t w_k), cos(s t w_k)]`` with ``w_k = 10000^(-k/16)``, ``k = 0..15`` and ``s = 1000``,
  so the depths ``0, 1/L, ..., 1`` land in the same range as diffusion time steps.
* Credit index: fa-checks' convention is that ``a_{l+1}`` trains block ``l`` (its output feeds
  ``h_{l+1}``).  V's credit is therefore ``a_l = V(h_l, l/L, e)`` for ``l = 0..L``: block ``l``
  learns from V's estimate at its output ``h_{l+1}``, and the last block from ``V(h_L, 1, e)``,
  the very output the terminal target trains.  (The seeds gave block ``l`` V's estimate at its
  input ``h_l``.)  The DFA credit follows the seeds: block ``l`` and, for the embedding, block 0's
  matrix.
* The ``2M`` probe evaluations run as one batched forward pass instead of ``2M`` separate ones.
* The random layer and directions come from generators seeded by ``setup``, so training is
  reproducible; the seeds used the global random state.
* ``dfa_then_vec`` starts training V at epoch ``switch_epoch - pretrain_epochs`` (seeds: 5) while
  DFA still trains the model, so V is not untrained when it takes over; ``vec_then_dfa`` stops
  training V after the switch.
* The current epoch is method state (``"schedule.epoch"``), so a loaded checkpoint reports the
  credit it was last trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..anatomy import Anatomy, per_sample_loss
from .base import MethodError

SCHEDULES = ("dfa_only", "vec_only", "vec_then_dfa", "dfa_then_vec", "blend")
SWITCHING_SCHEDULES = ("vec_then_dfa", "dfa_then_vec")
#: added to every RMS before dividing, as in the seeds
RMS_EPS = 1e-6
#: added to a direction's norm before normalising it, as in the seeds
DIRECTION_EPS = 1e-8


class SinusoidalTimeEmbedding(nn.Module):
    """``t (N,) -> [sin(scale t w_k), cos(scale t w_k)] (N, dim)``, ``w_k = 10000^(-2k/dim)``."""

    def __init__(self, dim: int = 32, scale: float = 1000.0, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"time embedding dimension must be even and >= 2, got {dim}")
        half = dim // 2
        frequencies = torch.exp(-math.log(max_period) * torch.arange(half) / half)
        # a buffer, not a parameter: it moves with the module and is not trained or saved
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.dim = dim
        self.scale = float(scale)

    def forward(self, t: Tensor) -> Tensor:
        angles = (self.scale * t.to(self.frequencies.dtype))[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class VectorCreditNet(nn.Module):
    """``V(h, t, e)``: LayerNorm(h), time embedding and error -> ``depth`` GELU layers -> ``d``."""

    def __init__(
        self,
        d_hidden: int,
        num_classes: int,
        *,
        time_dim: int = 32,
        width: int = 256,
        depth: int = 3,
    ) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_hidden)
        self.time_embed = SinusoidalTimeEmbedding(time_dim)
        layers: list[nn.Module] = []
        fan_in = d_hidden + time_dim + num_classes
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.GELU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, d_hidden))
        self.net = nn.Sequential(*layers)

    def forward(self, h: Tensor, t: Tensor, e: Tensor) -> Tensor:
        return self.net(torch.cat([self.ln(h), self.time_embed(t), e], dim=-1))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default Linear initialisation, drawn from ``generator`` (CPU)."""
        for module in self.net:
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                for tensor in (module.weight, module.bias):
                    draw = torch.rand(tensor.shape, generator=generator) * (2 * bound) - bound
                    tensor.copy_(draw)


def output_error(logits: Tensor, y: Tensor) -> Tensor:
    """``e = softmax(logits) - onehot(y)``, detached: each sample's ``dLoss/dlogits``."""
    logits = logits.detach()
    return logits.softmax(dim=-1) - F.one_hot(y, logits.shape[-1]).to(logits.dtype)


def rms_normalised(a: Tensor) -> Tensor:
    """``a / (rms(a) + 1e-6)``, the RMS over features of each sample."""
    return a / (a.pow(2).mean(dim=-1, keepdim=True).sqrt() + RMS_EPS)


def blend_credit(vec: Tensor, dfa: Tensor, alpha: float) -> Tensor:
    """``alpha vec/rms(vec) + (1 - alpha) dfa/rms(dfa)``, the seeds' hybrid credit."""
    return alpha * rms_normalised(vec) + (1.0 - alpha) * rms_normalised(dfa)


def vector_credit(vnet: VectorCreditNet, hidden: list[Tensor], e: Tensor) -> list[Tensor]:
    """``[V(h_0, 0, e), V(h_1, 1/L, e), ..., V(h_L, 1, e)]`` in one batched call."""
    num_states, n = len(hidden), e.shape[0]
    depth = len(hidden) - 1
    h = torch.cat([state.detach() for state in hidden])
    t = torch.arange(num_states, device=h.device, dtype=h.dtype).repeat_interleave(n) / depth
    return list(vnet(h, t, e.repeat(num_states, 1)).split(n))


def random_directions(num: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """``num`` random unit directions per sample, shaped ``(num, *like.shape)``."""
    v = torch.randn((num, *like.shape), generator=generator, device=like.device, dtype=like.dtype)
    return v / (v.norm(dim=-1, keepdim=True) + DIRECTION_EPS)


@torch.no_grad()
def directional_derivatives(
    anatomy: Anatomy, l: int, h: Tensor, y: Tensor, directions: Tensor, eps: float
) -> Tensor:
    """Central differences ``(loss_n(h + eps v) - loss_n(h - eps v)) / 2eps``, shape ``(M, N)``.

    All ``2M`` perturbed copies of the batch go through the network as one batch.
    """
    num, n = directions.shape[0], h.shape[0]
    shifted = torch.cat([h + eps * directions, h - eps * directions]).flatten(0, 1)
    logits = anatomy.forward_from(l, shifted)
    losses = per_sample_loss(logits, y.repeat(2 * num)).view(2, num, n)
    return (losses[0] - losses[1]) / (2 * eps)


def terminal_gradient(anatomy: Anatomy, h_last: Tensor, y: Tensor) -> Tensor:
    """Each sample's own loss gradient at ``h_L`` (gradient of the summed loss), detached."""
    with torch.enable_grad():
        h = h_last.detach().requires_grad_(True)
        loss = per_sample_loss(anatomy.readout(h), y).sum()
        (grad,) = torch.autograd.grad(loss, h)
    return grad


@dataclass(frozen=True)
class VectorLoss:
    """V's training loss on one batch and its two parts (the parts detached)."""

    total: Tensor
    terminal: Tensor
    probes: Tensor
    layer: int


def vector_net_loss(
    vnet: VectorCreditNet,
    anatomy: Anatomy,
    hidden: list[Tensor],
    e: Tensor,
    y: Tensor,
    *,
    layer: int,
    directions: Tensor,
    eps: float,
) -> VectorLoss:
    """The seeds' loss: terminal gradient matching plus directional-derivative matching at
    ``layer`` (``0 <= layer < L``) along ``directions`` ``(M, N, d)``."""
    depth = len(hidden) - 1
    n = e.shape[0]
    h_last = hidden[-1].detach()
    target_last = terminal_gradient(anatomy, h_last, y)
    a_last = vnet(h_last, h_last.new_ones(n), e)
    terminal = (a_last - target_last).pow(2).sum(dim=-1).mean()

    h_l = hidden[layer].detach()
    targets = directional_derivatives(anatomy, layer, h_l, y, directions, eps)
    a_l = vnet(h_l, h_l.new_full((n,), layer / depth), e)
    predicted = (a_l[None] * directions).sum(dim=-1)
    probes = (predicted - targets).pow(2).mean()
    return VectorLoss(terminal + probes, terminal.detach(), probes.detach(), layer)


@dataclass(frozen=True)
class EpochPlan:
    """Which credit an epoch trains the model with, and whether V learns during it."""

    source: str  # "dfa", "vec" or "blend"
    train_vnet: bool


def epoch_plan(
    schedule: str, epoch: int, switch_epoch: int | None = None, pretrain_epochs: int = 5
) -> EpochPlan:
    """The seeds' schedules (``epoch`` 1-based; "then" switches after epoch ``switch_epoch``)."""
    if schedule == "dfa_only":
        return EpochPlan("dfa", False)
    if schedule == "vec_only":
        return EpochPlan("vec", True)
    if schedule == "blend":
        return EpochPlan("blend", True)
    if schedule not in SWITCHING_SCHEDULES or switch_epoch is None:
        raise MethodError(f"unknown schedule {schedule!r} or missing switch_epoch")
    before = epoch <= switch_epoch
    if schedule == "vec_then_dfa":
        return EpochPlan("vec", True) if before else EpochPlan("dfa", False)
    if before:
        return EpochPlan("dfa", epoch >= switch_epoch - pretrain_epochs)
    return EpochPlan("vec", True)
