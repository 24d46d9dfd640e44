"""The fused local-loss step and the rules built on it: dfa, sdfa, drtp, fa (residual form)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from doubles import embed_parameters, loss_before_and_after
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fa_checks.methods import MethodError, get_method
from fa_checks.methods.local import (
    LocalLossMethod,
    along_features,
    eval_mode,
    output_error,
    rms_normalise,
)
from fa_checks.models import build_model
from fa_checks.models.anatomy import anatomy_of, per_sample_gradients

C = 4
LOCAL_RULES = ["dfa", "sdfa", "drtp", "fa"]


# -- tiny models and data ------------------------------------------------------------------
def tiny(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "resmlp":
        model = build_model("resmlp", input_shape=(12,), num_classes=C, d_hidden=16, num_blocks=2)
        for block in model.blocks:  # blocks that matter, so every parameter moves
            nn.init.normal_(block.w2.weight, std=0.3)
        return model
    if arch == "vit":
        return build_model("vit", input_shape=(3, 8, 8), num_classes=C, patch_size=4,
                           d_model=16, n_heads=2, num_blocks=2, mlp_ratio=2.0)
    if arch == "resnet":
        return build_model("resnet", input_shape=(3, 8, 8), num_classes=C, width=8, num_blocks=2)
    if arch == "mlp":
        return build_model("mlp", input_shape=(12,), num_classes=C, d_hidden=16, depth=3,
                           activation="tanh")
    raise AssertionError(arch)


def batch_for(model: nn.Module, n: int = 24, seed: int = 1) -> tuple[Tensor, Tensor]:
    """Inputs ~ N(0, 1) shaped for ``model``, labelled by a random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(model.spec["kwargs"]["input_shape"])
    x = torch.randn(n, *shape, generator=g)
    teacher = torch.randn(x[0].numel(), C, generator=g)
    return x, (x.reshape(n, -1) @ teacher).argmax(dim=1)


def set_up(name: str, model: nn.Module, seed: int = 7, **options) -> LocalLossMethod:
    method = get_method(name, **options)
    method.setup(model, C, torch.Generator().manual_seed(seed))
    return method


def adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)


# -- the seeds' loop, written out plainly, as the reference ----------------------------------
class PerBlockReference:
    """The seeds' DFA/FA loop: a no-grad forward, then separate backward passes and separate
    AdamW optimizers for the head, each block and the embedding."""

    def __init__(self, model: nn.Module, rule: str, feedback: list[Tensor], penalty: float,
                 clip: float | None) -> None:
        self.model, self.anatomy = model, anatomy_of(model)
        self.rule, self.feedback = rule, [b.clone() for b in feedback]
        self.penalty, self.clip = penalty, clip
        L = self.anatomy.num_blocks
        self.head_opt = adamw(self.anatomy.readout_parameters())
        self.block_opts = [adamw(self.anatomy.block_parameters(l)) for l in range(L)]
        self.embed_opt = adamw(embed_parameters(self.anatomy))

    def local_loss(self, out: Tensor, a: Tensor) -> Tensor:
        axis = self.anatomy.feature_axis
        rms = (a**2).mean(dim=axis, keepdim=True).sqrt() + 1e-6
        return (out * (a / rms)).reshape(out.shape[0], -1).sum(-1).mean()

    def spread(self, a: Tensor, like: Tensor) -> Tensor:
        return self.anatomy.broadcast(a, like) if self.rule == "dfa" else a

    def step(self, x: Tensor, y: Tensor) -> None:
        anatomy, L = self.anatomy, self.anatomy.num_blocks
        with torch.no_grad():
            hidden = anatomy.hidden_states(x)
            e = anatomy.readout(hidden[-1]).softmax(-1)
            e[torch.arange(x.shape[0]), y] -= 1
        h_last = hidden[-1].detach().requires_grad_(True)
        self.head_opt.zero_grad()
        F.cross_entropy(anatomy.readout(h_last), y).backward()
        head_grad = h_last.grad.detach()
        self.head_opt.step()
        credit = head_grad
        order = range(L) if self.rule == "dfa" else range(L - 1, -1, -1)
        for l in order:
            a = e @ self.feedback[l].T if self.rule == "dfa" else credit
            h_l = hidden[l].detach()
            f = anatomy.branch(l, h_l)
            loss = self.local_loss(f, self.spread(a, f))
            if self.penalty:
                loss = loss + self.penalty * (f**2).reshape(f.shape[0], -1).sum(-1).mean()
            self.block_opts[l].zero_grad()
            loss.backward()
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(list(anatomy.block_parameters(l)), self.clip)
            self.block_opts[l].step()
            if self.rule == "fa":
                credit = along_features(credit, self.feedback[l], anatomy.feature_axis)
        a0 = e @ self.feedback[0].T if self.rule == "dfa" else credit
        h0 = anatomy.embed(x)
        self.embed_opt.zero_grad()
        self.local_loss(h0, self.spread(a0, h0)).backward()
        self.embed_opt.step()


