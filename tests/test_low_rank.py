"""DFA's low-rank gradients taken through a Linear in their factors (fa_checks.methods.low_rank).

The factored step must give autograd's dense gradients (to float rounding) for every rule that
uses it, at any batch size and feature size (also below the number of classes, where the
feedback's Gram matrix is singular); it must be taken where it applies and nowhere else.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from fa_checks.methods import get_method
from fa_checks.methods import local as local_module
from fa_checks.methods.low_rank import LinearCall, linear_backward_in_factors, linear_producing
from fa_checks.models import build_model

C = 5


def resmlp(d: int = 16, blocks: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("resmlp", input_shape=(7,), num_classes=C, d_hidden=d, num_blocks=blocks)
    for block in model.blocks:  # blocks that matter, so every gradient is far from zero
        nn.init.normal_(block.w2.weight, std=0.3)
    return model


def batch(n: int, seed: int = 1, shape: tuple[int, ...] = (7,)) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, C, (n,), generator=g)


def step_gradients(model: nn.Module, rule: str, x: Tensor, y: Tensor, *, low_rank: bool,
                   **options) -> dict[str, Tensor]:
    """Every parameter's gradient in one step of ``rule`` (read before the optimizer moves)."""
    method = get_method(rule, **options)
    method.setup(model, C, torch.Generator().manual_seed(3))
    method.low_rank = low_rank
    grads: dict[str, Tensor] = {}
    method.after_backward = lambda: grads.update(  # type: ignore[method-assign]
        {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    method.step(x, y)
    return grads


def assert_same_gradients(dense: dict[str, Tensor], factored: dict[str, Tensor]) -> None:
    """Equal to float32 rounding: the sums run in another order, and the rounding passes
    through the block's backward (600 random draws: at most 1.8e-5 of a tensor's largest
    entry, at d = 2; a wrong factor or scale is off by O(1))."""
    assert dense.keys() == factored.keys() and dense
    for name, expected in dense.items():
        scale = expected.abs().max().item()
        error = (factored[name] - expected).abs().max().item()
        assert error <= 1e-4 * scale + 1e-9, f"{name}: {error:.3g} off, scale {scale:.3g}"


@settings(max_examples=30, deadline=None)
@given(rule=st.sampled_from(["dfa", "sdfa", "drtp"]), n=st.integers(1, 40),
       d=st.sampled_from([2, 3, 8, 16]), seed=st.integers(0, 2**16))
def test_the_factored_step_gives_autograds_gradients(rule, n, d, seed):
    # d = 2, 3 < C: B^T B is singular, and the RMS from it must still be each sample's own
    model = resmlp(d, seed=seed % 5)
    x, y = batch(n, seed)
    dense = step_gradients(copy.deepcopy(model), rule, x, y, low_rank=False)
    factored = step_gradients(model, rule, x, y, low_rank=True)
    assert_same_gradients(dense, factored)


@pytest.fixture
def factored_calls(monkeypatch) -> list[LinearCall]:
    calls: list[LinearCall] = []

    def spy(call, factors):
        calls.append(call)
        return linear_backward_in_factors(call, factors)

    monkeypatch.setattr(local_module, "linear_backward_in_factors", spy)
    return calls


@pytest.mark.parametrize("rule", ["dfa", "sdfa", "drtp"])
def test_a_resmlp_takes_every_block_and_the_embedding_in_factors(rule, factored_calls):
    model = resmlp(blocks=3)
    step_gradients(model, rule, *batch(16), low_rank=True)
    weights = [call.weight for call in factored_calls]
    expected = [model.embed_layer.weight] + [block.w2.weight for block in model.blocks]
    assert sorted(map(id, weights)) == sorted(map(id, expected))


@pytest.mark.parametrize(("rule", "options", "low_rank"), [
    ("dfa", {"penalty": 1e-3}, True),  # the penalty's gradient has full rank
    ("dfa", {}, False),                # asked for the dense arithmetic
    ("fa", {}, True),                  # FA's credit is not low rank
])
def test_the_factored_path_is_not_taken_where_it_does_not_apply(rule, options, low_rank,
                                                                 factored_calls):
    step_gradients(resmlp(), rule, *batch(16), low_rank=low_rank, **options)
    assert factored_calls == []


def test_hidden_states_with_positions_keep_the_dense_step(factored_calls):
    torch.manual_seed(0)
    model = build_model("vit", input_shape=(3, 8, 8), num_classes=C, patch_size=4, d_model=16,
                        n_heads=2, num_blocks=2, mlp_ratio=2.0)
    x, y = batch(6, shape=(3, 8, 8))
    dense = step_gradients(copy.deepcopy(model), "dfa", x, y, low_rank=False)
    assert_same_gradients(dense, step_gradients(model, "dfa", x, y, low_rank=True))
    assert factored_calls == []


def test_the_vec_rules_dfa_phase_steps_as_dfa_in_factors(factored_calls):
    model = resmlp()
    step_gradients(model, "vec", *batch(16), low_rank=True, schedule="dfa_only")
    assert len(factored_calls) == 1 + 2


def test_a_new_draw_or_an_edited_matrix_is_seen_by_the_next_step():
    """The feedback's Gram matrix is kept between steps; it must follow the matrices."""
    model = resmlp()
    method = get_method("dfa")
    method.setup(model, C, torch.Generator().manual_seed(3))
    x, y = batch(12)
    hidden = method.anatomy.hidden_states(x)
    logits = method.anatomy.readout(hidden[-1])

    def check() -> None:
        _, factors = method.factored_gradients(hidden, logits, y, [])
        dense = method.local_gradients(hidden, logits, y, [])
        for (left, right), expected in zip(factors, dense, strict=True):
            torch.testing.assert_close(left @ right.T, expected, rtol=1e-5, atol=1e-7)

    with torch.no_grad():
        check()
        method.redraw_feedback(torch.Generator().manual_seed(9))
        check()
        method.feedback[1].mul_(3.0).add_(0.5)  # in place: same tensor, new version
        check()
        method.load_state_dict({f"feedback.{i}": torch.randn_like(b)
                                for i, b in enumerate(method.feedback)})
        check()


# -- reading a linear layer off the graph --------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), d_in=st.integers(1, 9), d_out=st.integers(1, 9),
       rank=st.integers(1, 4), bias=st.booleans(), input_grad=st.booleans(),
       seed=st.integers(0, 2**16))
def test_the_backward_in_factors_is_autograds(n, d_in, d_out, rank, bias, input_grad, seed):
    torch.manual_seed(seed)
    layer = nn.Linear(d_in, d_out, bias=bias).double()
    source = torch.randn(n, d_in, dtype=torch.float64, requires_grad=input_grad)
    u = source * 2 if input_grad else source  # a non-leaf input, as inside a block
    out = layer(u)
    left = torch.randn(n, rank, dtype=torch.float64)
    right = torch.randn(d_out, rank, dtype=torch.float64)
    call = linear_producing(out)
    assert call is not None and call.weight is layer.weight and call.input is u
    assert (call.bias is layer.bias) if bias else call.bias is None
    input_gradient = linear_backward_in_factors(call, (left, right))
    ours = [layer.weight.grad] + ([layer.bias.grad] if bias else [])
    layer.zero_grad(set_to_none=True)
    expected = torch.autograd.grad(out, [layer.weight] + ([layer.bias] if bias else [])
                                   + ([u] if input_grad else []), left @ right.T)
    for mine, theirs in zip(ours, expected, strict=False):
        torch.testing.assert_close(mine, theirs)
    if input_grad:
        torch.testing.assert_close(input_gradient, expected[-1])
    else:
        assert input_gradient is None


def test_only_a_plain_linear_output_is_read_as_one():
    layer = nn.Linear(4, 3)
    u = torch.randn(5, 4, requires_grad=True) * 1.0
    assert linear_producing(layer(u) + 1) is None  # the output of an addition
    assert linear_producing(F.gelu(layer(u))) is None
    assert linear_producing(layer(torch.randn(2, 5, 4))) is None  # positions
    assert linear_producing(torch.addmm(layer.bias, u, layer.weight.t())) is not None
    assert linear_producing(torch.addmm(layer.bias, u, layer.weight.t(), alpha=2)) is None
    scaled = nn.Linear(4, 3)
    out = F.linear(u, scaled.weight * 2, scaled.bias)  # a computed weight, not a leaf
    assert linear_producing(out) is None
    frozen = nn.Linear(4, 3).requires_grad_(False)
    assert linear_producing(frozen(u)) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear_producing(layer(u)) is None


def test_an_input_changed_in_place_after_the_forward_is_not_read():
    layer = nn.Linear(4, 3)
    u = torch.randn(5, 4, requires_grad=True) * 1.0
    out = layer(u)
    with torch.no_grad():
        u.add_(1.0)
    assert linear_producing(out) is None


def test_a_subclass_with_its_own_gradients_keeps_them(factored_calls):
    from fa_checks.methods.dfa import DFA

    class Halved(DFA):
        name = "halved-dfa-test"

        def local_gradients(self, hidden, logits, y, branches):
            return [g / 2 for g in super().local_gradients(hidden, logits, y, branches)]

    model = resmlp()
    x, y = batch(16)
    method = Halved()
    method.setup(model, C, torch.Generator().manual_seed(3))
    grads: dict[str, Tensor] = {}
    method.after_backward = lambda: grads.update(  # type: ignore[method-assign]
        {name: p.grad.clone() for name, p in model.named_parameters()})
    method.step(x, y)
    assert factored_calls == []
    full = step_gradients(resmlp(), "dfa", x, y, low_rank=False)
    torch.testing.assert_close(grads["blocks.0.w2.weight"], full["blocks.0.w2.weight"] / 2)
