"""A rerun whose reports are all cached imports no torch: not the controller, not a worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fa_checks.checkpoint import save_checkpoint
from fa_checks.data import load_data
from fa_checks.models import build_model

#: loaded with -p in every process of the run (xdist workers too): says whether it has torch
PROBE = '''
import json, os, sys

def pytest_sessionfinish(session):
    role = "worker" if hasattr(session.config, "workerinput") else "controller"
    with open(os.path.join(os.environ["PROBE_DIR"], f"{role}-{os.getpid()}.json"), "w") as f:
        json.dump({"role": role, "torch": "torch" in sys.modules}, f)
'''


def _checkpoint(path: Path, seed: int) -> None:
    data = load_data("synthetic", num_samples=200)
    torch.manual_seed(seed)
    model = build_model("resmlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        d_hidden=16, num_blocks=2)
    save_checkpoint(path, model=model, data=data.spec, seed=seed, epochs=1)


def _probes(folder: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    for p in folder.glob("*.json"):
        p.unlink()
    return found


def _rerun(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
           *args: str) -> tuple[list[dict], list[dict]]:
    """Run ``args`` twice on two checkpoints; the probes of each run."""
    for seed in (0, 1):
        _checkpoint(pytester.path / f"run{seed}.pt", seed)
    pytester.makepyfile(probe=PROBE)
    probes = pytester.path / "probes"
    probes.mkdir()
    monkeypatch.setenv("PROBE_DIR", str(probes))
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    common = ["-p", "probe", "--fa-checkpoint", "run*.pt", "--fa-baseline-acc", "0.1",
              "--fa-device", "cpu"]
    runs = []
    for _ in range(2):
        result = pytester.runpytest_subprocess(*args, *common, timeout=300)
        assert result.ret == 0, result.stdout.str()[-2000:]
        assert "run0.pt" in result.stdout.str() and "run1.pt" in result.stdout.str()
        runs.append(_probes(probes))
    return runs[0], runs[1]


def test_a_cached_rerun_never_imports_torch(pytester, monkeypatch):
    first, again = _rerun(pytester, monkeypatch, "-p", "no:xdist")
    assert [p["torch"] for p in first] == [True]  # the first run evaluated: it needed torch
    assert again == [{"role": "controller", "torch": False}]


@pytest.mark.slow  # two runs with two xdist workers each
def test_a_cached_rerun_with_workers_asked_starts_none(pytester, monkeypatch):
    # every report is cached: reading them costs less than starting a worker
    first, again = _rerun(pytester, monkeypatch, "-n", "2")
    assert sorted(p["role"] for p in first) == ["controller", "worker", "worker"]
    assert again == [{"role": "controller", "torch": False}]


@pytest.mark.slow  # two runs with two xdist workers each
def test_workers_that_only_read_cached_reports_never_import_torch(pytester, monkeypatch):
    # the user's own tests: the workers start, and each reads its subject's cached report
    pytester.makepyfile(test_user="def test_accuracy(fa_report):\n"
                                  "    assert 0 <= fa_report.test_acc <= 1\n")
    first, again = _rerun(pytester, monkeypatch, "test_user.py", "-n", "2")
    assert any(p["torch"] for p in first)
    assert sorted(p["role"] for p in again) == ["controller", "worker", "worker"]
    assert not any(p["torch"] for p in again), again