def fused_and_reference(arch: str, rule: str, penalty: float = 0.0, clip: float | None = None,
                        steps: int = 5) -> tuple[nn.Module, nn.Module]:
    fused_model = tiny(arch)
    reference_model = copy.deepcopy(fused_model)
    method = get_method(rule, penalty=penalty, clip=clip)
    method.setup(fused_model, C, torch.Generator().manual_seed(3), optimizer=adamw)
    # the seeds' arithmetic: the factored step (the default) gives the same gradients to float
    # rounding (tests/test_low_rank.py), which AdamW turns into lr-sized steps where a
    # gradient is near zero, so the comparison with their loop is made on the dense step
    method.low_rank = False
    reference = PerBlockReference(reference_model, rule, method.feedback, penalty, clip)
    for step in range(steps):
        x, y = batch_for(fused_model, seed=step)
        method.step(x, y)
        reference.step(x, y)
    return fused_model, reference_model


@pytest.mark.parametrize(
    ("rule", "penalty", "clip"), [("dfa", 0.0, None), ("dfa", 1e-2, 0.05), ("fa", 0.0, None),
                                  ("fa", 1e-2, 0.05)]
)
def test_fused_step_equals_the_per_block_loop_on_resmlp(rule, penalty, clip):
    fused, reference = fused_and_reference("resmlp", rule, penalty, clip)
    start = tiny("resmlp")
    for (name, p), q, p0 in zip(fused.named_parameters(), reference.parameters(),
                                start.parameters(), strict=True):
        assert not torch.equal(p, p0), f"{name} never moved: the comparison would be empty"
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


@settings(max_examples=12)
@given(
    rule=st.sampled_from(["dfa", "fa"]),
    penalty=st.sampled_from([0.0, 1e-4, 0.3]),
    clip=st.sampled_from([None, 1e-3, 10.0]),
    batch=st.integers(1, 40),
)
def test_fused_step_equals_the_per_block_loop_for_any_batch_size(rule, penalty, clip, batch):
    fused_model = tiny("resmlp")
    reference_model = copy.deepcopy(fused_model)
    method = get_method(rule, penalty=penalty, clip=clip)
    method.setup(fused_model, C, torch.Generator().manual_seed(3), optimizer=adamw)
    method.low_rank = False  # the seeds' arithmetic (see fused_and_reference)
    reference = PerBlockReference(reference_model, rule, method.feedback, penalty, clip)
    for step in range(2):
        x, y = batch_for(fused_model, n=batch, seed=step)
        method.step(x, y)
        reference.step(x, y)
    for (name, p), q in zip(fused_model.named_parameters(), reference_model.parameters(),
                            strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("arch", "rule"),
    [("vit", "dfa"), ("vit", "fa"), ("resnet", "dfa"), ("resnet", "fa"), ("mlp", "dfa")],
)
def test_fused_step_equals_the_per_block_loop_on_other_architectures(arch, rule):
    # vit, resnet: blocks hold their skip (f_l = step - h_l) and local losses sum over
    # positions; mlp: a plain stack, h_{l+1} = f_l
    fused, reference = fused_and_reference(arch, rule, penalty=1e-3, steps=3)
    for (name, p), q in zip(fused.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_clip_bounds_each_blocks_gradient_norm_before_the_step():
    model = tiny("resmlp")
    method = set_up("dfa", model, clip=1e-3)
    norms = []
    method.after_backward = lambda: norms.extend(  # type: ignore[method-assign]
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in b.parameters()])).item()
        for b in model.blocks
    )
    method.step(*batch_for(model))
    assert len(norms) == 2 and all(n <= 1e-3 * (1 + 1e-5) for n in norms)


