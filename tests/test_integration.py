"""Every registered method on every built-in architecture, end to end.

train one epoch -> checkpoint -> load -> rebuild model and method -> evaluate, with tiny sizes.
Where a method does not apply to an architecture, setting it up must be a MethodError that
names the architecture.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import fa_checks
from fa_checks.checkpoint import load_checkpoint
from fa_checks.data.dataset import Augmentation, Dataset
from fa_checks.methods import MethodError, available_methods, get_method, method_class
from fa_checks.models import build_model

ARCHS = {
    "resmlp": {"d_hidden": 16, "num_blocks": 2},
    "mlp": {"d_hidden": 16, "depth": 4},
    "vit": {"patch_size": 4, "d_model": 16, "n_heads": 2, "num_blocks": 2},
    "resnet": {"width": 4, "num_blocks": 2},
}
IMAGE_ARCHS = ("vit", "resnet")
ALL = frozenset(ARCHS)
LAYERWISE = frozenset({"resmlp", "mlp", "resnet"})  # every weight layer re-routable (no MHA)

#: where each built-in method applies; anywhere else its setup must refuse the architecture
APPLIES = {
    "bp": ALL,
    "frozen": ALL,
    "shallow": ALL,
    "fa": ALL,
    "dfa": ALL,
    "sdfa": ALL,
    "drtp": ALL,
    "kp": LAYERWISE,
    "usf": LAYERWISE,
    "brsf": LAYERWISE,
    "frsf": LAYERWISE,
    "ra_rev": frozenset({"mlp"}),
    "ra_recon": frozenset({"mlp"}),
    "ra_comb": frozenset({"mlp"}),
    "vec": frozenset({"resmlp"}),
}
#: methods whose small options keep this test fast (V's default width is 256)
OPTIONS = {"vec": {"vnet_width": 16, "fd_directions": 2}}
NO_CREDIT = {"frozen", "shallow"}

VERDICT = re.compile(r"^(PASS|FAIL\((D1|D2|D3|COS|RHO)(\+(D1|D2|D3|COS|RHO))*\))$")


def tiny_images() -> Dataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(80, 3, 8, 8, generator=generator)
    y = torch.arange(80) % 4
    return Dataset(
        name="tiny-images", x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:],
        num_classes=4, input_shape=(3, 8, 8), augmentation=Augmentation(crop_padding=1),
    )


def data_for(arch: str) -> Dataset:
    if arch in IMAGE_ARCHS:
        return tiny_images()
    return fa_checks.load_data("synthetic", num_samples=80, dim=12, num_classes=4)


def test_every_builtin_method_is_covered():
    # other test modules register rules of their own; the built-ins live in fa_checks.methods
    builtin = {
        name for name in available_methods()
        if method_class(name).__module__.startswith("fa_checks.methods.")
    }
    assert builtin >= set(APPLIES), sorted(set(APPLIES) - builtin)
    assert set(APPLIES) >= builtin, f"add {sorted(builtin - set(APPLIES))} to APPLIES"


CASES = [(m, a) for m in APPLIES for a in ARCHS]


@pytest.mark.parametrize(("method", "arch"), [c for c in CASES if c[1] in APPLIES[c[0]]])
def test_train_checkpoint_reload_evaluate(method, arch, tmp_path):
    data = data_for(arch)
    run = fa_checks.train(
        method, arch, data, epochs=1, seed=3, batch_size=32, device="cpu",
        method_options=OPTIONS.get(method), arch_options=ARCHS[arch], eval_size=16,
        checkpoint=tmp_path / "run.pt", progress=False,
    )
    assert len(run.history) == 1 and math.isfinite(run.history[0]["train_loss"])

    saved = load_checkpoint(run.checkpoint_path)
    assert saved.method == method and saved.arch == arch
    model = saved.build_model()
    for key, tensor in run.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key
    rebuilt = saved.build_method(model)
    assert type(rebuilt) is type(run.method)

    x, y = data.eval_batch(16)
    original_credit = run.method.credit(x, y)
    report = fa_checks.evaluate(
        model, x, y, method=rebuilt, baseline_acc=0.25, directions=4, null_draws=2
    )
    num_layers = model.num_blocks + 1

    assert VERDICT.match(report.verdict), report.verdict
    assert report.verdict == ("PASS" if report.passed else f"FAIL({'+'.join(report.failures)})")
    assert report.mode1 == (report.d1.fires and report.d2.fires)
    assert len(report.d1.hidden_norms) == num_layers
    assert len(report.d2.grad_norms) == num_layers
    assert report.d3.margin_pp == pytest.approx(100 * (report.test_acc - 0.25))
    encoded = json.dumps(report.to_dict(), allow_nan=False)
    assert fa_checks.Report.from_dict(json.loads(encoded)).verdict == report.verdict

    if method in NO_CREDIT:
        assert original_credit is None and report.credit is None
        return
    assert report.credit is not None
    for column in ("cosine", "pooled_cosine", "rho", "nudging"):
        assert len(getattr(report.credit, column)) == num_layers, column
    reloaded_credit = rebuilt.credit(x, y)
    assert len(reloaded_credit) == num_layers
    for l, (a, b) in enumerate(zip(original_credit, reloaded_credit, strict=True)):
        assert torch.equal(a, b), f"credit a_{l} differs after the checkpoint round trip"
    if method == "bp":
        for value in report.credit.cosine + report.credit.pooled_cosine:
            assert value == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("method", "arch"), [c for c in CASES if c[1] not in APPLIES[c[0]]])
def test_method_refuses_an_architecture_it_does_not_apply_to(method, arch):
    data = data_for(arch)
    overrides = get_method(method, **OPTIONS.get(method, {})).model_overrides(arch)
    model = build_model(
        arch, input_shape=data.input_shape, num_classes=data.num_classes,
        **{**ARCHS[arch], **overrides},
    )
    rule = get_method(method, **OPTIONS.get(method, {}))
    with pytest.raises(MethodError, match=arch):
        rule.setup(model, data.num_classes, torch.Generator().manual_seed(0))
