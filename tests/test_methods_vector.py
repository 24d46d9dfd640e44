"""Learned vector credit (``vec``): V's pieces, its training target, the schedules, the method."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fa_checks.anatomy import anatomy_of, per_sample_gradients
from fa_checks.methods.base import MethodError
from fa_checks.methods.vector import (
    SinusoidalTimeEmbedding,
    VectorCreditNet,
    blend_credit,
    directional_derivatives,
    epoch_plan,
    output_error,
    random_directions,
    rms_normalised,
    terminal_gradient,
    vector_credit,
    vector_net_loss,
)
from fa_checks.models import build_model

D_IN, D, C, L = 12, 16, 4, 2


def tiny_resmlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resmlp", input_shape=(D_IN,), num_classes=C, d_hidden=D, num_blocks=L)
    # larger second matrices than the default 0.01, so the blocks matter to the gradient
    for block in model.blocks:
        nn.init.normal_(block.w2.weight, std=0.3)
    return model.to(dtype)


def teacher_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ~ N(0, 1) labelled by a random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    teacher = torch.randn(D_IN, C, generator=g)
    return x, (x @ teacher).argmax(dim=1)


def tiny_vnet(seed: int = 0, width: int = 32) -> VectorCreditNet:
    vnet = VectorCreditNet(D, C, width=width, depth=2)
    vnet.reset_parameters(torch.Generator().manual_seed(seed))
    return vnet


# -- the time embedding ------------------------------------------------------------------
def test_time_embedding_at_zero_is_sines_zero_cosines_one():
    emb = SinusoidalTimeEmbedding(32)(torch.zeros(3))
    assert emb.shape == (3, 32)
    assert torch.equal(emb[:, :16], torch.zeros(3, 16))
    assert torch.equal(emb[:, 16:], torch.ones(3, 16))


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_time_embedding_pairs_lie_on_the_unit_circle(ts):
    emb = SinusoidalTimeEmbedding(32)(torch.tensor(ts, dtype=torch.float64))
    radius = emb[:, :16] ** 2 + emb[:, 16:] ** 2
    torch.testing.assert_close(radius, torch.ones_like(radius))


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_time_embedding_tells_every_layer_apart(depth):
    t = torch.arange(depth + 1, dtype=torch.float64) / depth
    emb = SinusoidalTimeEmbedding(32)(t)
    distances = torch.cdist(emb, emb) + torch.eye(depth + 1)
    assert distances.min() > 0.1


def test_time_embedding_rejects_odd_dimension():
    with pytest.raises(ValueError, match="even"):
        SinusoidalTimeEmbedding(7)


# -- the credit pieces -------------------------------------------------------------------
def test_output_error_is_the_per_sample_logit_gradient():
    logits = torch.randn(5, C, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, y, reduction="sum"), logits)
    torch.testing.assert_close(output_error(logits, y), grad)


def test_vector_credit_is_v_at_each_depth():
    model, vnet = tiny_resmlp(), tiny_vnet()
    x, y = teacher_data(6)
    hidden = anatomy_of(model).hidden_states(x)
    e = output_error(model(x), y)
    credit = vector_credit(vnet, hidden, e)
    assert len(credit) == L + 1
    for l, a in enumerate(credit):
        expected = vnet(hidden[l], torch.full((6,), l / L), e)
        torch.testing.assert_close(a, expected)


@given(alpha=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_blend_mixes_rms_normalised_credits(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    vec, dfa = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g) * 7
    mixed = blend_credit(vec, dfa, alpha)
    torch.testing.assert_close(
        mixed, alpha * rms_normalised(vec) + (1 - alpha) * rms_normalised(dfa)
    )
    torch.testing.assert_close(blend_credit(vec, dfa, 0.0), rms_normalised(dfa))
    torch.testing.assert_close(blend_credit(vec, dfa, 1.0), rms_normalised(vec))
    rms = rms_normalised(dfa).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(4), atol=1e-5, rtol=0)


# -- V's training targets ----------------------------------------------------------------
def test_terminal_target_is_the_per_sample_gradient_at_h_L():
    model = tiny_resmlp()
    x, y = teacher_data(7)
    hidden, grads, _ = per_sample_gradients(model, x, y)
    torch.testing.assert_close(terminal_gradient(anatomy_of(model), hidden[-1], y), grads[-1])


@pytest.mark.parametrize("layer", range(L))
def test_central_differences_match_the_directional_gradient(layer):
    model = tiny_resmlp(dtype=torch.float64)
    x, y = teacher_data(5)
    hidden, grads, _ = per_sample_gradients(model, x.double(), y)
    v = random_directions(3, hidden[layer], torch.Generator().manual_seed(1))
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3, 5, dtype=torch.float64))
    fd = directional_derivatives(anatomy_of(model), layer, hidden[layer], y, v, eps=1e-4)
    exact = (grads[layer][None] * v).sum(dim=-1)
    torch.testing.assert_close(fd, exact, atol=1e-7, rtol=1e-6)


def test_batched_differences_equal_one_pass_per_direction():
    """The one batched pass gives the seeds' M separate passes, sample by sample."""
    model = tiny_resmlp()
    anatomy = anatomy_of(model)
    x, y = teacher_data(6)
    h = anatomy.hidden_states(x)[1].detach()
    v = random_directions(4, h, torch.Generator().manual_seed(2))
    batched = directional_derivatives(anatomy, 1, h, y, v, eps=1e-3)
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        for j in range(4):
            plus = ce(anatomy.forward_from(1, h + 1e-3 * v[j]), y, reduction="none")
            minus = ce(anatomy.forward_from(1, h - 1e-3 * v[j]), y, reduction="none")
            torch.testing.assert_close(batched[j], (plus - minus) / 2e-3, atol=1e-4, rtol=1e-4)


