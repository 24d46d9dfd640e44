"""The protocol: D1, D2 and D3 on real (tiny) models, the verdict, non-finite models, the report's
JSON round trip, and the credit section."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from doubles import ToyDFA
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from fa_checks.claims import InForce, judge_entry
from fa_checks.diagnostics import metrics
from fa_checks.diagnostics.protocol import depth_utility, evaluate
from fa_checks.models import build_model
from fa_checks.models.anatomy import per_sample_gradients
from fa_checks.report import (
    CreditMetrics,
    DepthUtility,
    ReferenceValidity,
    Report,
    ScaleStability,
    Thresholds,
)

TINY = {
    "resmlp": ((12,), {"d_hidden": 16, "num_blocks": 2}),
    "mlp": ((12,), {"d_hidden": 16, "depth": 4, "activation": "tanh"}),
    "vit": ((3, 8, 8), {"d_model": 16, "n_heads": 2, "num_blocks": 2}),
    "resnet": ((3, 8, 8), {"width": 4, "num_blocks": 2}),
}


def tiny(arch: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    shape, kwargs = TINY[arch]
    model = build_model(arch, input_shape=shape, num_classes=5, **{**kwargs, **overrides})
    if arch == "resnet":  # give BatchNorm running statistics that are not the identity
        with torch.no_grad():
            model.train()
            model(torch.randn(16, *shape) * 2 + 0.5)
    return model.eval()


def batch(arch: str, n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *TINY[arch][0], generator=g), torch.randint(0, 5, (n,), generator=g)


# -- D2 is the true per-sample gradient of the model's own forward pass ------------------------
def hidden_state_hooks(model: nn.Module, arch: str, store: dict[int, Tensor]) -> list:
    """Hooks on the model's own modules that catch h_0..h_L as its forward pass makes them.

    ResMLP blocks return the branch (the model adds the skip), so h_l is a block's input and
    h_L the terminal LayerNorm's; ViT and ResNet blocks add their skip inside, so h_{l+1} is a
    block's output; the MLP's first layer makes h_0.
    """

    def keep_input(key):
        return lambda module, args: store.__setitem__(key, args[0])

    def keep_output(key):
        return lambda module, args, out: store.__setitem__(key, out)

    blocks = model.blocks
    if arch == "resmlp":
        hooks = [b.register_forward_pre_hook(keep_input(l)) for l, b in enumerate(blocks)]
        return [*hooks, model.out_ln.register_forward_pre_hook(keep_input(len(blocks)))]
    first = (
        model.first.register_forward_hook(keep_output(0))
        if arch == "mlp"
        else blocks[0].register_forward_pre_hook(keep_input(0))
    )
    return [first, *(b.register_forward_hook(keep_output(l + 1)) for l, b in enumerate(blocks))]


def loop_gradients(model: nn.Module, arch: str, x: Tensor, y: Tensor):
    """One sample at a time through ``model(x_i)``: its hidden states and its loss gradients."""
    store: dict[int, Tensor] = {}
    handles = hidden_state_hooks(model, arch, store)
    states, grads = [], []
    try:
        for i in range(x.shape[0]):
            store.clear()
            loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
            captured = [store[l] for l in range(len(store))]
            states.append([h.detach() for h in captured])
            grads.append(torch.autograd.grad(loss, captured))
    finally:
        for handle in handles:
            handle.remove()
    layers = len(states[0])
    return (
        [torch.cat([s[l] for s in states]) for l in range(layers)],
        [torch.cat([g[l] for g in grads]) for l in range(layers)],
    )


def medians(tensors: list[Tensor]) -> list[float]:
    return [float(t.double().flatten(1).norm(dim=1).median()) for t in tensors]


@pytest.mark.parametrize("arch", sorted(TINY))
def test_d2_is_the_per_sample_gradient_of_the_models_own_forward(arch: str) -> None:
    model, (x, y) = tiny(arch), batch(arch, n=10)
    states, grads = loop_gradients(model, arch, x, y)
    assert len(grads) == model.num_blocks + 1
    report = evaluate(model, x, y)
    assert report.d2.grad_norms == pytest.approx(medians(grads), rel=1e-4)
    assert report.d2.g_L == report.d2.grad_norms[-1]
    assert report.d1.hidden_norms == pytest.approx(medians(states), rel=1e-4)
    # and element for element, the reference the protocol uses is the same gradient
    for ours, theirs in zip(per_sample_gradients(model, x, y)[1], grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_duplicating_the_eval_batch_leaves_d1_and_d2_unchanged(arch: str) -> None:
    model, (x, y) = tiny(arch), batch(arch, n=7)
    once = evaluate(model, x, y)
    twice = evaluate(model, torch.cat([x, x]), torch.cat([y, y]))
    assert twice.d1.hidden_norms == pytest.approx(once.d1.hidden_norms, rel=1e-5)
    assert twice.d1.per_block_growth == pytest.approx(once.d1.per_block_growth, rel=1e-5)
    assert twice.d2.grad_norms == pytest.approx(once.d2.grad_norms, rel=1e-5)


@given(n=st.integers(1, 12), seed=st.integers(0, 2**16), copies=st.integers(2, 4))
def test_duplication_invariance_holds_for_any_batch(n: int, seed: int, copies: int) -> None:
    model, (x, y) = tiny("resmlp", seed=seed % 7), batch("resmlp", n=n, seed=seed)
    once = evaluate(model, x, y)
    many = evaluate(model, x.repeat_interleave(copies, 0), y.repeat_interleave(copies, 0))
    assert many.d1.hidden_norms == pytest.approx(once.d1.hidden_norms, rel=1e-5)
    assert many.d2.grad_norms == pytest.approx(once.d2.grad_norms, rel=1e-5)
    assert many.test_acc == pytest.approx(once.test_acc)


def test_the_default_floor_is_the_seeds_floor_at_their_eval_batch() -> None:
    assert Thresholds().grad_floor == pytest.approx(10 * 1e-8 * 128)
    assert Thresholds() == Thresholds(50.0, 1.28e-5, 2.0, None, None)


# -- D1 --------------------------------------------------------------------------------------
def test_an_exploding_block_fires_d1_and_is_named() -> None:
    model, (x, y) = tiny("resmlp", num_blocks=3), batch("resmlp", n=32)
    healthy = evaluate(model, x, y)
    assert not healthy.d1.fires and healthy.d1.max_growth < 2
    with torch.no_grad():
        model.blocks[1].w2.weight.mul_(1e4)
    report = evaluate(model, x, y)
    assert report.d1.fires and "D1" in report.verdict
    assert report.d1.worst_block == 1
    assert report.d1.max_growth == max(report.d1.per_block_growth) > 50
    assert report.d1.max_growth == pytest.approx(
        report.d1.hidden_norms[2] / report.d1.hidden_norms[1]
    )
    assert "across block 1" in report.d1.explanation
    assert "terminal LayerNorm would hide this" in report.d1.explanation
    assert f"{report.d1.max_growth:.4g}x" in report.d1.explanation


def test_d1_threshold_is_the_limit() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    growth = evaluate(model, x, y).d1.max_growth
    assert evaluate(model, x, y, thresholds=Thresholds(max_growth=growth * 0.999)).d1.fires
    assert not evaluate(model, x, y, thresholds=Thresholds(max_growth=growth * 1.001)).d1.fires


def test_a_model_without_blocks_has_nothing_to_grow() -> None:
    model, (x, y) = tiny("resmlp", num_blocks=0), batch("resmlp")
    report = evaluate(model, x, y)
    assert report.d1.per_block_growth == [] and report.d1.max_growth == 1.0
    assert not report.d1.fires and report.d1.worst_block is None
    assert len(report.d2.grad_norms) == 1


# -- D2 and mode 1 ---------------------------------------------------------------------------
def test_a_collapsed_reference_fires_d2_and_with_d1_is_mode1() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    with torch.no_grad():
        model.blocks[0].w2.weight.mul_(1e8)  # the stream explodes; the terminal LN hides it
    report = evaluate(model, x, y)
    assert report.d2.g_L < 1.28e-5 and report.d2.fires
    assert report.mode1 and report.verdict == "FAIL(D1+D2)"
    assert "below the floor 1.28e-05" in report.d2.explanation
    assert report.d2.explanation.startswith("the per-sample BP gradient at h_2 is ")


def test_evaluate_restores_each_submodules_own_mode() -> None:
    # e.g. frozen blocks whose BatchNorm stays in eval mode while the rest of the model trains
    model, (x, y) = tiny("resnet").train(), batch("resnet")
    model.blocks[0].eval()
    modes = {name: m.training for name, m in model.named_modules()}
    evaluate(model, x, y)
    assert {name: m.training for name, m in model.named_modules()} == modes


# -- D3 --------------------------------------------------------------------------------------
def test_d3_margin_in_percentage_points() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp", n=40)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).double().mean().item()
    report = evaluate(model, x, y, baseline_acc=0.1)
    assert report.test_acc == pytest.approx(accuracy)
    assert report.d3.margin_pp == pytest.approx(100 * (accuracy - 0.1))
    assert report.d3.fires == (100 * (accuracy - 0.1) < 2.0)
    given_acc = evaluate(model, x, y, baseline_acc=0.496, test_acc=0.233)
    assert given_acc.test_acc == 0.233
    assert given_acc.d3.margin_pp == pytest.approx(-26.3)
    assert given_acc.d3.fires and given_acc.verdict.endswith("D3)")
    assert given_acc.d3.explanation == (
        "test accuracy 23.3% is 26.3 pp below the frozen-blocks baseline 49.6%; the trained "
        "blocks must add at least 2.0 pp"
    )


@given(
    st.integers(min_value=1, max_value=400),  # eval sets of 50 .. 20,000 samples
    st.integers(min_value=0, max_value=20_000),
    st.integers(min_value=-3, max_value=3),
)
def test_d3_margin_at_the_threshold_is_exact(k: int, baseline: int, offset: int) -> None:
    # accuracies are counts over n = 50k samples, so 2 pp is exactly k samples: a model k
    # samples above its baseline passes and k - 1 fails, whatever rounding 100 * (a - b) does
    n = 50 * k
    baseline %= n - k + 1
    correct = baseline + k + offset
    if not 0 <= correct <= n:
        return
    result = depth_utility(correct / n, baseline / n, 2.0)
    assert result.fires == (offset < 0)
    assert result.margin_pp == pytest.approx(2.0 + 100 * offset / n)


def test_d3_margin_exactly_two_points_passes() -> None:
    for baseline in (0.01, 0.04, 0.27, 0.35, 0.496):  # 100 * (b + 0.02 - b) < 2 for most
        assert depth_utility(baseline + 0.02, baseline, 2.0).fires is False, baseline


def test_d3_is_not_evaluated_without_a_baseline() -> None:
    report = evaluate(tiny("resmlp"), *batch("resmlp"), test_acc=0.05)
    assert report.d3.fires is None and report.d3.margin_pp is None
    assert "D3" not in report.verdict and "not evaluated" in report.d3.explanation


def test_accuracies_are_fractions() -> None:
    with pytest.raises(ValueError, match=r"baseline_acc is a fraction in \[0, 1\], got 49.6"):
        evaluate(tiny("resmlp"), *batch("resmlp"), baseline_acc=49.6)


# -- one wording for a report computed here and one read back -------------------------------------
@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("floor_at", ["none", "some", "all"])
@pytest.mark.parametrize("growth_limit", [1.01, 1e6])
def test_a_report_read_back_says_what_the_computed_one_says(arch, floor_at, growth_limit):
    model, (x, y) = tiny(arch), batch(arch)
    first = evaluate(model, x, y, baseline_acc=0.1)
    grads = sorted(first.d2.grad_norms)
    floor = {"none": grads[0] / 2, "some": (grads[0] + grads[-1]) / 2, "all": grads[-1] * 2}
    thresholds = Thresholds(max_growth=growth_limit, grad_floor=floor[floor_at],
                            min_cosine=0.5, min_rho=-0.5)
    grads = per_sample_gradients(model.eval(), x, y)[1]
    noisy = [g + g.std() * torch.randn(g.shape, generator=torch.Generator().manual_seed(1))
             for g in grads]
    report = evaluate(model, x, y, baseline_acc=0.1, thresholds=thresholds, credit=noisy,
                      directions=4)
    read = judge_entry(json.loads(json.dumps(report.to_dict())),
                       InForce(thresholds=thresholds), where="here").report
    sections = ("d1", "d2", "d3", "credit")
    assert [getattr(read, name).explanation for name in sections] == [
        getattr(report, name).explanation for name in sections]
    assert "the minimum 0.5" in report.credit.explanation
    assert (read.d1.fires, read.d2.fires) == (report.d1.fires, report.d2.fires)
    note = {"none": "the floor holds at every h_l", "some": "whose credit figures measure",
            "all": "below the floor"}[floor_at]
    assert note in report.d2.explanation


# -- non-finite models -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(TINY))
@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_a_diverged_model_fails_with_a_message_and_valid_json(arch: str, poison: float) -> None:
    model, (x, y) = tiny(arch), batch(arch)
    with torch.no_grad():
        block = model.blocks[1]
        next(p for p in block.parameters() if p.dim() > 1).fill_(poison)
    report = evaluate(model, x, y, baseline_acc=0.1)
    assert report.d1.fires and report.d2.fires and report.d3.fires
    assert report.verdict == "FAIL(D1+D2+D3)"
    assert "the hidden state became non-finite at h_2" in report.d1.explanation
    assert report.d1.worst_block == 1
    assert "non-finite" in report.d2.explanation
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["D1"]["max_growth"] in ("NaN", "Infinity")
    assert report.divergence == report.d1.explanation
    assert Report.from_dict(json.loads(text)).divergence == report.divergence
    # read back, the same sentences less what only the tensors could count
    read = judge_entry(json.loads(text), InForce(), where="here").report
    uncounted = re.compile(r" \(\d+ of 16 samples have NaN or Inf\)")
    assert " of 16 samples" in report.d1.explanation + report.d2.explanation
    assert (read.d1.explanation, read.d2.explanation) == (
        uncounted.sub("", report.d1.explanation), uncounted.sub("", report.d2.explanation))
    # a diverged model is not the silent mode 1, and its accuracy credits it with nothing
    assert not report.mode1 and report.d3.diverged
    assert report.d3.explanation.startswith(report.d1.explanation)
    assert evaluate(tiny(arch), x, y).divergence is None


def test_a_non_finite_input_sample_is_caught() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp", n=8)
    x[3, 0] = math.inf
    report = evaluate(model, x, y)
    assert report.d1.fires and "non-finite at h_0 (1 of 8 samples" in report.d1.explanation
    assert report.d1.worst_block is None  # the embedding's output is not a block's
    shallow = evaluate(tiny("resmlp", num_blocks=0), x, y)
    assert shallow.d1.fires and math.isnan(shallow.d1.max_growth)


# -- verdict and report -------------------------------------------------------------------------
def report_with(d1: bool, d2: bool, d3: bool | None, cos: bool | None, rho: bool | None) -> Report:
    credit = CreditMetrics([], [], [], [], cosine_fires=cos, rho_fires=rho)
    return Report(
        test_acc=0.5,
        d1=ScaleStability(60.0 if d1 else 1.0, [1.0], [1.0, 1.0], 50.0, d1, "", 0),
        d2=ReferenceValidity(1e-9 if d2 else 1.0, [1.0], 1.28e-5, d2, ""),
        d3=DepthUtility(None if d3 is None else 1.0, 0.4, 2.0, d3, ""),
        credit=credit,
    )


@given(st.booleans(), st.booleans(), st.none() | st.booleans(), st.none() | st.booleans(),
       st.none() | st.booleans())
def test_verdict_string_format(d1, d2, d3, cos, rho) -> None:
    report = report_with(d1, d2, d3, cos, rho)
    expected = [name for name, fired in
                (("D1", d1), ("D2", d2), ("D3", d3), ("COS", cos), ("RHO", rho)) if fired]
    assert report.failures == expected
    assert report.passed == (not expected)
    if expected:
        assert re.fullmatch(r"FAIL\((D1|D2|D3|COS|RHO)(\+(D1|D2|D3|COS|RHO))*\)", report.verdict)
        assert report.verdict == "FAIL(" + "+".join(expected) + ")"
    else:
        assert report.verdict == "PASS"
    assert report.mode1 == (d1 and d2)


def test_report_json_round_trip_with_the_issue_keys() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    grads = per_sample_gradients(model, x, y)[1]
    report = evaluate(model, x, y, baseline_acc=0.2, credit=grads, directions=4)
    report.subject = {"id": "run.pt", "method": "bp", "seed": 3}
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert {"verdict", "mode1", "test_acc", "D1", "D2", "D3", "credit"} <= set(data)
    assert {"max_growth", "per_block_growth", "hidden_norms", "threshold", "fires"} <= set(
        data["D1"]
    )
    assert {"g_L", "grad_norms", "floor", "fires"} <= set(data["D2"])
    assert {"margin_pp", "baseline_acc", "threshold_pp", "fires"} <= set(data["D3"])
    assert {"cosine", "rho", "nudging"} <= set(data["credit"])
    back = Report.from_dict(data)
    assert back == report
    assert back.verdict == report.verdict and back.d1.max_growth == report.d1.max_growth


def test_round_trip_of_a_diverged_report_keeps_its_non_finite_figures() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    with torch.no_grad():
        model.blocks[0].w1.weight.fill_(math.nan)
    report = evaluate(model, x, y)
    back = Report.from_dict(json.loads(json.dumps(report.to_dict(), allow_nan=False)))
    assert math.isnan(back.d1.max_growth) and math.isnan(back.d2.g_L)
    assert back.to_dict() == report.to_dict() and back.verdict == report.verdict


@pytest.mark.parametrize(("section", "key", "value"), [
    ("D1", "max_growth", 1e9),  # an edited figure: the stored "pass" no longer follows from it
    ("D1", "fires", True),
    ("D2", "floor", 10.0),
    ("D3", "margin_pp", -5.0),
])
def test_from_dict_refuses_flags_that_disagree_with_the_figures(section, key, value) -> None:
    report = evaluate(tiny("resmlp"), *batch("resmlp"), baseline_acc=0.0, test_acc=0.5)
    assert report.passed
    data = report.to_dict()
    data[section][key] = value
    with pytest.raises(ValueError, match=f"{section}.*(edited or damaged)"):
        Report.from_dict(data)


def test_from_dict_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="missing D2, D3"):
        Report.from_dict({"test_acc": 0.5, "D1": {}})


def test_summary_reads_as_sentences() -> None:
    report = evaluate(tiny("resmlp"), *batch("resmlp"), baseline_acc=0.9, test_acc=0.5)
    report.subject = {"id": "run.pt"}
    text = report.describe()
    assert text.splitlines()[0].startswith("run.pt: FAIL(D3)  test accuracy 50.0%")
    assert "D3 depth utility      FIRE  test accuracy 50.0% is 40.0 pp below" in text


def test_thresholds_validate_and_round_trip() -> None:
    with pytest.raises(ValueError, match="Thresholds.max_growth must be a positive number"):
        Thresholds(max_growth=-1)
    with pytest.raises(ValueError, match=r"Thresholds.min_cosine must be None or within"):
        Thresholds(min_cosine=2.0)
    custom = Thresholds(max_growth=10, min_rho=0.1)
    assert Thresholds(**custom.to_dict()) == custom


# -- evaluation leaves the model as it found it ---------------------------------------------
def test_evaluate_uses_eval_mode_restores_the_mode_and_leaves_no_grads() -> None:
    model, (x, y) = tiny("resnet"), batch("resnet")
    model.train()
    running_mean = model.blocks[0].bn1.running_mean.clone()
    evaluate(model, x, y, credit=per_sample_gradients(model.eval(), x, y)[1], directions=2)
    model.train()
    evaluate(model, x, y)
    assert model.training
    assert torch.equal(model.blocks[0].bn1.running_mean, running_mean)  # no train-mode forward
    assert all(p.grad is None for p in model.parameters())


# -- credit ----------------------------------------------------------------------------------
def test_the_true_gradient_as_credit_scores_one_everywhere() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp", n=32)
    grads = per_sample_gradients(model, x, y)[1]
    credit = evaluate(model, x, y, credit=grads).credit
    assert credit is not None
    assert credit.cosine == pytest.approx([1.0] * 3, abs=1e-9)
    assert credit.pooled_cosine == pytest.approx([1.0] * 3, abs=1e-9)
    assert all(r > 0.9 for r in credit.rho)
    assert all(n < 0 for n in credit.nudging)
    assert credit.null_mean is None and credit.deep_cosine == pytest.approx(1.0)


def test_credit_figures_are_the_metrics_of_each_layer() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp", n=32)
    method = ToyDFA()
    method.setup(model, 5, torch.Generator().manual_seed(0))
    report = evaluate(model, x, y, method=method, directions=8, null_draws=3, seed=4)
    credit = report.credit
    hidden, grads, _ = per_sample_gradients(model, x, y)
    signals = method.credit(x, y)
    for l, a in enumerate(signals):
        loss = metrics.layer_loss(model, l, y)
        assert credit.cosine[l] == pytest.approx(metrics.cosine(a, grads[l]).mean().item())
        assert credit.pooled_cosine[l] == pytest.approx(metrics.pooled_cosine(a, grads[l]))
        assert credit.nudging[l] == pytest.approx(metrics.nudging(hidden[l], a, loss))
        assert credit.rho[l] == pytest.approx(metrics.perturbation_correlation(
            hidden[l], a, loss, M=8, generator=torch.Generator().manual_seed(4 + l)
        ))
    null = metrics.fresh_feedback_null(method, x, y, draws=3, seed=4)
    assert credit.null_mean == pytest.approx(null.mean) and credit.null_draws == 3
    assert credit.deep_cosine == pytest.approx(sum(credit.cosine[1:]) / 2)
    assert "fresh-feedback null" in credit.explanation
    # reproducible: the directions and redraws are seeded
    again = evaluate(model, x, y, method=method, directions=8, null_draws=3, seed=4)
    assert again.to_dict() == report.to_dict()


def test_credit_gates_add_cos_and_rho_to_the_verdict() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp", n=32)
    grads = per_sample_gradients(model, x, y)[1]
    g = torch.Generator().manual_seed(0)
    noise = [torch.randn(t.shape, generator=g) for t in grads]
    gates = Thresholds(min_cosine=0.5, min_rho=0.5)
    bad = evaluate(model, x, y, credit=noise, thresholds=gates, directions=8)
    assert bad.credit.cosine_fires and bad.credit.rho_fires
    assert bad.verdict == "FAIL(COS+RHO)"
    assert "is below the minimum 0.5" in bad.credit.explanation
    good = evaluate(model, x, y, credit=grads, thresholds=gates, directions=8)
    assert good.verdict == "PASS" and good.credit.cosine_fires is False
    off = evaluate(model, x, y, credit=noise, directions=8)
    assert off.credit.cosine_fires is None and off.verdict == "PASS"


def test_credit_of_the_wrong_shape_or_length_is_a_clear_error() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    grads = per_sample_gradients(model, x, y)[1]
    with pytest.raises(ValueError, match=r"credit returned 2 signals for 3 hidden states"):
        evaluate(model, x, y, credit=grads[:2])
    with pytest.raises(ValueError, match=r"credit returned signals shaped \[\(16, 16\), \(16, 8\)"):
        evaluate(model, x, y, credit=[grads[0], grads[1][:, :8], grads[2]])


def test_a_non_finite_credit_signal_is_reported_not_raised() -> None:
    model, (x, y) = tiny("resmlp"), batch("resmlp")
    grads = per_sample_gradients(model, x, y)[1]
    grads[1][0, 0] = math.nan
    report = evaluate(model, x, y, credit=grads, thresholds=Thresholds(min_cosine=0.1))
    assert math.isnan(report.credit.cosine[1]) and report.credit.cosine_fires
    assert "non-finite at h_1" in report.credit.explanation
    json.dumps(report.to_dict(), allow_nan=False)
