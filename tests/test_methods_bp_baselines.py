"""Backpropagation and the baselines: bp, frozen, shallow."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from doubles import embed_parameters, loss_before_and_after
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fa_checks.methods import MethodError, get_method, method_class
from fa_checks.models import build_model
from fa_checks.models.anatomy import anatomy_of, per_sample_gradients

C = 4


def tiny(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    sizes = {
        "resmlp": {"input_shape": (12,), "d_hidden": 16, "num_blocks": 2},
        "mlp": {"input_shape": (12,), "d_hidden": 16, "depth": 3},
        "vit": {"input_shape": (3, 8, 8), "patch_size": 4, "d_model": 16, "n_heads": 2,
                "num_blocks": 2, "mlp_ratio": 2.0},
        "resnet": {"input_shape": (3, 8, 8), "width": 8, "num_blocks": 2},
    }[arch]
    return build_model(arch, num_classes=C, **{**sizes, **kwargs})


def batch_for(model: nn.Module, n: int = 24, seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.spec["kwargs"]["input_shape"], generator=g)
    teacher = torch.randn(x[0].numel(), C, generator=g)
    return x, (x.reshape(n, -1) @ teacher).argmax(dim=1)


def adamw(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)


def set_up(name: str, model: nn.Module):
    method = get_method(name)
    method.setup(model, C, torch.Generator().manual_seed(0), optimizer=adamw)
    return method


# -- bp ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["resmlp", "mlp", "vit", "resnet"])
def test_bp_step_is_a_plain_autograd_and_adamw_step(arch):
    model = tiny(arch)
    reference = copy.deepcopy(model)
    method = set_up("bp", model)
    optimizer = adamw(reference.parameters())
    for step in range(3):
        x, y = batch_for(model, seed=step)
        report = method.step(x, y)
        optimizer.zero_grad()
        loss = F.cross_entropy(reference(x), y)
        loss.backward()
        optimizer.step()
        assert report["loss"] == loss.item()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name
    for (name, b), c in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, c), name


@pytest.mark.parametrize("arch", ["resmlp", "vit", "resnet"])
def test_bp_credit_is_the_per_sample_gradient_in_eval_mode(arch):
    model = tiny(arch).train()
    x, y = batch_for(model, n=6)
    credits = set_up("bp", model).credit(x, y)
    assert model.training
    model.eval()
    _, grads, _ = per_sample_gradients(model, x, y)
    assert len(credits) == anatomy_of(model).num_blocks + 1
    for a, g in zip(credits, grads, strict=True):
        torch.testing.assert_close(a, g, rtol=0, atol=0)


@settings(max_examples=10)
@given(st.integers(1, 6), st.integers(0, 1000))
def test_bp_credit_does_not_depend_on_the_batch_it_is_computed_in(n, seed):
    model = tiny("resmlp")
    x, y = batch_for(model, n=n + 3, seed=seed)
    method = set_up("bp", model)
    whole = method.credit(x, y)
    part = method.credit(x[:n], y[:n])
    for a, b in zip(whole, part, strict=True):
        torch.testing.assert_close(a[:n], b, rtol=1e-5, atol=1e-7)


def test_bp_keeps_no_state():
    method = set_up("bp", tiny("resmlp"))
    assert method.state_dict() == {} and not method.redraw_feedback(torch.Generator())
    with pytest.raises(MethodError, match="no state"):
        method.load_state_dict({"feedback.0": torch.zeros(1)})


# -- frozen --------------------------------------------------------------------------------
def test_frozen_resnet_keeps_every_block_parameter_and_batchnorm_buffer_at_init():
    model = tiny("resnet")
    blocks_before = copy.deepcopy(model.blocks.state_dict())
    state = model.state_dict()
    rest_before = {k: v.clone() for k, v in state.items() if not k.startswith("blocks")}
    method = set_up("frozen", model)
    for step in range(4):
        model.train()  # as a trainer does every epoch
        method.step(*batch_for(model, seed=step))
    for key, value in model.blocks.state_dict().items():
        assert torch.equal(value, blocks_before[key]), f"frozen block changed {key}"
    changed = [k for k, v in model.state_dict().items() if k in rest_before
               and not torch.equal(v, rest_before[k])]
    assert "stem_conv.weight" in changed and "out_head.weight" in changed
    assert "stem_bn.running_mean" in changed  # BatchNorm outside the blocks still learns


def test_frozen_trains_only_embedding_and_readout():
    model = tiny("resmlp")
    method = set_up("frozen", model)
    anatomy = anatomy_of(model)
    trained = {id(p) for group in method.optimizer.param_groups for p in group["params"]}
    expected = {id(p) for p in [*embed_parameters(anatomy), *anatomy.readout_parameters()]}
    assert trained == expected
    assert method.credit(*batch_for(model)) is None


def test_frozen_needs_blocks():
    with pytest.raises(MethodError, match="has none"):
        set_up("frozen", tiny("resmlp", num_blocks=0))


# -- shallow -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arch", "overrides"),
    [("resmlp", {"num_blocks": 0}), ("vit", {"num_blocks": 0}), ("resnet", {"num_blocks": 0}),
     ("mlp", {"depth": 2})],
)
def test_shallow_removes_every_block(arch, overrides):
    assert method_class("shallow").model_overrides(arch) == overrides
    model = tiny(arch, **overrides)
    assert anatomy_of(model).num_blocks == 0
    method = set_up("shallow", model)
    before = copy.deepcopy(model.state_dict())
    method.step(*batch_for(model))
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert method.credit(*batch_for(model)) is None


def test_shallow_refuses_a_model_with_blocks_and_an_unknown_arch():
    with pytest.raises(MethodError, match="without blocks"):
        set_up("shallow", tiny("resmlp"))
    with pytest.raises(MethodError, match="not of 'mine'"):
        method_class("shallow").model_overrides("mine")


def test_other_methods_force_no_model_keywords():
    for name in ("bp", "frozen", "dfa", "fa", "sdfa", "drtp"):
        assert method_class(name).model_overrides("resmlp") == {}


# -- they learn ----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "overrides"), [("bp", {}), ("frozen", {}),
                                                  ("shallow", {"num_blocks": 0})])
def test_training_lowers_the_loss_of_a_random_teacher_task(name, overrides):
    model = tiny("resmlp", **{"d_hidden": 32, **overrides})
    method = set_up(name, model)
    x, y = batch_for(model, n=256)
    before, after = loss_before_and_after(method, x, y, steps=40)
    assert after < 0.7 * before


@pytest.mark.parametrize("name", ["bp", "frozen", "shallow"])
def test_rules_without_options_reject_any_option(name: str) -> None:
    with pytest.raises(MethodError, match=f"bad option for method '{name}'.*penalti"):
        get_method(name, penalti=0.1)


def test_a_misspelt_option_lists_the_accepted_ones() -> None:
    with pytest.raises(MethodError, match="no option 'penalti' \\(it takes penalty, clip\\)"):
        get_method("dfa", penalti=0.1)
