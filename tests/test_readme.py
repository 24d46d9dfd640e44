"""The README's example rule is real code: it trains, checkpoints and is checked."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

import fa_checks

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture
def readme_rules(monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    source = next(b for b in blocks if b.startswith("# mypkg/rules.py"))
    module = types.ModuleType("readme_rules")
    exec(compile(source, str(README), "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "readme_rules", module)
    return module


def test_the_readme_rule_trains_and_is_checked_as_module_colon_class(readme_rules, tmp_path):
    run = fa_checks.train("readme_rules:SignFeedback", "resmlp", "synthetic", epochs=2, seed=0,
                          batch_size=32, lr=1e-2, device="cpu", progress=False,
                          arch_options={"d_hidden": 16, "num_blocks": 2},
                          data_options={"num_samples": 200}, checkpoint=tmp_path / "r.pt")
    rule = run.method
    x, y = run.data.eval_batch(64)
    credit = rule.credit(x, y)
    e = torch.softmax(run.model(x), -1) - torch.nn.functional.one_hot(y, 4)
    torch.testing.assert_close(credit[2], e @ rule.feedback[1].sign().T)
    # the user's own file, naming the user's own module: trusted, or it would not import it
    loaded = fa_checks.load_checkpoint(tmp_path / "r.pt", trust=True)
    model = loaded.build_model()
    report = fa_checks.evaluate(model, x, y, method=loaded.build_method(model), baseline_acc=0.25)
    assert report.credit is not None and len(report.credit.cosine) == 3
    assert report.verdict.startswith(("PASS", "FAIL("))


def test_the_readme_library_example_runs(tmp_path, monkeypatch):
    """The example as written, at a test's size: one epoch on the small synthetic task."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    source = next(b for b in blocks if "fa_checks.train(" in b and "import fa_checks" in b)
    small = source.replace("epochs=20", "epochs=1").replace('"mnist1d"', '"synthetic"')
    assert small != source
    exec(compile(small, str(README), "exec"), {"print": lambda *args: None})
    assert (tmp_path / "dfa-pen.pt").is_file()


def test_the_readme_names_every_flag_of_both_faces():
    from pytest_fa_checks.flags import FLAGS

    from fa_checks.cli.main import build_parser

    text = README.read_text()
    missing = [f"--fa-{name}" for name in FLAGS if f"--fa-{name}" not in text]
    assert not missing, missing
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert all(f"fa-checks {name}" in text for name in commands)
