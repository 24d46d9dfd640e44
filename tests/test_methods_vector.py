"""Learned vector credit (``vec``): V's pieces, its training target, the schedules, the method."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from fa_checks.methods import available_methods, get_method
from fa_checks.methods.base import MethodError
from fa_checks.methods.local import output_error, rms_normalise
from fa_checks.methods.vector import (
    EPOCH_KEY,
    SinusoidalTimeEmbedding,
    VectorCredit,
    VectorCreditNet,
    blend_credit,
    directional_derivatives,
    epoch_plan,
    random_directions,
    terminal_gradient,
    vector_credit,
    vector_net_loss,
)
from fa_checks.models import build_model
from fa_checks.models.anatomy import anatomy_of, per_sample_gradients

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
def test_blend_mixes_rms_normalise_credits(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    vec, dfa = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g) * 7
    mixed = blend_credit(vec, dfa, alpha)
    torch.testing.assert_close(
        mixed, alpha * rms_normalise(vec) + (1 - alpha) * rms_normalise(dfa)
    )
    torch.testing.assert_close(blend_credit(vec, dfa, 0.0), rms_normalise(dfa))
    torch.testing.assert_close(blend_credit(vec, dfa, 1.0), rms_normalise(vec))
    rms = rms_normalise(dfa).pow(2).mean(-1).sqrt()
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


# -- the method ----------------------------------------------------------------------------
def set_up(model: nn.Module | None = None, seed: int = 7, **options) -> VectorCredit:
    options = {"vnet_width": 32, "vnet_depth": 2, **options}
    method = get_method("vec", **options)
    method.setup(tiny_resmlp() if model is None else model, C,
                 torch.Generator().manual_seed(seed))
    return method


def dfa_credit(method: VectorCredit, hidden: list[Tensor], e: Tensor) -> list[Tensor]:
    """The seeds' DFA credit written out: block l gets e @ B_l^T, the embedding e @ B_0^T."""
    block = [e @ b.T for b in method.feedback]
    return [block[0], *block]


def which_credit(method: VectorCredit, x: Tensor, y: Tensor) -> str:
    """'dfa' or 'vec', by comparing ``local_credit`` with both signals written out."""
    hidden = method.anatomy.hidden_states(x)
    logits = method.anatomy.readout(hidden[-1])
    e = output_error(logits.detach(), y)
    credit = method.local_credit([h.detach() for h in hidden], logits, y)
    with torch.no_grad():
        vec = vector_credit(method.vnet, hidden, e)
    same = {
        name: all(torch.equal(a, b) for a, b in zip(credit, ref, strict=True))
        for name, ref in (("dfa", dfa_credit(method, hidden, e)), ("vec", vec))
    }
    assert sum(same.values()) == 1, same
    return next(name for name, hit in same.items() if hit)


def vnet_snapshot(method: VectorCredit) -> list[Tensor]:
    return [p.detach().clone() for p in method.vnet.parameters()]


def test_vec_is_registered_with_the_seeds_defaults():
    assert "vec" in available_methods()
    method = get_method("vec")
    assert isinstance(method, VectorCredit)
    assert method.options["schedule"] == "vec_only"
    assert method.options["clip"] == 1.0
    assert (method.options["fd_eps"], method.options["fd_directions"]) == (1e-3, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule": "warmup"}, "schedule must be one of"),
        ({"schedule": "dfa_then_vec"}, "needs switch_epoch"),
        ({"schedule": "vec_then_dfa", "switch_epoch": 2.5}, "switch_epoch must be an integer"),
        ({"alpha": 1.5}, "alpha must be a number >= 0 and <= 1"),
        ({"lr_fb": 0}, "lr_fb must be a number > 0"),
        ({"lr_fb": float("inf")}, "lr_fb must be a number > 0"),
        ({"fd_directions": 0}, "fd_directions must be an integer >= 1"),
        ({"fd_eps": "tiny"}, "fd_eps must be a number"),
        ({"lr": 1e-3}, "bad option for method 'vec'"),
    ],
)
def test_bad_options_are_method_errors(options, message):
    with pytest.raises(MethodError, match=message):
        get_method("vec", **options)


def test_other_architectures_are_refused_with_a_reason():
    mlp = build_model("mlp", input_shape=(D_IN,), num_classes=C, d_hidden=D, depth=2)
    with pytest.raises(MethodError, match="applies to resmlp, not .*flat hidden states"):
        set_up(mlp)


@pytest.mark.parametrize(("schedule", "extra"), [("dfa_only", {}),
                                                 ("dfa_then_vec", {"switch_epoch": 3})])
