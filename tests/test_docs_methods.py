"""docs/methods.md and the README's own rule, run as written on every built-in architecture and
on the user's model of the page: each rule trains, checkpoints, rebuilds and is evaluated."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

import fa_checks
from fa_checks.methods import Method

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "methods.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
FILE = re.compile(r"# file: (\w+)\.py")

#: the page's rules, and the README's, on each architecture with tiny sizes
ARCHS = {
    "resmlp": ("synthetic", {"d_hidden": 16, "num_blocks": 2}),
    "mlp": ("synthetic", {"d_hidden": 16, "depth": 3}),
    "vit": ("digits", {"d_model": 16, "n_heads": 2, "num_blocks": 2}),
    "resnet": ("digits", {"width": 4, "num_blocks": 2}),
    "doc_models:make_net": ("synthetic", {"width": 16}),
}
RULES = ["doc_rules:SignFeedback", "doc_rules:RedrawnDFA", "doc_rules:NoisyBP",
         "readme_rules:SignFeedback"]
DATA = {"synthetic": {"num_samples": 256}, "digits": {}}


def doc_files(text: str) -> dict[str, str]:
    """The page's code blocks by the file their first line names (continued blocks appended)."""
    files: dict[str, str] = {}
    for block in BLOCK.findall(text):
        named = FILE.match(block)
        assert named, f"a code block of docs/methods.md names no file: {block[:60]!r}"
        files[named.group(1)] = files.get(named.group(1), "") + block
    return files


def readme_rule() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Gate your own method", 1)[1].split("\n## ", 1)[0]
    (block,) = BLOCK.findall(section)
    return block


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    for name, text in doc_files(DOC.read_text()).items():
        (folder / f"{name}.py").write_text(text)
    (folder / "readme_rules.py").write_text(readme_rule())
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in ("doc_rules", "doc_models", "doc_library", "readme_rules"):
        sys.modules.pop(name, None)


def test_the_page_names_every_hook_the_contract_checks():
    from fa_checks.methods.contract import HOOKS

    text = DOC.read_text()
    for hook in HOOKS:
        assert f"`{hook}(self" in text, hook


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("rule", RULES)
def test_a_documented_rule_trains_checkpoints_and_is_evaluated(user_code, tmp_path, rule, arch):
    data, sizes = ARCHS[arch]
    path = tmp_path / "run.pt"
    run = fa_checks.train(rule, arch, data, epochs=1, seed=0, arch_options=sizes,
                          data_options=DATA[data], batch_size=64, progress=False,
                          checkpoint=path, threads=1)
    assert run.history[0]["train_loss"] == run.history[0]["train_loss"]  # finite, recorded
    x, y = run.data.eval_batch(64)
    report = fa_checks.evaluate(run.model, x, y, method=run.method, baseline_acc=0.0,
                                null_draws=2, directions=4)
    assert report.credit is not None and len(report.credit.cosine) == len(
        fa_checks.anatomy_of(run.model).hidden_states(x))

    saved = fa_checks.load_checkpoint(path, trust=True)
    assert saved.method == rule and saved.arch == arch
    model = saved.build_model()
    method = saved.build_method(model)
    for a, b in zip(model.state_dict().values(), run.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for key, value in run.method.state_dict().items():
        assert torch.equal(method.state_dict()[key], value)


def test_redrawn_dfa_draws_new_feedback_each_epoch(user_code):
    run = fa_checks.train("doc_rules:RedrawnDFA", "resmlp", "synthetic", epochs=2, seed=0,
                          arch_options=ARCHS["resmlp"][1], data_options=DATA["synthetic"],
                          progress=False, threads=1)
    first = run.method.draw_feedback(torch.Generator().manual_seed(0))
    assert len(first) == 3 and not torch.equal(first[0], run.method.feedback[0])
    assert isinstance(run.method, Method) and run.method.generator is not None


def test_the_library_example_runs(user_code, tmp_path):
    library = importlib.import_module("doc_library")
    report = library.gate(tmp_path)
    assert report.verdict.startswith(("PASS", "FAIL"))
