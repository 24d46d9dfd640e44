"""The model anatomy: one definition of embed -> blocks -> readout for every architecture."""

from __future__ import annotations

import pytest
import torch
from doubles import embed_parameters
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fa_checks.models import ModelError, build_model, model_keywords
from fa_checks.models.anatomy import (
    AnatomyError,
    anatomy_of,
    per_sample_gradients,
    per_sample_loss,
    per_sample_norm,
)

TINY = {
    "resmlp": ((12,), {"d_hidden": 8, "num_blocks": 2}),
    "mlp": ((12,), {"d_hidden": 8, "depth": 4, "activation": "tanh"}),
    "vit": ((3, 8, 8), {"d_model": 8, "n_heads": 2, "num_blocks": 2}),
    "resnet": ((3, 8, 8), {"width": 4, "num_blocks": 2}),
}


def tiny(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    shape, kwargs = TINY[arch]
    return build_model(arch, input_shape=shape, num_classes=5, **kwargs).eval()


def inputs(arch: str, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = TINY[arch][0]
    return torch.randn(n, *shape, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_forward_is_the_anatomy_chain(arch: str) -> None:
    model, (x, _) = tiny(arch), inputs(arch)
    anatomy = anatomy_of(model)
    hidden = anatomy.hidden_states(x)
    assert len(hidden) == anatomy.num_blocks + 1
    torch.testing.assert_close(anatomy.readout(hidden[-1]), model(x))
    for l in range(anatomy.num_blocks + 1):
        torch.testing.assert_close(anatomy.forward_from(l, hidden[l]), model(x))


@pytest.mark.parametrize("arch", sorted(TINY))
def test_step_is_skip_plus_branch(arch: str) -> None:
    model, (x, _) = tiny(arch), inputs(arch)
    anatomy = anatomy_of(model)
    h = anatomy.embed(x)
    for l in range(anatomy.num_blocks):
        expected = h + anatomy.branch(l, h) if anatomy.residual else anatomy.branch(l, h)
        torch.testing.assert_close(anatomy.step(l, h), expected)
        h = anatomy.step(l, h)


def test_resmlp_branch_is_the_block_output_not_the_stream() -> None:
    model = tiny("resmlp")
    anatomy = anatomy_of(model)
    h = torch.randn(4, 8)
    torch.testing.assert_close(anatomy.branch(0, h), model.blocks[0](h))
    assert not torch.allclose(anatomy.step(0, h), anatomy.branch(0, h))


@pytest.mark.parametrize("arch", sorted(TINY))
def test_parameter_groups_partition_the_model(arch: str) -> None:
    model = tiny(arch)
    anatomy = anatomy_of(model)
    groups = [embed_parameters(anatomy), anatomy.readout_parameters()]
    groups += [list(anatomy.block_parameters(l)) for l in range(anatomy.num_blocks)]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)), "a parameter sits in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}
    assert all(group for group in groups), "every group holds parameters"


class SeedStyleResMLP(nn.Module):
    """The research code's convention: blocks return the residual branch; out_ln, out_head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 4)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)) for _ in range(3)
        )
        self.out_ln = nn.LayerNorm(4)
        self.out_head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out_head(self.out_ln(h))


class MethodsModel(nn.Module):
    """A user's model that provides the anatomy as methods (skip inside its blocks)."""

    num_blocks = 2

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 4)
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.head = nn.Linear(4, 3)

    def embed(self, x):
        return self.inp(x)

    def step(self, l, h):
        return h + torch.tanh(self.layers[l](h))

    def readout(self, h):
        return self.head(h)

    def forward(self, x):
        return self.readout(self.step(1, self.step(0, self.embed(x))))


