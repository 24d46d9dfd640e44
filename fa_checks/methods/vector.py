"""Learned vector credit (``vec``): a small network ``V(h_l, t=l/L, e)`` predicts ``dLoss/dh_l``.

Rule.  ``e = softmax(logits) - onehot(y)``.  ``V`` reads a LayerNorm of the hidden state, a
sinusoidal embedding of the depth ``t = l/L`` and ``e``, and outputs a vector shaped like ``h_l``.
In the epochs where the schedule trains it, it learns on every batch, before the model's update
(the seeds' order), from

    terminal:  mean_n || V(h_L, 1, e) - dLoss_n/dh_L ||^2         (each sample's own gradient)
    probes:    mean_j mean_n ( <V(h_l, l/L, e), v_j> - D_j )^2    (one random block l < L)
               D_j = (loss_n(h_l + eps v_j) - loss_n(h_l - eps v_j)) / (2 eps),  ||v_j|| = 1

summed, its gradient clipped to norm 1, one Adam step at ``lr_fb`` (V: 3 GELU layers of 256, as
the seeds).  The model then takes the fused local-loss step of
:class:`~fa_checks.methods.local.LocalLossMethod` (block gradients clipped to norm 1, as the seeds'
schedule runs) with the credit the schedule picks for the epoch: DFA's ``e @ B_l^T``, V's output,
or the blend ``alpha V/rms(V) + (1 - alpha) DFA/rms(DFA)``.

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
from torch import Tensor

from .base import Figures, MethodError, register
from .dfa import DFA
from .local import FEEDBACK_PREFIX, check_state_tensor, finite_number, output_error
from .low_rank import Factors
from .vector_net import (  # noqa: F401 - the pieces of V, importable from here as before
    DIRECTION_EPS,
    SinusoidalTimeEmbedding,
    VectorCreditNet,
    VectorLoss,
    blend_credit,
    directional_derivatives,
    random_directions,
    terminal_gradient,
    vector_credit,
    vector_net_loss,
)

SCHEDULES = ("dfa_only", "vec_only", "vec_then_dfa", "dfa_then_vec", "blend")
SWITCHING_SCHEDULES = ("vec_then_dfa", "dfa_then_vec")
#: V's gradient-norm clip and its time-embedding size, as in the seeds
VNET_CLIP = 1.0
TIME_DIM = 32
VNET_PREFIX = "vnet."
EPOCH_KEY = "schedule.epoch"


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


# -- the method ----------------------------------------------------------------------------------
def _integer(option: str, value: object, minimum: int) -> int:
    number = finite_number(value)
    if number is None or not number.is_integer() or number < minimum:
        raise MethodError(f"method 'vec' option {option} must be an integer >= {minimum}, "
                          f"got {value!r}")
    return int(number)


def _real(option: str, value: object, low: float, high: float = math.inf,
          *, open_low: bool = False) -> float:
    number = finite_number(value)
    if number is None or not (low < number if open_low else low <= number) or number > high:
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        bound += f" and <= {high:g}" if math.isfinite(high) else ""
        raise MethodError(f"method 'vec' option {option} must be a number {bound}, got {value!r}")
    return number


@register
class VectorCredit(DFA):
    """Learned vector credit with the seeds' schedules; DFA supplies the fixed-feedback credit.

    Options: ``schedule`` (one of :data:`SCHEDULES`, default ``"vec_only"``), ``switch_epoch``
    (T: the last epoch of the first phase of ``vec_then_dfa`` / ``dfa_then_vec``), ``alpha``
    (weight of V in ``blend``), ``lr_fb`` (V's Adam learning rate), ``fd_eps`` and
    ``fd_directions`` (step and number M of the central-difference probes), ``pretrain_epochs``
    (``dfa_then_vec`` trains V from epoch T - this on), ``vnet_width`` / ``vnet_depth`` (V's
    hidden layers), and the local-loss options ``penalty`` and ``clip`` (per-block gradient norm;
    1.0 as in the seeds' schedule runs).
    """

    name = "vec"
    architectures = ("resmlp",)
    architecture_reason = (
        "its credit network reads flat hidden states (N, d) of one width at every depth"
    )

    def __init__(
        self,
        schedule: str = "vec_only",
        switch_epoch: int | None = None,
        alpha: float = 0.5,
        lr_fb: float = 1e-3,
        fd_eps: float = 1e-3,
        fd_directions: int = 4,
        pretrain_epochs: int = 5,
        vnet_width: int = 256,
        vnet_depth: int = 3,
        penalty: float = 0.0,
        clip: float | None = 1.0,
    ) -> None:
        super().__init__(penalty=penalty, clip=clip)
        if schedule not in SCHEDULES:
            raise MethodError(
                f"method 'vec' option schedule must be one of {', '.join(SCHEDULES)}, "
                f"got {schedule!r}"
            )
        if schedule in SWITCHING_SCHEDULES:
            if switch_epoch is None:
                raise MethodError(
                    f"method 'vec' schedule {schedule!r} needs switch_epoch (the last epoch "
                    "before the switch), e.g. switch_epoch=5"
                )
            switch_epoch = _integer("switch_epoch", switch_epoch, 0)
        elif switch_epoch is not None:
            switch_epoch = _integer("switch_epoch", switch_epoch, 0)
        self.options.update(
            schedule=schedule,
            switch_epoch=switch_epoch,
            alpha=_real("alpha", alpha, 0.0, 1.0),
            lr_fb=_real("lr_fb", lr_fb, 0.0, open_low=True),
            fd_eps=_real("fd_eps", fd_eps, 0.0, open_low=True),
            fd_directions=_integer("fd_directions", fd_directions, 1),
            pretrain_epochs=_integer("pretrain_epochs", pretrain_epochs, 0),
            vnet_width=_integer("vnet_width", vnet_width, 1),
            vnet_depth=_integer("vnet_depth", vnet_depth, 0),
        )
        self.vnet: VectorCreditNet | None = None
        self.vnet_optimizer: torch.optim.Optimizer | None = None
        self.epoch = 0  # 0: before the first epoch_start, treated as epoch 1
        self._fit_on_next_credit = False
        self._fit_figures: dict[str, float] = {}

    # -- set-up ----------------------------------------------------------------------------------
    def init_state(self, generator: torch.Generator) -> None:
        super().init_state(generator)  # DFA's B_l first: the same seed gives DFA's matrices
        d_hidden = self.feature_dims()[0]
        vnet = VectorCreditNet(
            d_hidden,
            self.num_classes,
            time_dim=TIME_DIM,
            width=self.options["vnet_width"],
            depth=self.options["vnet_depth"],
        )
        vnet.reset_parameters(generator)
        self.vnet = vnet.to(device=self.model_device(), dtype=self.model_dtype())
        self.vnet_optimizer = torch.optim.Adam(self.vnet.parameters(), lr=self.options["lr_fb"])
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        # the probed layer on the CPU (read at once), the directions where the model lives
        self._layer_rng = torch.Generator().manual_seed(seed)
        self._direction_rng = torch.Generator(device=self.model_device()).manual_seed(seed)

    # -- the schedule ----------------------------------------------------------------------------
    def epoch_start(self, epoch: int, epochs: int) -> None:
        self.epoch = int(epoch)

    @property
    def plan(self) -> EpochPlan:
        """The credit source of the current epoch and whether V learns in it."""
        return epoch_plan(
            self.options["schedule"],
            max(self.epoch, 1),
            self.options["switch_epoch"],
            self.options["pretrain_epochs"],
        )

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        """Redraw DFA's B (V stays).  False while the credit is V's alone: it does not read B, so
        a "fresh feedback" null would only repeat the method's own figure."""
        if self.plan.source == "vec":
            return False
        return super().redraw_feedback(generator)

    # -- training --------------------------------------------------------------------------------
    def step(self, x: Tensor, y: Tensor) -> Figures:
        """V learns first on this batch's hidden states (the seeds' order), then the model takes
        its fused local-loss step with the credit V gives after its update."""
        self._fit_on_next_credit = self.plan.train_vnet
        self._fit_figures = {}
        try:
            figures = super().step(x, y)
        finally:
            self._fit_on_next_credit = False
        figures.update(self._fit_figures)
        return figures

    def can_factor(self) -> bool:
        # while the credit is DFA's alone, the step is DFA's, to the bit
        return not self.penalty and self.plan.source == "dfa"

    def factored_gradients(
        self, hidden: list[Tensor], logits: Tensor, y: Tensor, branches: list[Tensor]
    ) -> tuple[list[Tensor | None], list[Factors | None]]:
        self._fit_before_credit(hidden, output_error(logits.detach(), y), y)
        return super().factored_gradients(hidden, logits, y, branches)

    def _fit_before_credit(self, hidden: list[Tensor], e: Tensor, y: Tensor) -> None:
        if self._fit_on_next_credit:  # only inside step(), never for credit()
            self._fit_on_next_credit = False
            self._fit_figures = self.fit_vnet(hidden, e, y)

    def local_credit(self, hidden: list[Tensor], logits: Tensor, y: Tensor) -> list[Tensor]:
        e = output_error(logits.detach(), y)
        self._fit_before_credit(hidden, e, y)
        source = self.plan.source
        if source == "dfa":
            return super().local_credit(hidden, logits, y)
        vnet = self._vnet()
        with torch.no_grad():
            vec = vector_credit(vnet, hidden, e)
        if source == "vec":
            return vec
        dfa = super().local_credit(hidden, logits, y)
        alpha = self.options["alpha"]
        return [blend_credit(v, a, alpha) for v, a in zip(vec, dfa, strict=True)]

    def fit_vnet(self, hidden: list[Tensor], e: Tensor, y: Tensor) -> dict[str, float]:
        """One Adam step of V on this batch: terminal gradient + probes at one random block."""
        assert self.anatomy is not None and self.vnet_optimizer is not None
        vnet = self._vnet()
        hidden = [h.detach() for h in hidden]
        layer = int(torch.randint(self.anatomy.num_blocks, (1,), generator=self._layer_rng))
        directions = random_directions(
            self.options["fd_directions"], hidden[layer], self._direction_rng
        )
        loss = vector_net_loss(
            vnet, self.anatomy, hidden, e, y,
            layer=layer, directions=directions, eps=self.options["fd_eps"],
        )
        self.vnet_optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(vnet.parameters(), VNET_CLIP)
        self.vnet_optimizer.step()
        return {
            "vnet_loss": loss.total.detach(),
            "vnet_terminal": loss.terminal.detach(),
            "vnet_probes": loss.probes.detach(),
        }

    def _vnet(self) -> VectorCreditNet:
        if self.vnet is None:
            raise MethodError("method 'vec' is not set up: call setup(model, ...) first")
        return self.vnet

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        """``feedback.<i>`` (DFA's B), ``vnet.<param>`` (V) and ``schedule.epoch``."""
        state = super().state_dict()
        state.update({VNET_PREFIX + k: v for k, v in self._vnet().state_dict().items()})
        state[EPOCH_KEY] = torch.tensor(self.epoch, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        vnet = self._vnet()
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise MethodError(
                f"method 'vec' state does not fit: missing {missing or 'nothing'}, unexpected "
                f"{unexpected or 'nothing'} (was it saved with other vnet_width/vnet_depth?)"
            )
        vnet_state = {}
        for key, current in expected.items():
            if not key.startswith(VNET_PREFIX):
                continue
            value = check_state_tensor(self.name, key, state[key], current)
            vnet_state[key[len(VNET_PREFIX):]] = value
        epoch = state[EPOCH_KEY]
        if not isinstance(epoch, Tensor) or epoch.numel() != 1:
            raise MethodError(f"method 'vec' state {EPOCH_KEY} must be one integer, got {epoch!r}")
        super().load_state_dict({k: v for k, v in state.items() if k.startswith(FEEDBACK_PREFIX)})
        vnet.load_state_dict(vnet_state)  # copies in place: V's optimizer keeps its tensors
        self.epoch = int(epoch.item())
