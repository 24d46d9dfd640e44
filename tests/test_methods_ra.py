"""Reciprocal alignment: the B update of each variant is the gradient it claims to be."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from fa_checks.methods import MethodError, get_method
from fa_checks.methods.feedback import ClassicFA
from fa_checks.models import build_model

LR_B = 0.05


def mlp(seed: int = 0, d_in: int = 12, **kwargs):
    torch.manual_seed(seed)
    options = {"d_hidden": 16, "depth": 4, **kwargs}
    return build_model("mlp", input_shape=(d_in,), num_classes=4, **options)


def set_up(rule, model, seed: int = 1):
    rule.setup(model, 4, torch.Generator().manual_seed(seed))
    return rule


def batch(n: int = 32, d_in: int = 12, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randint(0, 4, (n,), generator=g)


def activations(model, x):
    """``[x, h_0, ..., h_L, logits]``: every layer's input and the last one's output."""
    with torch.no_grad():
        hidden = [model.embed(x)]
        for l in range(model.num_blocks):
            hidden.append(model.step(l, hidden[-1]))
        return [x.reshape(x.shape[0], -1), *hidden, model.readout(hidden[-1])]


def b_after_one_step(name: str, model, x, y, **options):
    rule = set_up(get_method(name, **options), copy.deepcopy(model))
    before = [b.clone() for b in rule.feedback]
    figures = rule.step(x, y)
    return before, [b.clone() for b in rule.feedback], figures, rule


@given(
    depth=st.integers(2, 4),
    activation=st.sampled_from(["linear", "relu", "tanh"]),
    layer_norm=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_recon_update_is_the_gradient_of_the_layer_local_reconstruction_loss(
    depth, activation, layer_norm, seed
):
    model = mlp(seed, depth=depth, activation=activation, layer_norm=layer_norm)
    x, y = batch(seed=seed)
    acts = activations(model, x)
    before, after, figures, _ = b_after_one_step("ra_recon", model, x, y)
    total = 0.0
    for l, (b0, b1) in enumerate(zip(before, after, strict=True)):
        leaf = b0.clone().requires_grad_(True)
        loss = 0.5 * (acts[l + 1] @ leaf - acts[l]).pow(2).sum(-1).mean()
        (grad,) = torch.autograd.grad(loss, leaf)
        torch.testing.assert_close(b1, b0 - LR_B * grad)
        total += 2 * float(loss.detach())
    assert figures["recon_loss"] == pytest.approx(total, rel=1e-5)


def reverse_loss(acts, feedback, layer_norm: bool):
    """``0.5 * mean_n ||b_0 - x||^2`` of the pathway ``b_l = LN(b_{l+1} B_l)``, plain autograd."""
    signal = acts[-1]
    for l in reversed(range(len(feedback))):
        signal = signal @ feedback[l]
        if layer_norm and l > 0:
            signal = F.layer_norm(signal, signal.shape[-1:])
    return 0.5 * (signal - acts[0]).pow(2).sum(-1).mean()


@pytest.mark.parametrize("layer_norm", [True, False])
def test_rev_update_is_backprop_on_the_reverse_task_when_feedback_equals_weights(layer_norm):
    # the reverse pathway's weights are B^T and its feedback is W^T: with B = W that is backprop
    model = mlp(layer_norm=layer_norm)
    x, y = batch()
    acts = activations(model, x)
    rule = set_up(get_method("ra_rev"), model)
    weights = rule.weights()
    rule.load_state_dict({f"feedback.{i}": w.detach().clone() for i, w in enumerate(weights)})
    before = [b.clone() for b in rule.feedback]
    figures = rule.step(x, y)
    leaves = [b.clone().requires_grad_(True) for b in before]
    loss = reverse_loss(acts, leaves, layer_norm)
    grads = torch.autograd.grad(loss, leaves)
    for b0, b1, g in zip(before, rule.feedback, grads, strict=True):
        torch.testing.assert_close(b1, b0 - LR_B * g)
    assert figures["rev_loss"] == pytest.approx(2 * float(loss.detach()), rel=1e-5)


def test_rev_update_without_layer_norm_is_the_research_codes_rule():
    # without LayerNorm the research code's b_grads_rev is exact; written here in its own terms
    # (its B is our B transposed): eta_0 = (b_0 - x) / N, eta_{l+1} = eta_l W_l^T,
    # dB_l = eta_l^T b_{l+1}
    model = mlp(layer_norm=False, activation="tanh")
    x, y = batch()
    acts = activations(model, x)
    before, after, _, rule = b_after_one_step("ra_rev", model, x, y)
    linears = [model.first.linear, *(b.linear for b in model.blocks), model.out_head]
    weights = [m.weight.detach() for m in linears]
    seed_b = [b.T for b in before]
    down = [None] * (len(seed_b) + 1)
    down[-1] = acts[-1]
    for l in range(len(seed_b), 0, -1):
        down[l - 1] = down[l] @ seed_b[l - 1].T
    eta = [(down[0] - acts[0]) / x.shape[0]]
    for l in range(1, len(seed_b) + 1):
        eta.append(eta[l - 1] @ weights[l - 1].T)
    for l, (b0, b1) in enumerate(zip(before, after, strict=True)):
        seed_grad = eta[l].T @ down[l + 1]
        torch.testing.assert_close(b1, b0 - LR_B * seed_grad.T)


@pytest.mark.parametrize("lam,same_as", [(0.0, "ra_rev"), (1.0, "ra_recon")])
def test_comb_at_the_ends_is_rev_or_recon(lam, same_as):
    model = mlp()
    x, y = batch()
    _, comb, figures, _ = b_after_one_step("ra_comb", model, x, y, lam=lam)
    _, pure, _, _ = b_after_one_step(same_as, model, x, y)
    for a, b in zip(comb, pure, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert {"rev_loss", "recon_loss"} <= set(figures)


def test_comb_blends_the_two_updates():
    model = mlp()
    x, y = batch()
    before, comb, _, _ = b_after_one_step("ra_comb", model, x, y, lam=0.25)
    _, rev, _, _ = b_after_one_step("ra_rev", model, x, y)
    _, recon, _, _ = b_after_one_step("ra_recon", model, x, y)
    for b0, c, r, s in zip(before, comb, rev, recon, strict=True):
        torch.testing.assert_close(c - b0, 0.75 * (r - b0) + 0.25 * (s - b0))


@pytest.mark.parametrize("name", ["ra_rev", "ra_recon", "ra_comb"])
def test_weights_are_trained_by_feedback_alignment_through_b(name):
    # same B, same batch: RA's W update is classic FA's (exact LN and activation derivatives)
    model = mlp(activation="relu")
    x, y = batch()
    ra = set_up(get_method(name), copy.deepcopy(model))
    fa = set_up(ClassicFA(), copy.deepcopy(model))
    fa.load_state_dict(ra.state_dict())
    ra_figures = ra.step(x, y)
    fa_figures = fa.step(x, y)
    assert ra_figures["loss"] == fa_figures["loss"]
    for a, b in zip(ra.model.parameters(), fa.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_step_reports_the_seeds_figures():
    model = mlp(depth=3)
    x, y = batch()
    _, _, figures, rule = b_after_one_step("ra_comb", model, x, y)
    assert set(figures) == {"loss", "rev_loss", "recon_loss", "alignment_0", "alignment_1",
                            "alignment_2"}
    assert [figures[f"alignment_{l}"] for l in range(3)] == rule.alignment()


def test_recon_improves_alignment_relative_to_fa():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 12, generator=g)
    y = (x @ torch.randn(12, 4, generator=g)).argmax(1)
    ends = {}
    for name in ["ra_recon", "fa"]:
        rule = set_up(ClassicFA() if name == "fa" else get_method(name), mlp(depth=3))
        start = rule.alignment()
        for s in range(150):
            idx = torch.arange(32) + (32 * s) % 256
            rule.step(x[idx], y[idx])
        ends[name] = rule.alignment()
    for recon, fa, s0 in zip(ends["ra_recon"], ends["fa"], start, strict=True):
        assert recon < 0.85 * fa
        assert recon < s0


@pytest.mark.parametrize("name", ["ra_rev", "ra_recon", "ra_comb"])
def test_state_round_trip_and_redraw(name):
    x, y = batch()
    rule = set_up(get_method(name), mlp())
    rule.step(x, y)
    twin = set_up(get_method(name), copy.deepcopy(rule.model), seed=9)
    twin.load_state_dict(rule.state_dict())
    for a, b in zip(twin.credit(x, y), rule.credit(x, y), strict=True):
        assert torch.equal(a, b)
    assert twin.redraw_feedback(torch.Generator().manual_seed(4))
    assert not torch.equal(twin.feedback[0], rule.feedback[0])


def test_ra_needs_the_plain_mlp():
    model = build_model("resmlp", input_shape=(12,), num_classes=4, d_hidden=8, num_blocks=1)
    with pytest.raises(MethodError, match="mlp"):
        set_up(get_method("ra_recon"), model)


@pytest.mark.parametrize("options,match", [({"lam": 1.5}, "lam"), ({"lam": "a"}, "lam"),
                                           ({"lr_b": -0.1}, "lr_b")])
def test_bad_options_are_method_errors(options, match):
    with pytest.raises(MethodError, match=match):
        get_method("ra_comb", **options)


def test_lam_is_only_an_option_of_comb():
    with pytest.raises(MethodError, match="ra_rev"):
        get_method("ra_rev", lam=0.5)
    assert get_method("ra_comb", lam=0.3).options == {"gain": None, "lr_b": 0.05, "lam": 0.3}


def test_lr_b_zero_leaves_feedback_fixed():
    before, after, _, _ = b_after_one_step("ra_comb", mlp(), *batch(), lr_b=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
