"""The learned credit network V of the ``vec`` rule and V's training loss (see :mod:`.vector`).

``V(h, t, e)`` reads a LayerNorm of the hidden state, a sinusoidal embedding of the depth
``t = l/L`` and the output error ``e``; it learns from each sample's own gradient at ``h_L`` and
from central-difference directional derivatives at one random block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models.anatomy import Anatomy, per_sample_loss
from .local import rms_normalise

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
        """PyTorch's default Linear initialisation ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, drawn
        from ``generator`` on its own device (so a seed gives the same V on any device)."""
        for module in self.net:
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                for tensor in (module.weight, module.bias):
                    draw = torch.rand(tensor.shape, generator=generator, device=generator.device)
                    tensor.copy_(draw * (2 * bound) - bound)


def blend_credit(vec: Tensor, dfa: Tensor, alpha: float) -> Tensor:
    """``alpha vec/rms(vec) + (1 - alpha) dfa/rms(dfa)``, the seeds' hybrid credit."""
    return alpha * rms_normalise(vec) + (1.0 - alpha) * rms_normalise(dfa)


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