@pytest.mark.parametrize("cls", [SeedStyleResMLP, MethodsModel])
def test_user_models_are_read_through_the_same_anatomy(cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = cls()
    anatomy = anatomy_of(model)
    x = torch.randn(5, 6)
    torch.testing.assert_close(anatomy.logits(x), model(x))
    h = anatomy.embed(x)
    torch.testing.assert_close(anatomy.step(0, h), h + anatomy.branch(0, h))


def test_a_model_without_anatomy_is_a_clear_error() -> None:
    with pytest.raises(AnatomyError, match="embed.*blocks.*out_head"):
        anatomy_of(nn.Sequential(nn.Linear(2, 2)))


def test_per_sample_norm_covers_every_non_batch_dimension() -> None:
    t = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    expected = torch.stack([t[0].flatten().norm(), t[1].flatten().norm()])
    torch.testing.assert_close(per_sample_norm(t), expected)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_pool_and_broadcast_act_on_the_feature_axis(arch: str) -> None:
    model, (x, _) = tiny(arch), inputs(arch)
    anatomy = anatomy_of(model)
    h = anatomy.embed(x)
    d = anatomy.feature_dim(h)
    a = torch.randn(h.shape[0], d)
    spread = anatomy.broadcast(a, like=h)
    assert spread.shape == h.shape
    torch.testing.assert_close(anatomy.pool(spread), a)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_per_sample_gradients_match_one_sample_at_a_time(arch: str) -> None:
    model, (x, y) = tiny(arch), inputs(arch, n=4)
    hidden, grads, logits = per_sample_gradients(model, x, y)
    torch.testing.assert_close(logits, model(x))
    anatomy = anatomy_of(model)
    for i in range(x.shape[0]):
        hs = anatomy.hidden_states(x[i : i + 1])
        loss = per_sample_loss(anatomy.readout(hs[-1]), y[i : i + 1]).sum()
        own = torch.autograd.grad(loss, hs)
        for l, g in enumerate(own):
            torch.testing.assert_close(grads[l][i : i + 1], g, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


@given(copies=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_per_sample_gradients_do_not_depend_on_batch_size(copies: int, seed: int) -> None:
    model, (x, y) = tiny("resmlp", seed), inputs("resmlp", n=3, seed=seed)
    _, grads, _ = per_sample_gradients(model, x, y)
    _, repeated, _ = per_sample_gradients(model, x.repeat(copies, 1), y.repeat(copies))
    # float32 kernels for another batch shape round differently: near zero, an element can
    # differ by float32's resolution of the tensor's scale, not of its own value
    scale = float(grads[-1].abs().max())
    torch.testing.assert_close(repeated[-1][:3], grads[-1], rtol=1e-5, atol=1e-5 * scale)


def test_build_model_errors_name_the_problem() -> None:
    with pytest.raises(ModelError, match="unknown architecture 'nope'.*resmlp"):
        build_model("nope", input_shape=(4,), num_classes=2)
    with pytest.raises(ModelError, match="takes no keyword width.*d_hidden"):
        build_model("resmlp", input_shape=(4,), num_classes=2, width=3)
    with pytest.raises(ValueError, match="image inputs.*\\(40,\\).*resmlp"):
        build_model("vit", input_shape=(40,), num_classes=10)
    assert "num_blocks" in model_keywords("vit")


def test_spec_rebuilds_the_same_architecture() -> None:
    model = tiny("vit")
    spec = model.spec
    rebuilt = build_model(spec["arch"], **spec["kwargs"])
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_shallow_and_plain_stacks() -> None:
    shallow = build_model("resmlp", input_shape=(12,), num_classes=5, d_hidden=8, num_blocks=0)
    assert anatomy_of(shallow).num_blocks == 0
    assert shallow(torch.randn(2, 12)).shape == (2, 5)
    plain = build_model("resmlp", input_shape=(12,), num_classes=5, d_hidden=8, residual=False)
    anatomy = anatomy_of(plain)
    h = torch.randn(3, 8)
    assert not anatomy.residual
    torch.testing.assert_close(anatomy.step(0, h), anatomy.branch(0, h))


def test_resmlp_initialises_the_second_matrix_small() -> None:
    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=(40,), num_classes=10)
    w2 = model.blocks[0].w2.weight
    assert 0.008 < w2.std().item() < 0.012
    assert torch.count_nonzero(model.blocks[0].w2.bias) == 0


def test_per_sample_gradients_of_a_fully_frozen_model() -> None:
    model, (x, y) = tiny("resmlp"), inputs("resmlp")
    _, grads, _ = per_sample_gradients(model, x, y)
    model.requires_grad_(False)
    _, frozen, _ = per_sample_gradients(model, x, y)
    for g, f in zip(grads, frozen, strict=True):
        torch.testing.assert_close(f, g)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_branch_and_step_agree_with_the_model_bit_for_bit(arch: str) -> None:
    model, (x, _) = tiny(arch), inputs(arch)
    anatomy = anatomy_of(model)
    h = anatomy.embed(x)
    for l in range(anatomy.num_blocks):
        f, h_next = anatomy.branch_and_step(l, h)
        assert torch.equal(h_next, anatomy.step(l, h))
        assert torch.equal(f, anatomy.branch(l, h))
        h = h_next