def test_step_reports_the_head_loss_of_the_batch():
    model = tiny("resmlp")
    x, y = batch_for(model)
    expected = F.cross_entropy(model(x), y).item()
    assert set_up("dfa", model).step(x, y)["loss"] == pytest.approx(expected, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(rule=st.sampled_from(["dfa", "sdfa", "drtp"]), penalty=st.sampled_from([0.0, 0.3]),
       batch=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_dfa_gradients_in_one_normalisation_equal_the_per_block_form_to_the_bit(
    rule, penalty, batch, seed
):
    # DFA normalises its L signals together (one set of small operations, not L); the result
    # must be the generic per-block form's, bit for bit, at every batch size
    model = tiny("resmlp", seed=seed % 7)
    method = set_up(rule, model, seed=seed, penalty=penalty)
    x, y = batch_for(model, n=batch, seed=seed)
    with torch.no_grad():
        hidden = method.anatomy.hidden_states(x)
        logits = method.anatomy.readout(hidden[-1])
    branches = [b - a for a, b in zip(hidden[:-1], hidden[1:], strict=True)]
    fused = method.local_gradients(hidden, logits, y, branches)
    generic = LocalLossMethod.local_gradients(method, hidden, logits, y, branches)
    assert len(fused) == len(generic) == len(hidden)
    for l, (a, b) in enumerate(zip(fused, generic, strict=True)):
        assert torch.equal(a, b), f"g_{l} differs"


# -- the helpers ---------------------------------------------------------------------------
@given(st.integers(1, 6), st.integers(1, 9), st.floats(1e-3, 1e3), st.integers(0, 2**16))
def test_rms_normalise_gives_unit_rms_along_the_feature_axis(n, d, scale, seed):
    a = scale * torch.randn(n, 3, d, generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
    for axis in (-1, 1):
        rms = rms_normalise(a, axis).pow(2).mean(dim=axis).sqrt()
        raw = a.pow(2).mean(dim=axis).sqrt()
        torch.testing.assert_close(rms, raw / (raw + 1e-6))


@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**16))
def test_along_features_is_a_matrix_product_on_the_feature_axis(n, d_in, d_out, seed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(n, d_in, 3, 2, generator=g, dtype=torch.float64)
    matrix = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)
    expected = torch.einsum("nchw,cd->ndhw", maps, matrix)
    torch.testing.assert_close(along_features(maps, matrix, 1), expected)
    flat = maps[:, :, 0, 0]
    torch.testing.assert_close(along_features(flat, matrix), flat @ matrix)


@given(st.integers(1, 8), st.integers(2, 7), st.integers(0, 2**16))
def test_output_error_is_the_cross_entropy_gradient_at_the_logits(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, classes, (n,), generator=g)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), logits)
    torch.testing.assert_close(output_error(logits.detach(), y), grad)


def test_eval_mode_restores_each_modules_own_mode():
    model = tiny("resnet")
    model.train()
    model.blocks[0].bn1.eval()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert not model.blocks[0].bn1.training and model.blocks[1].bn1.training and model.training


# -- the rules' credit ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resmlp", "vit", "resnet"])
@pytest.mark.parametrize("rule", LOCAL_RULES)
def test_credit_has_one_signal_per_hidden_state_shaped_like_it(arch, rule):
    model = tiny(arch)
    x, y = batch_for(model, n=5)
    credits = set_up(rule, model).credit(x, y)
    hidden = anatomy_of(model).hidden_states(x)
    assert [a.shape for a in credits] == [h.shape for h in hidden]
    assert all(torch.isfinite(a).all() and a.abs().sum() > 0 for a in credits)


