"""Sweeps that use the machine: ``fa-checks sweep -j N`` and ``--config sweep.toml``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fa_checks.cli.main import main
from fa_checks.errors import UserError
from fa_checks.sweep.config import read_sweep_config

GRID = """
methods = ["dfa"]
seeds = [0, 1]
data = "synthetic"
epochs = 1
[method_args]
penalty = [0, 1e-2]
[arch_args]
d_hidden = 16
num_blocks = 1
"""


def test_a_sweep_file_reads_as_the_flags_it_stands_for(tmp_path: Path) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(GRID)
    assert read_sweep_config(path) == {
        "methods": ["dfa"], "seeds": [0, 1], "data": "synthetic", "epochs": 1,
        "method_args": ["penalty=0,0.01"], "arch_args": ["d_hidden=16", "num_blocks=1"]}


@pytest.mark.parametrize(("text", "message"), [
    ('methods = ["dfa"]\nepoch = 3\n', "unknown key 'epoch'; a sweep config takes methods,"),
    ('methods = "dfa"\n', "methods must be a list of strings (as --methods takes)"),
    ('methods = ["dfa"]\nseeds = [0, -1]\n', "seeds must be a list of whole numbers"),
    ('methods = ["dfa"]\nepochs = true\n', "epochs must be a whole number"),
    ('methods = ["dfa"]\nlr = nan\n', "lr must be a number"),
    ('methods = ["dfa"]\n[method_args]\npenalty = [[1]]\n', "method_args must be a table"),
    ('methods = ["dfa"]\nlr = -1\n', "lr: it must be greater than 0"),
    ("methods = [\n", "not a TOML file"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    assert main(["sweep", "--config", str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and message in err[0], err


def test_a_sweep_without_methods_says_where_to_give_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sweep", "-o", str(tmp_path)]) == 2
    assert "sweep needs --methods, or methods in --config" in capsys.readouterr().err


@pytest.mark.parametrize("jobs", ["0", "-2", "many"])
def test_a_bad_job_count_is_a_usage_error(tmp_path: Path, jobs: str) -> None:
    assert main(["sweep", "--methods", "bp", "-j", jobs, "-o", str(tmp_path)]) == 2


def test_read_sweep_config_refuses_what_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a folder"):
        read_sweep_config(tmp_path)


@pytest.mark.slow
def test_two_processes_print_the_table_of_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "sweep.toml").write_text(GRID)
    common = ["sweep", "--config", str(tmp_path / "sweep.toml"), "--baseline-acc", "0.1",
              "--no-credit", "--no-progress", "-q"]
    tables = []
    for jobs in ("1", "2"):
        code = main([*common, "-j", jobs, "--retrain", "-o", str(tmp_path / jobs)])
        tables.append(capsys.readouterr().out.split("\n\n")[0])
        assert code in (0, 1)
    assert tables[0] == tables[1] and "dfa-penalty=0.01" in tables[0]
    assert sorted(p.name for p in (tmp_path / "2").iterdir()) == sorted(
        p.name for p in (tmp_path / "1").iterdir())
