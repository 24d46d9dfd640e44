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


@pytest.mark.parametrize("xdist", [False, True], ids=["n0", "n2"])
def test_a_cached_rerun_never_imports_torch(pytester: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch, xdist: bool):
    for seed in (0, 1):
        _checkpoint(pytester.path / f"run{seed}.pt", seed)
    pytester.makepyfile(probe=PROBE)
    probes = pytester.path / "probes"
    probes.mkdir()
    monkeypatch.setenv("PROBE_DIR", str(probes))
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    args = ["-p", "probe", "--fa-checkpoint", "run*.pt", "--fa-baseline-acc", "0.1",
            "--fa-device", "cpu", *(["-n", "2"] if xdist else ["-p", "no:xdist"])]
    first = pytester.runpytest_subprocess(*args, timeout=300)
    assert first.ret == 0, first.stdout.str()[-2000:]
    computed = _probes(probes)
    assert any(p["torch"] for p in computed), computed  # the first run evaluated with torch
    again = pytester.runpytest_subprocess(*args, timeout=300)
    assert again.ret == 0, again.stdout.str()[-2000:]
    assert "run0.pt" in again.stdout.str() and "PASS" in again.stdout.str()
    rerun = _probes(probes)
    roles = sorted(p["role"] for p in rerun)
    assert roles == (["controller", "worker", "worker"] if xdist else ["controller"])
    assert not any(p["torch"] for p in rerun), rerun