def test_dfa_credit_is_the_projected_error():
    model = tiny("resmlp")
    x, y = batch_for(model)
    method = set_up("dfa", model)
    e = torch.softmax(model.eval()(x), dim=-1) - F.one_hot(y, C)
    credits = method.credit(x, y)
    b0, b1 = method.feedback
    assert method.feedback[0].shape == (16, C)
    torch.testing.assert_close(credits[0], e @ b0.T)
    torch.testing.assert_close(credits[1], e @ b0.T)
    torch.testing.assert_close(credits[2], e @ b1.T)


def test_sdfa_and_drtp_project_the_sign_of_the_error_and_the_negated_target():
    model = tiny("resmlp")
    x, y = batch_for(model)
    e = torch.softmax(model.eval()(x), dim=-1) - F.one_hot(y, C)
    sdfa, drtp = set_up("sdfa", model), set_up("drtp", model)
    torch.testing.assert_close(sdfa.credit(x, y)[2], e.sign() @ sdfa.feedback[1].T)
    torch.testing.assert_close(drtp.credit(x, y)[2], -F.one_hot(y, C).float() @ drtp.feedback[1].T)


def test_dfa_feedback_has_std_one_over_sqrt_classes():
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=(12,), num_classes=C, d_hidden=512, num_blocks=3)
    method = set_up("dfa", model)
    stds = torch.stack([b.std() for b in method.feedback])
    torch.testing.assert_close(stds, torch.full((3,), 1 / math.sqrt(C)), atol=0.03, rtol=0)


@pytest.mark.parametrize("arch", ["resmlp", "vit", "resnet"])
def test_fa_credit_at_h_L_is_the_true_mean_loss_gradient_then_feedback_top_down(arch):
    model = tiny(arch)
    x, y = batch_for(model)
    method = set_up("fa", model)
    credits = method.credit(x, y)
    with eval_mode(model):
        _, grads, _ = per_sample_gradients(model, x, y)
    torch.testing.assert_close(credits[-1], grads[-1] / x.shape[0])
    axis = anatomy_of(model).feature_axis
    for l, b in enumerate(method.feedback):
        torch.testing.assert_close(credits[l], along_features(credits[l + 1], b, axis))


def test_credit_leaves_the_models_mode_and_gradients_alone():
    model = tiny("resnet").train()
    before = copy.deepcopy(model.state_dict())
    set_up("fa", model).credit(*batch_for(model))
    assert model.training and all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"credit changed {key}"


# -- state, redraw, device ------------------------------------------------------------------
@pytest.mark.parametrize("rule", LOCAL_RULES)
def test_state_round_trip_gives_identical_credit(rule):
    model = tiny("resmlp")
    x, y = batch_for(model)
    trained = set_up(rule, model, seed=1)
    restored = set_up(rule, model, seed=2)
    assert not torch.equal(trained.credit(x, y)[1], restored.credit(x, y)[1])
    state = trained.state_dict()
    assert sorted(state) == ["feedback.0", "feedback.1"]
    restored.load_state_dict(state)
    for a, b in zip(trained.credit(x, y), restored.credit(x, y), strict=True):
        assert torch.equal(a, b)


def test_load_state_dict_names_a_missing_key_and_a_wrong_shape():
    method = set_up("dfa", tiny("resmlp"))
    with pytest.raises(MethodError, match="feedback.1"):
        method.load_state_dict({"feedback.0": method.feedback[0]})
    with pytest.raises(MethodError, match=r"feedback\.1 must have shape \(16, 4\)"):
        method.load_state_dict({"feedback.0": method.feedback[0], "feedback.1": torch.zeros(3)})


