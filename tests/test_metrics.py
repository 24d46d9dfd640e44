"""Credit metrics: identities of the cosines, the batched perturbation correlation against the
straightforward loop, its closed-form limit, nudging, the fresh-feedback null, drift, alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from doubles import ToyDFA
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import pearsonr
from torch import Tensor, nn

from fa_checks.diagnostics import metrics
from fa_checks.methods.base import Method
from fa_checks.models import build_model
from fa_checks.models.anatomy import anatomy_of, per_sample_gradients, per_sample_loss

TINY = {
    "resmlp": ((12,), {"d_hidden": 16, "num_blocks": 2}),
    "vit": ((3, 8, 8), {"d_model": 16, "n_heads": 2, "num_blocks": 1}),
    "resnet": ((3, 8, 8), {"width": 4, "num_blocks": 1}),
}


def tiny(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    shape, kwargs = TINY[arch]
    return build_model(arch, input_shape=shape, num_classes=5, **kwargs).to(dtype).eval()


def batch(arch: str, n: int = 24, seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *TINY[arch][0], generator=g, dtype=dtype)
    return x, torch.randint(0, 5, (n,), generator=g)


def noisy_copy(t: Tensor, noise: float, seed: int = 1) -> Tensor:
    """``t`` plus Gaussian noise of ``noise`` times t's per-sample RMS: a partly aligned signal."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(t.shape, generator=g, dtype=t.dtype)
    rms = t.reshape(t.shape[0], -1).pow(2).mean(dim=1).sqrt().reshape(-1, *[1] * (t.dim() - 1))
    return t + noise * rms * z


arrays = st.integers(1, 6).flatmap(
    lambda n: st.integers(1, 8).flatmap(
        lambda d: st.lists(
            st.floats(-100, 100, allow_nan=False, width=32), min_size=n * d, max_size=n * d
        ).map(lambda v: torch.tensor(v, dtype=torch.float32).reshape(n, d))
    )
)


# -- cosine ----------------------------------------------------------------------------------
def test_cosine_of_tiny_gradients_is_the_true_cosine_where_a_clamp_gives_zero() -> None:
    a = torch.randn(8, 32)
    g = 1e-20 * a  # a collapsed BP reference: norms far below torch's 1e-8 clamp
    ours = metrics.cosine(a, g)
    torch.testing.assert_close(ours, torch.ones(8, dtype=torch.float64))
    assert F.cosine_similarity(a, g, dim=1).abs().max() < 1e-6  # what the seeds measured


def test_cosine_is_float64_per_sample_over_all_non_batch_dims() -> None:
    a, b = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    a64, b64 = a.double().flatten(1), b.double().flatten(1)
    expected = (a64 * b64).sum(1) / (a64.norm(dim=1) * b64.norm(dim=1))
    ours = metrics.cosine(a, b)
    assert ours.dtype == torch.float64 and ours.shape == (5,)
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_cosine_of_a_zero_sample_is_zero_not_nan() -> None:
    a = torch.randn(3, 4)
    b = a.clone()
    b[1] = 0
    assert metrics.cosine(a, b).tolist()[1] == 0.0


@given(arrays, st.floats(1e-3, 1e3))
def test_cosine_is_symmetric_bounded_and_scale_free(a: Tensor, scale: float) -> None:
    b = torch.flip(a, dims=[1]) + 0.5
    c = metrics.cosine(a, b)
    torch.testing.assert_close(c, metrics.cosine(b, a))
    scaled = scale * a.double()  # in float32 a subnormal entry would scale to zero
    torch.testing.assert_close(c, metrics.cosine(scaled, b), rtol=1e-6, atol=1e-6)
    assert bool((c.abs() <= 1 + 1e-12).all())


def test_cosine_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"shapes differ, \(2, 3\) vs \(2, 4\)"):
        metrics.cosine(torch.zeros(2, 3), torch.zeros(2, 4))


# -- pooled cosine ------------------------------------------------------------------------------
def test_pooled_cosine_weights_samples_by_their_norms() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # aligned for sample 0, orthogonal for sample 1
    assert metrics.pooled_cosine(a, g) == pytest.approx(3.0 / math.sqrt(2 * 10))
    assert metrics.cosine(a, g).mean().item() == pytest.approx(0.5)


@given(arrays)
def test_pooled_cosine_of_one_sample_is_its_cosine(a: Tensor) -> None:
    one = a[:1]
    b = one.flip(1) - 1.0
    assert metrics.pooled_cosine(one, b) == pytest.approx(metrics.cosine(one, b).item(), abs=1e-9)


