"""The README's CI workflow, as far as it runs without network: its install line names a
requirement pip can resolve (fa-checks is on no index), its cache folder is the one fa-checks
uses, and its gate command is the plugin's own (run here on tiny settings from the ini)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

yaml = pytest.importorskip("yaml")  # with the dev extras (ray brings it)

ROOT = Path(__file__).resolve().parents[1]


def workflow() -> dict:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Gate your method in CI", 1)[1]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return yaml.safe_load(block)


def steps() -> dict[str, dict]:
    (job,) = workflow()["jobs"].values()
    return {step.get("name", step.get("uses")): step for step in job["steps"]}


def pip_lines() -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in steps()["Install (CPU torch)"]["run"]
            .splitlines() if line.strip().startswith("pip install")]


def test_the_install_line_names_fa_checks_where_pip_can_find_it():
    specs = [words[2:] for words in pip_lines()]
    ours = [spec for spec in specs if any(w.startswith("fa-checks") for w in spec)]
    assert ours, "the workflow does not install fa-checks"
    for spec in ours:
        requirement = Requirement(spec[0])
        assert requirement.name == "fa-checks"
        assert requirement.url, "a bare `pip install fa-checks` finds nothing: no index has it"
        assert requirement.url.startswith("git+https://")


def test_the_cache_the_workflow_keeps_is_the_one_fa_checks_uses():
    (job,) = workflow()["jobs"].values()
    cache_folder = job["env"]["FA_CHECKS_CACHE"].replace("${{ github.workspace }}/", "")
    assert steps()["actions/cache@v4"]["with"]["path"] == cache_folder


#: the workflow's two gates: on main (saving the accepted report), and on a pull request
#: (comparing with main's)
GATES = ("Gate the method (on main, save the report as the new base)",
         "Gate the method and compare with main")


def gate_command(name: str = GATES[0]) -> list[str]:
    words = shlex.split(steps()[name]["run"])
    assert words[0] == "pytest"
    return words[1:]


@pytest.mark.parametrize("name", GATES)
def test_the_gate_command_is_understood_by_the_plugin(pytester, name):
    from pytest_fa_checks.flags import read_request

    request = read_request(pytester.parseconfig(*gate_command(name)))
    assert request.methods == ("mypkg.rules:MyRule",) and request.get("seeds") == (1, 2, 3)
    assert request.report_path == "fa.json" and request.html_path == "fa.html"


@pytest.mark.slow
def test_the_gate_command_runs_as_written_on_tiny_settings(pytester, monkeypatch):
    """The workflow's own command, with the dataset and epochs pinned small in the ini (as the
    README says a repository may)."""
    pytester.mkpydir("mypkg")
    pytester.path.joinpath("mypkg", "rules.py").write_text(
        "from fa_checks.methods.local import LocalLossMethod, output_error\n\n\n"
        "class MyRule(LocalLossMethod):\n"
        "    def feedback_specs(self):\n"
        "        return [((d, self.num_classes), 0.3) for d in self.feature_dims()]\n\n"
        "    def local_credit(self, hidden, logits, y):\n"
        "        e = output_error(logits, y)\n"
        "        return [e @ b.T for b in self.feedback]\n")
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        fa_data = "synthetic"
        fa_data_args = ["num_samples=200"]
        fa_arch_args = ["d_hidden=16", "num_blocks=2"]
        fa_epochs = 1
    """)
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / ".fa-checks-cache"))
    result = pytester.runpytest_subprocess(*gate_command())
    assert result.ret in (0, 1), result.stdout.str()[-2000:]
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 10  # 3 x 3 + across seeds
    for name in ("fa.json", "fa.html", "fa.xml"):
        assert (pytester.path / name).is_file()


@pytest.mark.slow
def test_a_wheel_built_from_the_repository_carries_the_plugin_and_the_command(tmp_path):
    # built from a copy of the tracked files: an in-tree build leaves build/ and an egg-info
    # whose stale entry points would shadow the installed ones
    source = tmp_path / "src"
    for name in subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", str(source), "-w", str(tmp_path)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("fa_checks-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "pytest_fa_checks/__init__.py" in names and "fa_checks/methods/contract.py" in names
    assert "fa_checks = pytest_fa_checks" in text and "fa-checks = fa_checks.cli.main:main" in text
