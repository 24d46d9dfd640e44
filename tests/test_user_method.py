"""A user's own rule, named ``module:Class``, trains, checkpoints and checks end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fa_checks.checkpoint import load_checkpoint
from fa_checks.cli.main import main
from fa_checks.data import load_data

HERE = Path(__file__).parent
RULE = "user_rules:ScaledDirectFeedback"
TINY = ["--arch", "resmlp", "--arch-arg", "d_hidden=16", "num_blocks=2", "--data", "synthetic",
        "--data-arg", "num_samples=200", "--batch-size", "32", "--lr", "1e-2", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(autouse=True)
def importable_rules(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "cache"))


def test_a_user_rule_trains_checkpoints_and_checks_through_the_cli(tmp_path, capsys):
    run = tmp_path / "user.pt"
    assert main(["train", "--method", RULE, "--method-arg", "scale=0.5", "--epochs", "2",
                 "--seed", "1", *TINY, "-o", str(run)]) == 0
    ckpt = load_checkpoint(run, trust=True)  # the user's own file names the user's module
    assert ckpt.method == RULE and ckpt.method_options == {"scale": 0.5}
    assert sorted(ckpt.method_state) == ["feedback.0", "feedback.1", "feedback.2"]

    report = tmp_path / "report.json"
    code = main(["check", str(run), "--trust", "--baseline-acc", "0", "--json", str(report)])
    [entry] = json.loads(report.read_text())["subjects"]
    assert code == (0 if entry["verdict"] == "PASS" else 1)
    assert entry["method"] == RULE and entry["seed"] == 1
    assert RULE in capsys.readouterr().out

    # the credit the protocol measured is the one the saved feedback gives
    model = ckpt.build_model()
    method = ckpt.build_method(model)
    x, y = load_data("synthetic", num_samples=200).eval_batch(64)
    hidden = model.embed(x)
    states = [hidden]
    for l in range(model.num_blocks):
        states.append(model.step(l, states[-1]))
    losses = F.cross_entropy(model.readout(states[-1]), y, reduction="sum")
    grads = torch.autograd.grad(losses, states)
    cosines = [float(F.cosine_similarity(a, g, dim=1).mean())
               for a, g in zip(method.credit(x, y), grads, strict=True)]
    assert entry["credit"]["cosine"] == pytest.approx(cosines, abs=1e-4)


def test_a_user_rule_runs_from_the_console_script(tmp_path):
    script = Path(sys.executable).parent / "fa-checks"
    if not script.exists():
        pytest.skip("the console script is not installed")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")]), "FA_CHECKS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    trained = subprocess.run([str(script), "train", "--method", RULE, "--epochs", "1", *TINY,
                              "-o", "user.pt"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert load_checkpoint(tmp_path / "user.pt").method == RULE


def test_a_rule_that_cannot_be_imported_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "--method", "no_such_module:Rule", "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_module" in err
    assert not (tmp_path / "x.pt").exists()


def test_a_fresh_run_of_a_named_rule_is_evaluated_with_its_credit(tmp_path):
    # the rule was named by the user (as --fa-method names it), so rebuilding it from its own
    # trained run may import it: no trust flag is needed for the credit metrics
    from fa_checks.cache.store import ArtifactCache
    from fa_checks.evaluation import evaluate_subject
    from fa_checks.settings import Settings
    from fa_checks.subjects import fresh_subjects

    [subject] = fresh_subjects(RULE, [1], data="synthetic", epochs=1,
                               arch_options={"d_hidden": 16, "num_blocks": 2},
                               data_options={"num_samples": 200})
    report = evaluate_subject(subject, Settings(device="cpu", eval_size=64),
                              ArtifactCache(tmp_path / "cache"))
    assert report.subject["method"] == RULE
    assert report.credit is not None and len(report.credit.cosine) == 3


def test_a_rule_that_raises_is_the_users_to_fix_naming_the_line(tmp_path, capsys):
    import ray_rules

    assert main(["train", "--method", "ray_rules:RaisesInStep", "--epochs", "1", *TINY,
                 "-o", str(tmp_path / "x.pt")]) == 2
    heading, error = capsys.readouterr().err.strip().splitlines()
    assert heading.startswith("training ray_rules:RaisesInStep-seed0")
    line = ray_rules.line_of("raise RuntimeError(STEP_MESSAGE)")
    assert error == (f"fa-checks: error: RuntimeError raised in your code (ray_rules, line {line}, "
                     f"in step): {ray_rules.STEP_MESSAGE}; fix it there")
    assert not (tmp_path / "x.pt").exists()


def test_an_exception_through_no_frame_of_the_users_is_a_fault_of_fa_checks(tmp_path, capsys):
    assert main(["train", "--method", "ray_rules:FaultInStep", "--epochs", "1", *TINY,
                 "-o", str(tmp_path / "x.pt")]) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[1].startswith(
        "fa-checks: internal error (a fault of fa-checks, not of your method or input; please "
        "report it): TypeError: ")
    assert "Traceback" in err


def test_the_library_says_which_rule_raised_and_keeps_the_exception(tmp_path):
    from fa_checks.cache.store import ArtifactCache
    from fa_checks.evaluation import Failure, outcome
    from fa_checks.settings import Settings
    from fa_checks.subjects import fresh_subjects

    settings, cache = Settings(device="cpu", eval_size=64), ArtifactCache(tmp_path / "cache")
    options = dict(data="synthetic", epochs=1, arch_options={"d_hidden": 16, "num_blocks": 2},
                   data_options={"num_samples": 200})
    [broken] = fresh_subjects("ray_rules:RaisesInStep", [1], **options)
    failure = outcome(broken, settings, cache)
    assert isinstance(failure, Failure)
    assert failure.message.startswith("RuntimeError raised in your code (ray_rules, line ")
    # train() itself keeps Python's own exception, with the whole traceback
    from fa_checks.training.loop import train

    with pytest.raises(RuntimeError, match="fails on purpose"):
        train("ray_rules:RaisesInStep", "resmlp", "synthetic", epochs=1, seed=0, progress=False,
              arch_options={"d_hidden": 16, "num_blocks": 2}, device="cpu")
    [fault] = fresh_subjects("ray_rules:FaultInStep", [1], **options)
    with pytest.raises(TypeError):
        outcome(fault, settings, cache)
