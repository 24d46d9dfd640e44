"""The one definition of a model as ``embed -> blocks -> readout``.

Every diagnostic, metric and training rule sees a network only through an :class:`Anatomy`::

    h_0     = embed(x)
    h_{l+1} = step(l, h_l)          # skip connection included, for every architecture
    f_l     = branch(l, h_l)        # residual branch: step(l, h) == h + f_l for residual models
    logits  = readout(h_L)

Built-in models implement these methods themselves (their ``forward`` is defined from them, so
the forward pass exists once).  A user's model is accepted when it either provides the methods
(``embed``, ``step``, ``readout`` and ``num_blocks``; ``branch`` optional) or follows the
attribute convention of the original research code: ``embed`` and ``blocks`` modules whose blocks
return the residual branch, an optional ``out_ln`` and an ``out_head``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import UserError

READOUT_MODULE_NAMES = ("out_ln", "out_head")


class AnatomyError(UserError, TypeError):
    """The model cannot be seen as embed -> blocks -> readout."""


def per_sample_norm(t: Tensor) -> Tensor:
    """Euclidean norm of each sample over all non-batch dimensions, shape ``(N,)``."""
    return t.reshape(t.shape[0], -1).norm(dim=1)


class Anatomy:
    """A read-only view of a model through embed / step / branch / readout."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._native = all(
            callable(getattr(model, name, None)) for name in ("embed", "step", "readout")
        ) and isinstance(getattr(model, "num_blocks", None), int)
        if not self._native:
            missing = [
                name
                for name in ("embed", "blocks", "out_head")
                if not isinstance(getattr(model, name, None), nn.Module)
            ]
            if missing or not isinstance(model.blocks, nn.ModuleList):
                raise AnatomyError(
                    f"{type(model).__name__} cannot be read as embed -> blocks -> readout: "
                    f"missing {', '.join(missing) or 'blocks as nn.ModuleList'}. Either give it "
                    "methods embed(x), step(l, h), readout(h) and an int num_blocks, or modules "
                    "named embed, blocks (an nn.ModuleList of residual branches) and out_head "
                    "(optionally out_ln)."
                )

    # -- the four operations -------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        if self._native:
            return int(self.model.num_blocks)
        return len(self.model.blocks)

    @property
    def residual(self) -> bool:
        """Whether ``step(l, h) == h + branch(l, h)``; False for plain stacks."""
        return bool(getattr(self.model, "residual", True))

    @property
    def feature_axis(self) -> int:
        """Axis of a hidden state that holds features (channels for convolutional maps)."""
        return int(getattr(self.model, "feature_axis", -1))

    def embed(self, x: Tensor) -> Tensor:
        return self.model.embed(x)

    def step(self, l: int, h: Tensor) -> Tensor:
        if self._native:
            return self.model.step(l, h)
        return h + self.model.blocks[l](h)

    def branch(self, l: int, h: Tensor) -> Tensor:
        """The block's own contribution f_l(h): what a local loss trains."""
        if self._native:
            own = getattr(self.model, "branch", None)
            if callable(own):
                return own(l, h)
            out = self.model.step(l, h)
            return out - h if self.residual else out
        return self.model.blocks[l](h)

    def branch_and_step(self, l: int, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_l(h), step(l, h))`` from one call of the block, each as the model computes it.

        Where the branch is primary (the model defines it, or the attribute convention) the step
        is ``h + f``; where the block holds its own skip (vit, resnet) the branch is
        ``step - h``.  Either way both values equal the model's own to the last bit.
        """
        own = getattr(type(self.model), "branch", None)
        primary = not self._native or (
            callable(own) and not getattr(own, "derived_from_step", False)
        )
        if primary:
            f = self.branch(l, h)
            return f, (h + f if self.residual else f)
        out = self.step(l, h)
        return (out - h if self.residual else out), out

    def readout(self, h: Tensor) -> Tensor:
        if self._native:
            return self.model.readout(h)
        out_ln = getattr(self.model, "out_ln", None)
        return self.model.out_head(out_ln(h) if out_ln is not None else h)

    # -- derived --------------------------------------------------------------------------
    def hidden_states(self, x: Tensor, *, track_stream: bool = False) -> list[Tensor]:
        """``[h_0, ..., h_L]`` for input ``x``.

        ``track_stream`` makes ``h_0`` require grad even when the embedding is frozen, so
        gradients with respect to the hidden states exist.
        """
        h = self.embed(x)
        if track_stream and not h.requires_grad:
            h = h.detach().requires_grad_()
        hs = [h]
        for l in range(self.num_blocks):
            hs.append(self.step(l, hs[-1]))
        return hs

    def forward_from(self, l: int, h: Tensor) -> Tensor:
        """Logits from hidden state ``h_l`` (``l`` in ``0..L``)."""
        for i in range(l, self.num_blocks):
            h = self.step(i, h)
        return self.readout(h)

    def logits(self, x: Tensor) -> Tensor:
        return self.forward_from(0, self.embed(x))

    def pool(self, h: Tensor) -> Tensor:
        """Mean over every axis but batch and features: ``(N, d)``."""
        if h.dim() == 2:
            return h
        axis = self.feature_axis % h.dim()
        dims = [i for i in range(1, h.dim()) if i != axis]
        return h.mean(dim=dims)

    def broadcast(self, a: Tensor, like: Tensor) -> Tensor:
        """Spread a per-feature signal ``(N, d)`` over every position of ``like``."""
        if like.dim() == 2:
            return a
        axis = self.feature_axis % like.dim()
        shape = [a.shape[0]] + [1] * (like.dim() - 1)
        shape[axis] = a.shape[1]
        return a.reshape(shape).expand_as(like)

    def feature_dim(self, h: Tensor) -> int:
        return int(h.shape[self.feature_axis])

    # -- parameter groups ----------------------------------------------------------------
    def block_parameters(self, l: int) -> Iterator[nn.Parameter]:
        blocks = getattr(self.model, "blocks", None)
        if blocks is None:
            name = type(self.model).__name__
            raise AnatomyError(f"{name} has no `blocks` to take parameters from")
        return blocks[l].parameters()

    def readout_parameters(self) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for name in READOUT_MODULE_NAMES:
            module = getattr(self.model, name, None)
            if isinstance(module, nn.Module):
                params.extend(module.parameters())
        return params

    def block_modules(self) -> list[nn.Module]:
        return list(getattr(self.model, "blocks", []))


def anatomy_of(model: nn.Module | Anatomy) -> Anatomy:
    """The anatomy of ``model`` (an :class:`Anatomy` passes through)."""
    return model if isinstance(model, Anatomy) else Anatomy(model)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own mode (frozen BN stays eval)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def per_sample_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of each sample, shape ``(N,)``."""
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def per_sample_gradients(
    model: nn.Module | Anatomy, x: Tensor, y: Tensor
) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Hidden states ``[h_0..h_L]``, each sample's own loss gradient at each of them, and logits.

    The gradient of the *sum* of per-sample losses equals each sample's own gradient when the
    forward pass treats samples independently (eval mode), so the figures do not depend on how
    many samples are evaluated together, unlike the gradient of the mean loss.  Parameters get
    no ``.grad``.  Everything returned is detached.
    """
    anatomy = anatomy_of(model)
    with torch.enable_grad():
        hidden = anatomy.hidden_states(x, track_stream=True)
        logits = anatomy.readout(hidden[-1])
        loss = per_sample_loss(logits, y).sum()
        grads = torch.autograd.grad(loss, hidden, allow_unused=True)
    grads = [torch.zeros_like(h) if g is None else g for h, g in zip(hidden, grads, strict=True)]
    return [h.detach() for h in hidden], [g.detach() for g in grads], logits.detach()
