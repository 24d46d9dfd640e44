"""Device tests: training, evaluation and the plugin on a CUDA device.

They are marked ``cuda`` and skip where no CUDA device is visible; run them on a GPU machine
(``pytest -m cuda``).  Every other test pins the CPU, so a GPU machine runs those unchanged.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from fa_checks.cache.store import ArtifactCache
from fa_checks.evaluation import evaluate_subject, load_subject
from fa_checks.settings import Settings
from fa_checks.subjects import fresh_subjects

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = {"arch_options": {"d_hidden": 32, "num_blocks": 2}, "data": "synthetic", "epochs": 2,
        "data_options": {"num_samples": 400}}


def _settings(device: str) -> Settings:
    return Settings(device=device, eval_size=128, batch_size=64, lr=1e-2, baseline_acc=0.2)


@pytest.mark.parametrize("method", ["bp", "dfa", "fa", "kp"])
def test_a_run_trained_on_the_gpu_gives_figures_close_to_the_cpu(tmp_path, method):
    [subject] = fresh_subjects(method, [0], **TINY)
    gpu = evaluate_subject(subject, _settings("cuda"), ArtifactCache(tmp_path / "gpu"))
    cpu = evaluate_subject(subject, _settings("cpu"), ArtifactCache(tmp_path / "cpu"))
    assert gpu.verdict == cpu.verdict
    assert abs(gpu.test_acc - cpu.test_acc) <= 0.05
    assert math.isclose(gpu.d1.max_growth, cpu.d1.max_growth, rel_tol=0.05)
    assert math.isclose(gpu.d2.g_L, cpu.d2.g_L, rel_tol=0.1)


def test_the_loaded_model_and_data_are_on_the_device(tmp_path):
    [subject] = fresh_subjects("bp", [1], **TINY)
    loaded = load_subject(subject, _settings("cuda:0"), ArtifactCache(tmp_path))
    assert next(loaded.model.parameters()).device.type == "cuda"
    assert loaded.data.x_test.device.type == "cuda"


def test_the_plugin_trains_on_the_gpu_with_and_without_xdist(pytester, monkeypatch):
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / "cache"))
    args = ["--fa-method", "bp", "--fa-seeds", "1", "2", "--fa-data", "synthetic",
            "--fa-arch-arg", "d_hidden=16", "--fa-epochs", "2", "--fa-device", "cuda",
            "--fa-baseline-acc", "0", "--fa-report", "fa.json"]
    for extra in (["-p", "no:xdist"], ["-n", "2"]):
        result = pytester.runpytest_subprocess(*args, *extra, timeout=600)
        assert result.ret in (0, 1), result.stdout.str()
        data = json.loads((pytester.path / "fa.json").read_text())
        assert {s["verdict"] for s in data["subjects"]} <= {"PASS", "FAIL(D1)", "FAIL(D2)",
                                                             "FAIL(D1+D2)"}


def test_dfas_gradients_in_factors_equal_the_dense_ones_on_the_gpu():
    from fa_checks.methods import get_method
    from fa_checks.models import build_model

    torch.manual_seed(0)
    model = build_model("resmlp", input_shape=(20,), num_classes=10, d_hidden=64,
                        num_blocks=3).cuda()
    x = torch.randn(32, 20, device="cuda")
    y = torch.randint(0, 10, (32,), device="cuda")
    grads = {}
    for low_rank in (False, True):
        copy = build_model("resmlp", input_shape=(20,), num_classes=10, d_hidden=64,
                           num_blocks=3).cuda()
        copy.load_state_dict(model.state_dict())
        method = get_method("dfa")
        method.setup(copy, 10, torch.Generator(device="cuda").manual_seed(3))
        method.low_rank = low_rank
        seen = {}
        method.after_backward = lambda seen=seen, copy=copy: seen.update(
            {n: p.grad.clone() for n, p in copy.named_parameters()})
        method.step(x, y)
        grads[low_rank] = seen
    for name, dense in grads[False].items():
        torch.testing.assert_close(grads[True][name], dense, rtol=1e-4, atol=1e-6, msg=name)
