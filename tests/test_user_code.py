"""The researcher's own rule and own model, first-class: the method contract is checked before any
work (a mistake is the user's: exit 2 / 4, one sentence naming the fix), and a model factory
``module:callable`` is an architecture in the library, the command line, pytest and checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

import fa_checks
from fa_checks.checkpoint import CheckpointError, load_checkpoint
from fa_checks.cli.main import main
from fa_checks.methods import MethodError, method_class
from fa_checks.models import ModelError, build_model

HERE = Path(__file__).parent
TINY = ["--arch-arg", "d_hidden=16", "num_blocks=2", "--data", "synthetic", "--data-arg",
        "num_samples=200", "--batch-size", "50", "--epochs", "1", "--device", "cpu",
        "--no-progress"]
NET = "user_models:make_net"
SMALL = {"data_options": {"num_samples": 200}, "batch_size": 50, "progress": False,
         "threads": 1, "epochs": 1, "seed": 0}


@pytest.fixture(autouse=True)
def importable_user_code(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "cache"))


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines()
             if not line.startswith("training ")]
    assert len(lines) == 1, lines
    return lines[0]


# -- the method contract, checked when the rule is resolved -----------------------------------
@pytest.mark.parametrize("rule, expected", [
    ("NoStep", "defines no step(self, x, y)"),
    ("StepWithoutY", "step(self, x) (user_rules.py, line"),
    ("LocalCreditWithoutY", "define it as local_credit(self, hidden, logits, y)"),
    ("NoLocalCredit", "defines no local_credit(self, hidden, logits, y)"),
])
def test_a_rule_that_breaks_the_contract_is_refused_before_any_work(rule, expected, capsys,
                                                                     tmp_path):
    with pytest.raises(MethodError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        method_class(f"user_rules:{rule}")
    assert main(["train", "--method", f"user_rules:{rule}", *TINY,
                 "-o", str(tmp_path / "x.pt")]) == 2
    line = one_error_line(capsys)
    assert expected in line and "internal error" not in line
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.pt"))


@pytest.mark.parametrize("rule, expected", [
    ("StepReturnsAFloat", "step returned a float; step(self, x, y) must return a dict"),
    ("StepReturnsAVector", "step's figure 'loss' is a tensor shaped (50,)"),
    ("OneSignalShort", "local_credit returned 2 signals for 3 hidden states"),
    ("CreditOfTheWrongWidth", "credit returned signals shaped [(50, 3) x3]; it must return 3"),
])
def test_what_a_rule_returns_is_checked_on_the_first_batch(rule, expected, capsys, tmp_path):
    assert main(["train", "--method", f"user_rules:{rule}", *TINY,
                 "-o", str(tmp_path / "x.pt")]) == 2
    assert expected in one_error_line(capsys)
    with pytest.raises(MethodError, match=r"user_rules:"):
        fa_checks.train(f"user_rules:{rule}", "resmlp", "synthetic",
                        arch_options={"d_hidden": 16, "num_blocks": 2}, **SMALL)


def test_a_rule_instance_is_held_to_the_contract_too():
    from user_rules import StepWithoutY

    with pytest.raises(MethodError, match=r"define it as step\(self, x, y\)"):
        fa_checks.train(StepWithoutY(), "resmlp", "synthetic", **SMALL)


def test_the_stop_hooks_rule_without_step_from_its_own_folder_exits_2_in_one_line(tmp_path):
    script = Path(sys.executable).parent / "fa-checks"
    if not script.exists():
        pytest.skip("the console script is not installed")
    (tmp_path / "userrule.py").write_text(
        "from fa_checks import Method\n\n\nclass NoStep(Method):\n    name = \"no-step\"\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(FA_CHECKS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    done = subprocess.run([str(script), "train", "--method", "userrule:NoStep", "--data",
                           "synthetic", "--epochs", "1", "-o", "x.pt"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "defines no step(self, x, y)" in done.stderr and not (tmp_path / "x.pt").exists()


def test_a_per_sample_signal_is_spread_over_tokens_and_maps():
    for arch, sizes in (("vit", {"d_model": 16, "n_heads": 2, "num_blocks": 1}),
                        ("resnet", {"width": 4, "num_blocks": 1})):
        run = fa_checks.train("user_rules:PerSampleDFA", arch, "digits", arch_options=sizes,
                              **{**SMALL, "data_options": {}})
        x, y = run.data.eval_batch(16)
        hidden = fa_checks.anatomy_of(run.model).hidden_states(x)
        signals = run.method.credit(x, y)
        assert [s.shape for s in signals] == [h.shape for h in hidden]
        # every position of a sample gets that sample's one signal
        flat = run.method.local_credit(hidden, run.model.readout(hidden[-1]), y)
        axis = run.model.feature_axis % hidden[0].dim()
        first = signals[1].movedim(axis, -1).reshape(16, -1, flat[1].shape[1])
        assert torch.allclose(first, flat[1][:, None, :].expand_as(first), atol=1e-5)


# -- a user's model: a factory is an architecture ---------------------------------------------
@pytest.mark.parametrize("rule", ["dfa", "fa", "bp", "user_rules:PerSampleDFA"])
def test_a_model_without_d_hidden_trains_every_kind_of_rule(rule, tmp_path):
    run = fa_checks.train(rule, NET, "synthetic", arch_options={"width": 10},
                          checkpoint=tmp_path / "run.pt", **SMALL)
    assert run.model.spec == {"arch": NET, "kwargs": {"input_shape": [20], "num_classes": 4,
                                                      "width": 10}}
    assert not hasattr(run.model, "d_hidden")
    x, y = run.data.eval_batch(64)
    report = fa_checks.evaluate(run.model, x, y, method=run.method, baseline_acc=0.0,
                                null_draws=2, directions=4)
    assert report.credit is not None
    saved = load_checkpoint(tmp_path / "run.pt", import_archs={NET}, import_methods={rule})
    assert saved.arch == NET and saved.arch_kwargs["width"] == 10
    model = saved.build_model()
    assert torch.equal(model.out_head.weight, run.model.out_head.weight)
    method = saved.build_method(model)
    for key, value in run.method.state_dict().items():
        assert torch.equal(method.state_dict()[key], value)


def test_a_checkpoint_naming_a_factory_is_refused_untrusted_before_importing(tmp_path):
    fa_checks.train("bp", "user_models:make_anything", "synthetic", arch_options={"width": 8},
                    checkpoint=tmp_path / "run.pt", **SMALL)
    sys.modules.pop("user_models", None)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "run.pt")
    message = str(info.value)
    assert "would import module 'user_models'" in message and "--trust" in message
    assert len(message) - len(str(tmp_path / "run.pt")) < 250  # one short sentence plus the fix
    assert "user_models" not in sys.modules
    trusted = load_checkpoint(tmp_path / "run.pt", trust=True)
    assert trusted.build_model().out_head.in_features == 8


def test_an_entry_point_of_fa_checks_models_needs_no_trust(monkeypatch, tmp_path):
    import fa_checks.references as references

    own = metadata.EntryPoint(name="tiny-net", value=NET, group="fa_checks.models")
    real = metadata.entry_points

    def entry_points(**selection):
        found = list(real(**selection))
        return found + [own] if selection.get("group") == "fa_checks.models" else found

    monkeypatch.setattr(references.metadata, "entry_points", entry_points)
    fa_checks.train("dfa", "tiny-net", "synthetic", checkpoint=tmp_path / "run.pt", **SMALL)
    saved = load_checkpoint(tmp_path / "run.pt")
    assert saved.arch == "tiny-net" and saved.build_model().out_head.in_features == 12


@pytest.mark.parametrize("arch, options, expected", [
    ("user_models:not_a_model", {}, "returned a str; it must return an nn.Module"),
    ("user_models:no_num_classes", {}, "cannot be called as no_num_classes(input_shape=..., "
                                       "num_classes=...)"),
    (NET, {"height": 3}, "takes no keyword height; it takes width, depth"),
    ("user_models:nothing_here", {}, "module 'user_models' has no attribute 'nothing_here'"),
    ("nope", {}, "unknown architecture 'nope'; choose one of mlp, resmlp, resnet, vit or name"),
])
def test_a_bad_factory_is_one_sentence(arch, options, expected):
    with pytest.raises(ModelError) as info:
        build_model(arch, input_shape=(4,), num_classes=2, **options)
    assert expected in str(info.value)


def test_a_factory_that_raises_is_the_users_to_fix(capsys, tmp_path):
    assert main(["train", "--method", "bp", "--arch", "user_models:raises", "--data",
                 "synthetic", "--epochs", "1", "--no-progress", "-o", str(tmp_path / "x.pt")]) == 2
    line = one_error_line(capsys)
    assert "ValueError raised in your code (user_models, line" in line and "in raises" in line


def test_the_command_line_trains_checks_and_refuses_a_factory(capsys, tmp_path):
    out = tmp_path / "mine.pt"
    assert main(["train", "--method", "user_rules:PerSampleDFA", "--arch", NET, "--arch-arg",
                 "width=8", "--data", "synthetic", "--data-arg", "num_samples=200",
                 "--epochs", "1", "--no-progress", "-o", str(out)]) == 0
    assert f"on {NET}/synthetic" in capsys.readouterr().out
    assert main(["check", str(out), "--baseline-acc", "0"]) == 2
    assert "pass --trust" in one_error_line(capsys)
    assert main(["check", str(out), "--trust", "--data-arg", "num_samples=200"]) in (0, 1)
    assert f"frozen-blocks baseline ({NET} on synthetic" in capsys.readouterr().err
    assert main(["train", "--method", "bp", "--arch", NET, "--arch-arg", "height=2",
                 "-o", str(tmp_path / "y.pt")]) == 2
    assert "--arch-arg height" in one_error_line(capsys)


def test_the_cache_key_holds_the_factorys_source(tmp_path, monkeypatch):
    from fa_checks.subjects import fresh_subjects
    from fa_checks.training.runs import training_spec

    folder = tmp_path / "src"
    folder.mkdir()
    source = (HERE / "user_models.py").read_text()
    (folder / "edited_models.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    [subject] = fresh_subjects("bp", [0], arch="edited_models:make_net", data="synthetic")
    before = training_spec(subject)
    assert before["arch_options"] == {"width": 12, "depth": 2}  # defaults filled in
    (folder / "edited_models.py").write_text(source + "\n# edited\n")
    assert training_spec(subject)["arch_source"] != before["arch_source"]
    [builtin] = fresh_subjects("bp", [0], data="synthetic")
    assert "arch_source" not in training_spec(builtin)


def test_pytest_refuses_a_broken_rule_as_a_usage_error(pytester, monkeypatch):
    # the working gate of a user's rule on a user's model: the configuration test below
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH",
                                                                               "")]))
    broken = pytester.runpytest_subprocess("-p", "no:randomly", "--fa-method",
                                           "user_rules:LocalCreditWithoutY")
    assert broken.ret == 4
    broken.stderr.fnmatch_lines(["*define it as local_credit(self, hidden, logits, y)*"])


# -- the gate in the configuration ------------------------------------------------------------
def test_a_misspelt_ini_key_is_a_usage_error_naming_the_nearest(pytester):
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\nfa_max_grwoth = 10\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*unknown ini option fa_max_grwoth in *pyproject.toml: did you "
                                 "mean fa_max_growth?"])


def test_a_gate_in_the_configuration_alone_joins_the_repositorys_own_tests(pytester,
                                                                            monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH",
                                                                               "")]))
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / "cache"))
    pytester.makepyprojecttoml(f"""
        [tool.pytest.ini_options]
        testpaths = ["tests"]
        fa_methods = ["user_rules:PerSampleDFA"]
        fa_seeds = [1]
        fa_arch = "{NET}"
        fa_arch_args = ["width=8"]
        fa_data = "synthetic"
        fa_data_args = ["num_samples=200"]
        fa_epochs = 1
        fa_threads = 1
    """)
    pytester.mkdir("tests")
    pytester.path.joinpath("tests", "test_own.py").write_text("def test_own():\n    pass\n")
    bare = pytester.runpytest_subprocess("-p", "no:randomly", "-rA")
    assert bare.ret in (0, 1)
    bare.stdout.fnmatch_lines(["*PASSED tests/test_own.py::test_own*"])
    bare.stdout.fnmatch_lines(["*suite.py::test_scale_stability?user_rules:PerSampleDFA-seed1?*"])
    outcomes = bare.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 4  # D1-D3 and the own
    own_only = pytester.runpytest_subprocess("-p", "no:randomly", "-m", "not fa_checks")
    own_only.assert_outcomes(passed=1, deselected=3)
    named = pytester.runpytest_subprocess("-p", "no:randomly", "tests/test_own.py")
    named.assert_outcomes(passed=1)


def test_a_conv_model_with_its_own_feature_axis_and_a_duck_typed_rule(tmp_path):
    run = fa_checks.train("user_rules:PerSampleDFA", "user_models:make_convnet", "digits",
                          **{**SMALL, "data_options": {}})
    x, y = run.data.eval_batch(16)
    hidden = fa_checks.anatomy_of(run.model).hidden_states(x)
    assert [tuple(s.shape) for s in run.method.credit(x, y)] == [(16, 4, 8, 8)] * 3
    assert run.method.feature_dims() == [4, 4, 4] and hidden[0].shape == (16, 4, 8, 8)

    duck = fa_checks.train("user_rules:DuckBP", NET, "synthetic", checkpoint=tmp_path / "d.pt",
                           **SMALL)
    x, y = duck.data.eval_batch(64)
    report = fa_checks.evaluate(duck.model, x, y, method=duck.method, baseline_acc=0.0)
    assert report.credit is not None and report.credit.null_mean is None  # nothing to redraw
    assert load_checkpoint(tmp_path / "d.pt", trust=True).method == "user_rules:DuckBP"


def test_a_model_that_cannot_take_the_data_is_refused_when_built(capsys, tmp_path):
    assert main(["train", "--method", "bp", "--arch", "user_models:make_convnet", "--data",
                 "synthetic", "--epochs", "1", "--no-progress", "-o", str(tmp_path / "x.pt")]) == 2
    line = one_error_line(capsys)
    assert "model factory 'user_models:make_convnet' built a ConvNet that cannot take inputs " \
           "shaped (20,)" in line


def test_every_built_in_rule_keeps_the_contract_it_holds_users_to():
    from fa_checks.methods import available_methods
    from fa_checks.methods.contract import check_rule_class

    for name in available_methods():
        check_rule_class(method_class(name), name)