# -- perturbation correlation ---------------------------------------------------------------
def straightforward_rho(h, a, loss_fn, epsilon, directions, seed) -> float:
    """The research code's loop: one forward pass and one host copy per direction."""
    generator = torch.Generator().manual_seed(seed)
    base = loss_fn(h)
    predicted, actual = [], []
    for _ in range(directions):
        v = torch.randn(h.shape, generator=generator, dtype=h.dtype)
        v = v / v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (v.dim() - 1))
        predicted.append((a.double() * (epsilon * v).double()).flatten(1).sum(1).numpy())
        actual.append((loss_fn(h + epsilon * v) - base).double().numpy())
    return float(pearsonr(np.concatenate(predicted), np.concatenate(actual))[0])


@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("chunk_size", [1, 5, None])
def test_perturbation_correlation_equals_the_loop_over_the_same_directions(
    arch: str, chunk_size: int | None
) -> None:
    model, (x, y) = tiny(arch), batch(arch)
    hidden, grads, _ = per_sample_gradients(model, x, y)
    layer = 1
    a = noisy_copy(grads[layer], noise=1.0)
    loss_fn = metrics.layer_loss(model, layer, y)
    with torch.no_grad():
        expected = straightforward_rho(hidden[layer], a, loss_fn, 1e-2, 12, seed=3)
    ours = metrics.perturbation_correlation(
        hidden[layer], a, loss_fn, epsilon=1e-2, M=12,
        generator=torch.Generator().manual_seed(3), chunk_size=chunk_size,
    )
    assert abs(expected) > 0.1, "the test signal should correlate"
    assert ours == pytest.approx(expected, abs=1e-5)


def test_perturbation_correlation_maps_an_unstackable_loss_with_vmap() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    hidden, grads, _ = per_sample_gradients(model, x, y)
    a = noisy_copy(grads[0], noise=0.5)
    stacked = metrics.layer_loss(model, 0, y)

    def plain(h: Tensor) -> Tensor:  # a user's loss: exactly N rows, labels captured
        return per_sample_loss(anatomy_of(model).forward_from(0, h), y)

    kwargs = {"epsilon": 1e-2, "M": 8}
    rho_stacked = metrics.perturbation_correlation(
        hidden[0], a, stacked, generator=torch.Generator().manual_seed(0), **kwargs
    )
    rho_vmap = metrics.perturbation_correlation(
        hidden[0], a, plain, generator=torch.Generator().manual_seed(0), **kwargs
    )
    assert rho_vmap == pytest.approx(rho_stacked, abs=1e-6)


def test_perturbation_correlation_converges_to_the_pooled_cosine() -> None:
    """In float64 with a small epsilon, the second-order term is negligible, so rho is a
    Pearson estimate of the pooled cosine over M * N pairs with standard error about
    (1 - p^2) / sqrt(M * N).  We require the error at M = 1024 to be within 4 such standard
    errors and well below the error at M = 4."""
    model, (x, y) = tiny("resmlp", dtype=torch.float64), batch("resmlp", n=32, dtype=torch.float64)
    hidden, grads, _ = per_sample_gradients(model, x, y)
    layer = 1
    a = noisy_copy(grads[layer], noise=1.5)
    loss_fn = metrics.layer_loss(model, layer, y)
    limit = metrics.pooled_cosine(a, grads[layer])
    assert metrics.perturbation_correlation_limit(hidden[layer], a, loss_fn) == pytest.approx(
        limit, abs=1e-12
    )
    errors = {}
    for directions in (4, 1024):
        rho = metrics.perturbation_correlation(
            hidden[layer], a, loss_fn, epsilon=1e-6, M=directions,
            generator=torch.Generator().manual_seed(11),
        )
        errors[directions] = abs(rho - limit)
    standard_error = (1 - limit**2) / math.sqrt(1024 * 32)
    assert 0.2 < limit < 0.9, "a partly aligned signal"
    assert errors[1024] < 4 * standard_error
    assert errors[1024] < errors[4]


def test_perturbation_correlation_of_the_true_gradient_is_near_one() -> None:
    model, (x, y) = tiny("resmlp", dtype=torch.float64), batch("resmlp", dtype=torch.float64)
    hidden, grads, _ = per_sample_gradients(model, x, y)
    rho = metrics.perturbation_correlation(
        hidden[1], grads[1], metrics.layer_loss(model, 1, y), epsilon=1e-6, M=16,
        generator=torch.Generator().manual_seed(0),
    )
    assert rho == pytest.approx(1.0, abs=1e-6)


def test_perturbation_correlation_without_spread_is_nan_not_zero() -> None:
    h = torch.randn(4, 3)
    rho = metrics.perturbation_correlation(h, torch.zeros(4, 3), lambda t: t.sum(1), M=4)
    assert math.isnan(rho)