def test_v_loss_is_zero_for_a_perfect_predictor():
    """Zero loss when V outputs the exact gradient (float64, tiny eps): the targets are right."""

    class Oracle(nn.Module):
        def __init__(self, grads):
            super().__init__()
            self.grads = grads

        def forward(self, h, t, e):
            return self.grads[round(float(t[0]) * L)]

    model = tiny_resmlp(dtype=torch.float64)
    x, y = teacher_data(8)
    hidden, grads, logits = per_sample_gradients(model, x.double(), y)
    v = random_directions(5, hidden[0], torch.Generator().manual_seed(3))
    for layer in range(L):
        loss = vector_net_loss(
            Oracle(grads), anatomy_of(model), hidden, output_error(logits, y), y,
            layer=layer, directions=v, eps=1e-5,
        )
        assert float(loss.terminal) == 0.0
        assert float(loss.probes) < 1e-16
        assert loss.layer == layer


def test_training_v_reduces_its_error_against_the_true_gradient():
    """Fit V on one fixed batch: the loss falls, and so does its distance to the per-sample
    BP gradient at every depth (the quantity the targets stand in for)."""
    model = tiny_resmlp()
    anatomy = anatomy_of(model)
    x, y = teacher_data(64)
    hidden, grads, logits = per_sample_gradients(model, x, y)
    e = output_error(logits, y)
    vnet = tiny_vnet(width=64)
    opt = torch.optim.Adam(vnet.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def gradient_errors() -> list[float]:
        with torch.no_grad():
            credit = vector_credit(vnet, hidden, e)
        return [float((a - gl).pow(2).sum(-1).mean()) for a, gl in zip(credit, grads, strict=True)]

    def cosines() -> list[float]:
        with torch.no_grad():
            credit = vector_credit(vnet, hidden, e)
        cos = nn.functional.cosine_similarity
        return [float(cos(a, gl).mean()) for a, gl in zip(credit, grads, strict=True)]

    first_loss, errors_before = None, gradient_errors()
    for step in range(300):
        layer = step % L
        v = random_directions(8, hidden[layer], g)
        loss = vector_net_loss(vnet, anatomy, hidden, e, y, layer=layer, directions=v, eps=1e-3)
        first_loss = float(loss.total.detach()) if first_loss is None else first_loss
        opt.zero_grad()
        loss.total.backward()
        opt.step()
    last = [
        float(vector_net_loss(vnet, anatomy, hidden, e, y, layer=layer, eps=1e-3,
                              directions=random_directions(8, hidden[layer], g)).total.detach())
        for layer in range(L)
    ]
    assert max(last) < 0.2 * first_loss
    for before, after in zip(errors_before, gradient_errors(), strict=True):
        assert after < 0.5 * before
    assert min(cosines()) > 0.7


# -- schedules ---------------------------------------------------------------------------
def plans(schedule: str, epochs: int = 10, **kw) -> list[tuple[str, bool]]:
    return [
        (p.source, p.train_vnet)
        for p in (epoch_plan(schedule, epoch, **kw) for epoch in range(1, epochs + 1))
    ]


def test_fixed_schedules():
    assert plans("dfa_only") == [("dfa", False)] * 10
    assert plans("vec_only") == [("vec", True)] * 10
    assert plans("blend") == [("blend", True)] * 10


def test_vec_then_dfa_switches_after_epoch_T_and_stops_training_v():
    assert plans("vec_then_dfa", switch_epoch=3) == [("vec", True)] * 3 + [("dfa", False)] * 7


def test_dfa_then_vec_pretrains_v_from_epoch_T_minus_5():
    """The seeds: ``train_vec = use_vec or epoch >= T - 5``."""
    got = plans("dfa_then_vec", epochs=12, switch_epoch=8)
    assert got == [("dfa", False)] * 2 + [("dfa", True)] * 6 + [("vec", True)] * 4
    got = plans("dfa_then_vec", epochs=4, switch_epoch=2, pretrain_epochs=0)
    assert got == [("dfa", False), ("dfa", True), ("vec", True), ("vec", True)]


def test_unknown_schedule_is_a_method_error():
    with pytest.raises(MethodError, match="schedule"):
        epoch_plan("warmup", 1)