@pytest.mark.parametrize("rule", LOCAL_RULES)
def test_redraw_replaces_every_feedback_matrix_with_the_same_shapes(rule):
    method = set_up(rule, tiny("resmlp"))
    before = [b.clone() for b in method.feedback]
    assert method.redraw_feedback(torch.Generator().manual_seed(99))
    assert [b.shape for b in method.feedback] == [b.shape for b in before]
    assert all(not torch.equal(b, a) for a, b in zip(before, method.feedback, strict=True))


def test_the_same_generator_seed_draws_the_same_feedback():
    first, second = set_up("dfa", tiny("resmlp"), seed=5), set_up("dfa", tiny("resmlp"), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first.feedback, second.feedback, strict=True))


def test_feedback_lives_on_the_models_device_and_dtype():
    model = tiny("resmlp").double()
    method = set_up("fa", model)
    x, y = batch_for(model)
    method.step(x.double(), y)
    assert all(b.device == torch.device("cpu") for b in method.feedback)
    assert method.credit(x.double(), y)[0].dtype == torch.float64


# -- options and errors ---------------------------------------------------------------------
def test_options_are_typed_and_kept():
    assert get_method("dfa", penalty="0.01", clip="1").options == {"penalty": 0.01, "clip": 1.0}
    assert get_method("fa").options == {"penalty": 0.0, "clip": None}


@pytest.mark.parametrize(
    ("options", "message"),
    [({"penalty": -1}, "penalty must be >= 0"), ({"penalty": "x"}, "penalty must be a number"),
     ({"clip": 0}, "clip must be > 0"), ({"penalty": float("inf")}, "penalty must be a number"),
     ({"lr": 1}, "bad option")],
)
def test_bad_options_are_method_errors(options, message):
    with pytest.raises(MethodError, match=message):
        get_method("dfa", **options)


def test_step_before_setup_says_to_set_up():
    with pytest.raises(MethodError, match="not set up"):
        get_method("dfa").step(torch.zeros(1, 12), torch.zeros(1, dtype=torch.long))


def test_a_local_credit_of_the_wrong_shape_is_named():
    class Broken(LocalLossMethod):
        name = "broken"

        def local_credit(self, hidden, logits, y):
            return [h[:, :3] for h in hidden]

    model = tiny("resmlp")
    method = Broken()
    method.setup(model, C, torch.Generator())
    with pytest.raises(MethodError, match=r"Broken.: local_credit returned signals shaped"):
        method.step(*batch_for(model))


def test_dfa_on_a_model_without_blocks_points_to_shallow():
    model = build_model("resmlp", input_shape=(12,), num_classes=C, d_hidden=16, num_blocks=0)
    with pytest.raises(MethodError, match="shallow"):
        set_up("dfa", model)


def test_fa_on_a_plain_mlp_is_classic_layerwise_fa():
    from fa_checks.methods.feedback import ClassicFA

    model = tiny("mlp")
    method = set_up("fa", model)
    assert isinstance(method.rule, ClassicFA) and method.optimizer is method.rule.optimizer
    x, y = batch_for(model)
    assert len(method.credit(x, y)) == anatomy_of(model).num_blocks + 1
    before = copy.deepcopy(model.state_dict())
    method.step(x, y)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert set(method.state_dict()) == set(method.rule.state_dict())
    with pytest.raises(MethodError, match="no penalty or clip"):
        set_up("fa", tiny("mlp"), penalty=0.1)


def test_fa_keeps_working_through_a_deepcopy():
    method = set_up("fa", tiny("resmlp"))
    clone = copy.deepcopy(method)
    assert clone.redraw_feedback(torch.Generator().manual_seed(1))
    assert not torch.equal(clone.feedback[0], method.feedback[0])


# -- the rules learn -------------------------------------------------------------------------
@pytest.mark.parametrize("rule", LOCAL_RULES)
def test_training_lowers_the_loss_of_a_random_teacher_task(rule):
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=(12,), num_classes=C, d_hidden=32, num_blocks=2)
    method = get_method(rule)
    method.setup(model, C, torch.Generator().manual_seed(0), optimizer=adamw)
    x, y = batch_for(model, n=256)
    before, after = loss_before_and_after(method, x, y, steps=60)
    assert after < 0.8 * before
