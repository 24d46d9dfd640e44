"""A training rule written the way a user would, outside the library, named ``user_rules:Class``.

``ScaledDirectFeedback`` is direct feedback alignment with its own fixed random matrices scaled
by ``scale``: block ``l`` is trained on ``<f_l(h_l), a_{l+1}>`` with ``a = e @ B^T``, the
embedding on ``<h_0, a_0>``, the readout by its own loss.  It uses only the public interface
(``fa_checks.Method`` and the anatomy).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fa_checks import Method


class ScaledDirectFeedback(Method):
    name = "user-scaled-dfa"
    architectures = ("resmlp",)

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale=float(scale))
        self.feedback: list[Tensor] = []

    def init_state(self, generator: torch.Generator) -> None:
        d, c = self.model.d_hidden, self.num_classes
        device = next(self.model.parameters()).device
        self.feedback = [
            (torch.randn(d, c, generator=generator, device=generator.device)
             * self.options["scale"] / math.sqrt(c)).to(device)
            for _ in range(self.anatomy.num_blocks + 1)
        ]

    def _error(self, logits: Tensor, y: Tensor) -> Tensor:
        return logits.softmax(-1) - F.one_hot(y, self.num_classes).to(logits.dtype)

    def step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        anatomy = self.anatomy
        self.optimizer.zero_grad()
        h0 = anatomy.embed(x)
        h, branches = h0.detach(), []
        for l in range(anatomy.num_blocks):
            branches.append(anatomy.branch(l, h))
            with torch.no_grad():
                h = anatomy.step(l, h)
        logits = anatomy.readout(h)
        loss = F.cross_entropy(logits, y)
        error = self._error(logits.detach(), y)
        local = (h0 * (error @ self.feedback[0].T)).sum(-1).mean()
        for l, f in enumerate(branches):
            local = local + (f * (error @ self.feedback[l + 1].T)).sum(-1).mean()
        (loss + local).backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor]:
        with torch.no_grad():
            error = self._error(self.anatomy.logits(x), y)
        return [error @ b.T for b in self.feedback]

    def state_dict(self) -> dict[str, Tensor]:
        return {f"feedback.{i}": b for i, b in enumerate(self.feedback)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"expected keys {sorted(expected)}, got {sorted(state)}")
        self.feedback = [state[f"feedback.{i}"] for i in range(len(self.feedback))]


# -- rules that break the method contract, each in its own way ---------------------------------
from fa_checks.methods.local import LocalLossMethod, output_error  # noqa: E402


class NoStep(Method):
    name = "no-step"


class StepWithoutY(Method):
    def step(self, x):
        return {"loss": 0.0}


class LocalCreditWithoutY(LocalLossMethod):
    def local_credit(self, hidden, logits):
        return hidden


class NoLocalCredit(LocalLossMethod):
    pass


class StepReturnsAFloat(Method):
    def step(self, x, y):
        return 1.0


class StepReturnsAVector(Method):
    def step(self, x, y):
        return {"loss": torch.zeros(len(y))}


class OneSignalShort(LocalLossMethod):
    def local_credit(self, hidden, logits, y):
        return hidden[:-1]


class CreditOfTheWrongWidth(Method):
    def step(self, x, y):
        return {"loss": 0.0}

    def credit(self, x, y):
        return [h[:, :3] for h in self.anatomy.hidden_states(x)]


class PerSampleDFA(LocalLossMethod):
    """DFA written for flat models only: (N, d) signals, spread over positions by fa-checks."""
    name = "per-sample-dfa"

    def feedback_specs(self):
        return [((d, self.num_classes), 0.3) for d in self.feature_dims()]

    def local_credit(self, hidden, logits, y):
        e = output_error(logits, y)
        return [e @ b.T for b in self.feedback]


class DuckBP:
    """Backpropagation written without fa_checks.Method: only the five methods the contract
    names for a class of one's own."""

    def setup(self, model, num_classes, generator, optimizer=None):
        self.model = model
        self.sgd = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(self, x, y):
        from fa_checks.models.anatomy import anatomy_of

        self.sgd.zero_grad()
        loss = F.cross_entropy(anatomy_of(self.model).logits(x), y)
        loss.backward()
        self.sgd.step()
        return {"loss": loss.detach()}

    def credit(self, x, y):
        from fa_checks.models.anatomy import per_sample_gradients

        return per_sample_gradients(self.model, x, y)[1]

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