def test_perturbation_correlation_rejects_bad_arguments() -> None:
    h = torch.randn(4, 3)
    with pytest.raises(ValueError, match="at least 2 directions"):
        metrics.perturbation_correlation(h, h, lambda t: t.sum(1), M=1)
    with pytest.raises(ValueError, match="chunk_size"):
        metrics.perturbation_correlation(h, h, lambda t: t.sum(1), M=4, chunk_size=0)


def test_layer_loss_tiles_labels_for_stacked_copies() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp", n=6)
    h = anatomy_of(model).hidden_states(x)[1].detach()
    loss = metrics.layer_loss(model, 1, y)
    torch.testing.assert_close(loss(torch.cat([h, h, h])), loss(h).repeat(3))
    with pytest.raises(ValueError, match="not a multiple"):
        loss(h[:4])
    with pytest.raises(ValueError, match="outside h_0..h_2"):
        metrics.layer_loss(model, 3, y)


# -- nudging ---------------------------------------------------------------------------------
def test_nudging_is_first_order_in_eta() -> None:
    """For a tiny step the change is -eta * mean_i <g_i, a_i / rms(a_i)>."""
    model, (x, y) = tiny("resmlp", dtype=torch.float64), batch("resmlp", dtype=torch.float64)
    hidden, grads, _ = per_sample_gradients(model, x, y)
    a = noisy_copy(grads[1], noise=1.0)
    eta = 1e-7
    rms = a.pow(2).mean(dim=1, keepdim=True).sqrt()
    expected = -eta * (grads[1] * a / rms).sum(dim=1).mean().item()
    got = metrics.nudging(hidden[1], a, metrics.layer_loss(model, 1, y), eta=eta)
    assert got == pytest.approx(expected, rel=1e-4)


def test_nudging_along_the_gradient_lowers_the_loss_and_a_zero_signal_does_nothing() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    hidden, grads, _ = per_sample_gradients(model, x, y)
    loss = metrics.layer_loss(model, 2, y)
    assert metrics.nudging(hidden[2], grads[2], loss) < 0
    assert metrics.nudging(hidden[2], -grads[2], loss) > 0
    assert metrics.nudging(hidden[2], torch.zeros_like(grads[2]), loss) == 0.0


# -- fresh-feedback null ----------------------------------------------------------------------
class ExactCredit(ToyDFA):
    """Redraws feedback but ignores it: its credit is the true gradient, so its null is 1."""

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor]:
        return per_sample_gradients(self.model, x, y)[1]


class NoFeedback(ToyDFA):
    def redraw_feedback(self, generator: torch.Generator) -> bool:
        if not hasattr(self, "feedback"):
            return super().redraw_feedback(generator)
        return False


def set_up(cls: type[Method]) -> Method:
    method = cls()
    method.setup(tiny("resmlp"), 5, torch.Generator().manual_seed(0))
    return method


def test_fresh_feedback_null_redraws_a_copy_and_measures_its_cosines() -> None:
    method = set_up(ToyDFA)
    x, y = batch("resmlp", n=32)
    original = [b.clone() for b in method.feedback]
    null = metrics.fresh_feedback_null(method, x, y, draws=3, seed=5)
    assert null is not None and null.draws == 3 and len(null.mean) == 3
    # the original rule is untouched, and its model was shared rather than copied
    for before, after in zip(original, method.feedback, strict=True):
        assert torch.equal(before, after)
    # the same redraws done by hand give the same cosines
    grads = per_sample_gradients(method.model, x, y)[1]
    generator = torch.Generator().manual_seed(5)
    by_hand = ToyDFA()
    by_hand.setup(method.model, 5, torch.Generator().manual_seed(0))
    for k in range(3):
        by_hand.redraw_feedback(generator)
        cosines = metrics.mean_cosines(by_hand.credit(x, y), grads)
        assert null.cosines[k] == pytest.approx(cosines, abs=1e-12)
    per_layer = np.array(null.cosines)
    assert null.mean == pytest.approx(per_layer.mean(axis=0).tolist())
    assert null.std == pytest.approx(per_layer.std(axis=0, ddof=1).tolist())
    assert null.deep_mean == pytest.approx(per_layer[:, 1:].mean(axis=1).mean())


def test_fresh_feedback_null_shares_the_model() -> None:
    method = set_up(ToyDFA)
    clone = metrics._shared_copy(method)
    assert clone.model is method.model
    assert clone.layer is method.layer  # a copied layer would reroute a model nobody runs
    assert clone.optimizer is method.optimizer
    assert clone.feedback[0] is not method.feedback[0]