def test_dfa_phases_update_the_model_exactly_as_dfa(schedule, extra):
    """While the schedule says DFA, vec's model update is DFA's, bit for bit, whether or not V
    is being pre-trained on the side (V's training leaks nothing into the model)."""
    x, y = teacher_data(32)
    vec_model, dfa_model = tiny_resmlp(), tiny_resmlp()
    vec = set_up(vec_model, schedule=schedule, **extra)
    dfa = get_method("dfa", clip=1.0)
    dfa.setup(dfa_model, C, torch.Generator().manual_seed(7))
    for a, b in zip(vec.feedback, dfa.feedback, strict=True):
        assert torch.equal(a, b)
    vec.epoch_start(1, 4)
    assert vec.plan.train_vnet == (schedule == "dfa_then_vec")
    before = vnet_snapshot(vec)
    for _ in range(3):
        vec.step(x, y)
        dfa.step(x, y)
    for p, q in zip(vec_model.parameters(), dfa_model.parameters(), strict=True):
        assert torch.equal(p, q)
    moved = any(not torch.equal(a, b) for a, b in zip(before, vnet_snapshot(vec), strict=True))
    assert moved == vec.plan.train_vnet


def run_schedule(schedule: str, epochs: int, **options) -> list[tuple[str, bool, set]]:
    """Per epoch: the credit local_credit gives, whether V changed, and step's extra figures."""
    method = set_up(schedule=schedule, **options)
    x, y = teacher_data(16)
    seen = []
    for epoch in range(1, epochs + 1):
        method.epoch_start(epoch, epochs)
        before = vnet_snapshot(method)
        figures = method.step(x, y)
        changed = any(
            not torch.equal(a, b) for a, b in zip(before, vnet_snapshot(method), strict=True)
        )
        seen.append((which_credit(method, x, y), changed, set(figures) - {"loss"}))
    return seen


VNET_FIGURES = {"vnet_loss", "vnet_terminal", "vnet_probes"}


def test_dfa_then_vec_uses_dfa_until_T_then_v():
    got = run_schedule("dfa_then_vec", 4, switch_epoch=2, pretrain_epochs=1)
    assert got == [("dfa", True, VNET_FIGURES), ("dfa", True, VNET_FIGURES),
                   ("vec", True, VNET_FIGURES), ("vec", True, VNET_FIGURES)]
    got = run_schedule("dfa_then_vec", 3, switch_epoch=2, pretrain_epochs=0)
    assert got == [("dfa", False, set()), ("dfa", True, VNET_FIGURES),
                   ("vec", True, VNET_FIGURES)]


def test_vec_then_dfa_uses_v_until_T_then_dfa_and_freezes_v():
    got = run_schedule("vec_then_dfa", 4, switch_epoch=2)
    assert got == [("vec", True, VNET_FIGURES), ("vec", True, VNET_FIGURES),
                   ("dfa", False, set()), ("dfa", False, set())]


def test_credit_never_trains_v():
    method = set_up(schedule="vec_only")
    x, y = teacher_data(16)
    before = vnet_snapshot(method)
    first = method.credit(x, y)
    second = method.credit(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, vnet_snapshot(method), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    hidden = method.anatomy.hidden_states(x)
    e = output_error(method.anatomy.readout(hidden[-1]), y)
    with torch.no_grad():
        expected = vector_credit(method.vnet, hidden, e)
    for a, b in zip(first, expected, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.3])
def test_blend_endpoints_are_dfa_and_v_normalised(alpha):
    method = set_up(schedule="blend", alpha=alpha)
    x, y = teacher_data(16)
    credit = method.credit(x, y)
    hidden = method.anatomy.hidden_states(x)
    e = output_error(method.anatomy.readout(hidden[-1]).detach(), y)
    with torch.no_grad():
        vec = vector_credit(method.vnet, hidden, e)
    dfa = dfa_credit(method, hidden, e)
    for a, v, d in zip(credit, vec, dfa, strict=True):
        expected = alpha * rms_normalise(v) + (1 - alpha) * rms_normalise(d)
        torch.testing.assert_close(a, expected)
        if alpha == 0.0:
            torch.testing.assert_close(a, rms_normalise(d))
        if alpha == 1.0:
            torch.testing.assert_close(a, rms_normalise(v))


def test_state_round_trip_restores_identical_credit_and_schedule():
    x, y = teacher_data(16)
    trained = set_up(schedule="vec_then_dfa", switch_epoch=2, seed=1)
    for epoch in (1, 2):
        trained.epoch_start(epoch, 3)
        trained.step(x, y)
    state = trained.state_dict()
    assert EPOCH_KEY in state and int(state[EPOCH_KEY]) == 2
    assert {k for k in state if k.startswith("feedback.")} == {f"feedback.{i}" for i in range(L)}
    assert any(k.startswith("vnet.net.") for k in state)
    assert all(isinstance(v, Tensor) for v in state.values())

    fresh = set_up(trained.model, schedule="vec_then_dfa", switch_epoch=2, seed=2)
    assert fresh.plan.source == "vec" and fresh.epoch == 0
    assert not all(torch.equal(a, b) for a, b in
                   zip(fresh.credit(x, y), trained.credit(x, y), strict=True))
    fresh.load_state_dict({k: v.clone() for k, v in state.items()})
    assert fresh.epoch == 2
    for a, b in zip(fresh.credit(x, y), trained.credit(x, y), strict=True):
        assert torch.equal(a, b)
    fresh.epoch_start(3, 3)
    trained.epoch_start(3, 3)
    assert which_credit(fresh, x, y) == "dfa"
    for a, b in zip(fresh.credit(x, y), trained.credit(x, y), strict=True):
        assert torch.equal(a, b)


def test_load_state_dict_names_what_does_not_fit():
    method = set_up()
    state = method.state_dict()
    with pytest.raises(MethodError, match=r"missing \['schedule.epoch'\]"):
        method.load_state_dict({k: v for k, v in state.items() if k != EPOCH_KEY})
    wider = set_up(vnet_width=48).state_dict()
    with pytest.raises(MethodError, match="must have shape"):
        method.load_state_dict(wider)
    deeper = set_up(vnet_depth=3).state_dict()
    with pytest.raises(MethodError, match="unexpected"):
        method.load_state_dict(deeper)


@pytest.mark.parametrize("schedule", ["blend", "dfa_only"])
def test_redraw_feedback_replaces_b_and_keeps_v(schedule):
    method = set_up(schedule=schedule)
    feedback, vnet = [b.clone() for b in method.feedback], vnet_snapshot(method)
    assert method.redraw_feedback(torch.Generator().manual_seed(99))
    assert all(not torch.equal(a, b) for a, b in zip(feedback, method.feedback, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(vnet, vnet_snapshot(method), strict=True))


def test_no_fresh_feedback_null_while_the_credit_is_v_alone():
    """V's credit does not read B: redrawing it would make a 'null' equal to the method's own
    cosine (zero spread), so there is none; after a switch to DFA there is one."""
    from fa_checks.diagnostics.metrics import fresh_feedback_null

    method = set_up(schedule="vec_then_dfa", switch_epoch=1)
    x, y = teacher_data(16)
    method.epoch_start(1, 2)
    feedback = [b.clone() for b in method.feedback]
    assert not method.redraw_feedback(torch.Generator().manual_seed(99))
    assert all(torch.equal(a, b) for a, b in zip(feedback, method.feedback, strict=True))
    assert fresh_feedback_null(method, x, y, draws=3) is None
    method.epoch_start(2, 2)
    null = fresh_feedback_null(method, x, y, draws=3)
    assert null is not None and min(null.std[1:]) > 0


def test_same_seed_same_training():
    x, y = teacher_data(32)
    runs = []
    for _ in range(2):
        method = set_up(schedule="blend")
        method.epoch_start(1, 1)
        figures = [method.step(x, y) for _ in range(3)]
        runs.append((figures, [p.detach().clone() for p in method.model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


@pytest.mark.parametrize("schedule", ["vec_only", "blend"])
def test_a_short_training_run_lowers_the_task_loss(schedule):
    x, y = teacher_data(256)
    method = set_up(schedule=schedule, lr_fb=3e-3)
    method.optimizer = torch.optim.AdamW(method.model.parameters(), lr=3e-3, weight_decay=0.01)

    def task_loss() -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(method.model(x), y))

    start = task_loss()
    g = torch.Generator().manual_seed(0)
    vnet_losses = []
    for epoch in range(1, 4):
        method.epoch_start(epoch, 3)
        for idx in torch.randperm(256, generator=g).split(32):
            vnet_losses.append(method.step(x[idx], y[idx])["vnet_loss"])
    assert task_loss() < 0.85 * start
    assert sum(vnet_losses[-4:]) < sum(vnet_losses[:4])


def test_checkpoint_round_trip_rebuilds_v_b_and_the_schedule(tmp_path):
    from fa_checks.checkpoint import load_checkpoint, save_checkpoint

    x, y = teacher_data(16)
    method = set_up(schedule="dfa_then_vec", switch_epoch=1, pretrain_epochs=1)
    for epoch in (1, 2):
        method.epoch_start(epoch, 2)
        method.step(x, y)
    path = save_checkpoint(tmp_path / "vec.pt", model=method.model, method=method, seed=7)
    checkpoint = load_checkpoint(path)
    rebuilt = checkpoint.build_method(checkpoint.build_model())
    assert isinstance(rebuilt, VectorCredit)
    assert rebuilt.options == method.options and rebuilt.epoch == 2
    assert which_credit(rebuilt, x, y) == "vec"
    for a, b in zip(rebuilt.credit(x, y), method.credit(x, y), strict=True):
        assert torch.equal(a, b)