def test_fresh_feedback_null_of_an_exact_rule_is_one_with_no_spread() -> None:
    null = metrics.fresh_feedback_null(set_up(ExactCredit), *batch("resmlp"), draws=3)
    assert null is not None
    assert null.mean == pytest.approx([1.0, 1.0, 1.0], abs=1e-9)
    assert null.std == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)


def test_fresh_feedback_null_is_none_without_feedback_and_needs_two_draws() -> None:
    assert metrics.fresh_feedback_null(set_up(NoFeedback), *batch("resmlp")) is None
    with pytest.raises(ValueError, match="at least 2 draws"):
        metrics.fresh_feedback_null(set_up(ToyDFA), *batch("resmlp"), draws=1)


def test_fresh_feedback_null_on_a_training_model_leaves_its_statistics_alone() -> None:
    # a BatchNorm model in train mode: the reference gradients are taken in eval mode, as the
    # credit is, so the running statistics do not move and the figures are those of eval mode
    from fa_checks.methods import get_method

    model = tiny("resnet").train()
    method = get_method("dfa")
    method.setup(model, 5, torch.Generator().manual_seed(0))
    x, y = batch("resnet")
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    null = metrics.fresh_feedback_null(method, x, y, draws=2)
    assert model.training and all(m.training for m in model.modules())
    for key, before in statistics.items():
        assert torch.equal(model.state_dict()[key], before), key
    model.eval()
    expected = metrics.fresh_feedback_null(method, x, y, draws=2)
    assert null is not None and expected is not None
    for got, want in zip(null.cosines, expected.cosines, strict=True):
        assert got == pytest.approx(want, abs=1e-12)


# -- feature drift -------------------------------------------------------------------------------
def test_feature_drift_of_identical_states_is_zero() -> None:
    model = tiny("resmlp")
    drift = metrics.feature_drift(model, model.state_dict())
    assert drift and all(v == 0.0 for v in drift.values())


def test_feature_drift_is_the_relative_frobenius_change() -> None:
    before = {"w": torch.randn(4, 3), "bias": torch.zeros(3), "steps": torch.tensor(3)}
    after = {"w": 1.5 * before["w"], "bias": torch.ones(3), "steps": torch.tensor(9)}
    drift = metrics.feature_drift(before, after)
    assert drift == {"w": pytest.approx(0.5)}  # zero-initialised and integer tensors left out


def test_feature_drift_names_a_missing_or_reshaped_tensor() -> None:
    with pytest.raises(ValueError, match="'w' is in the initial state but not the final"):
        metrics.feature_drift({"w": torch.ones(2)}, {})
    with pytest.raises(ValueError, match=r"'w' changed shape \(2,\) -> \(3,\)"):
        metrics.feature_drift({"w": torch.ones(2)}, {"w": torch.ones(3)})


# -- alignment -----------------------------------------------------------------------------------
def test_alignment_of_the_transpose_is_zero() -> None:
    W = torch.randn(5, 3)  # noqa: N806
    assert metrics.alignment(W, W.T.clone()) == (0.0, 0.0)


def test_alignment_known_cases() -> None:
    W = torch.randn(5, 3)  # noqa: N806
    opposite = metrics.alignment(W, -W.T)
    assert opposite.ratio == pytest.approx(2.0) and opposite.angle_deg == pytest.approx(180.0)
    doubled = metrics.alignment(W, 2 * W.T)
    assert doubled.ratio == pytest.approx(1.0) and doubled.angle_deg == pytest.approx(0.0, abs=1e-5)
    E = torch.zeros(2, 2)  # noqa: N806
    E[0, 0] = 1.0
    F_ = torch.zeros(2, 2)  # noqa: N806
    F_[1, 0] = 1.0  # orthogonal to E^T, same norm
    orthogonal = metrics.alignment(E, F_)
    assert orthogonal.ratio == pytest.approx(math.sqrt(2)) and orthogonal.angle_deg == 90.0


@given(arrays, st.floats(1e-2, 1e2))
def test_alignment_angle_is_scale_free_and_bounded(W: Tensor, scale: float) -> None:  # noqa: N803
    B = W.T.flip(0) + 0.25  # noqa: N806
    angle = metrics.alignment(W, B).angle_deg
    if math.isnan(angle):  # a zero matrix has no direction
        assert float(W.norm()) == 0 or float(B.norm()) == 0
        return
    assert 0.0 <= angle <= 180.0
    scaled = scale * B.double()  # scaling in float32 would round each entry differently
    assert metrics.alignment(W, scaled).angle_deg == pytest.approx(angle, abs=1e-6)


def test_alignment_rejects_a_feedback_not_shaped_like_the_transpose() -> None:
    with pytest.raises(ValueError, match=r"shaped like W\^T \(3, 5\), got \(5, 3\)"):
        metrics.alignment(torch.ones(5, 3), torch.ones(5, 3))
