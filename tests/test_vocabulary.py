"""One vocabulary for both faces: every shared flag has the same default, type and meaning in
``fa-checks`` (``--name``) and in pytest (``--fa-name``, and the ini key ``fa_name``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_fa_checks.flags import read_request
from pytest_fa_checks.session import build_settings as plugin_settings
from pytest_fa_checks.session import build_subjects

from fa_checks.cli.main import build_parser, given_flags
from fa_checks.cli.main import main as cli_main
from fa_checks.compare.rules import DEFAULT_SPEC
from fa_checks.errors import UsageError
from fa_checks.flags import CI_LOOP, FRESH_ONLY, OUTPUTS, SHARED, build_settings
from fa_checks.settings import Settings
from fa_checks.subjects import fresh_subjects
from fa_checks.values import parse_key_values

#: a value other than the default for every shared flag that takes one
EXAMPLES = {
    "arch": "mlp", "data": "synthetic", "data-root": "/data", "epochs": "7", "seeds": "3",
    "schedule": "constant", "lr": "0.01", "batch-size": "32", "weight-decay": "0",
    "device": "cpu", "threads": "2", "eval-size": "256", "max-growth": "10",
    "grad-floor": "1e-6", "min-margin": "-1.5", "min-cosine": "0.25", "min-rho": "-0.5",
    "baseline-acc": "0.496", "cache-dir": "/tmp/somewhere", "method-arg": "penalty=0.01",
    "arch-arg": "d_hidden=8", "data-arg": "num_samples=300",
    "ray": "10.0.0.5:6379", "gpus-per-run": "0.25", "cpus-per-run": "2", "baseline": "none",
    "d4-alpha": "0.01", "d4-share": "0.75", "d4-floor": "0.1",
}
#: flags that set no field of their own name (--baseline none: no D3; --no-credit)
SWITCHES = ("baseline", "no-credit")


def _cli_settings(*argv: str) -> Settings:
    args = build_parser().parse_args(["sweep", "--methods", "dfa", "-o", "out", *argv])
    return build_settings(given_flags(args), flag_prefix="--")


def _pytest_settings(pytester: pytest.Pytester, *argv: str) -> Settings:
    return plugin_settings(read_request(pytester.parseconfig("--fa-method", "dfa", *argv)))


def _same(a: Settings, b: Settings) -> None:
    assert dataclasses.replace(a, flag_prefix="") == dataclasses.replace(b, flag_prefix="")


def test_every_shared_flag_has_an_example_and_both_faces_have_it() -> None:
    assert set(EXAMPLES) == {name for name, flag in SHARED.items() if flag.parse is not None}
    sweep = build_parser()._subparsers._group_actions[0].choices["sweep"]  # type: ignore[union-attr]
    options = {o for action in sweep._actions for o in action.option_strings}
    assert {f"--{name}" for name in SHARED} <= options


def test_the_defaults_are_the_same_in_both_faces(pytester: pytest.Pytester) -> None:
    _same(_cli_settings(), _pytest_settings(pytester))
    _same(_cli_settings(), Settings())


@pytest.mark.parametrize("name", sorted(n for n, f in SHARED.items()
                                        if f.setting or n in SWITCHES))
def test_a_setting_means_the_same_in_both_faces(pytester: pytest.Pytester, name: str) -> None:
    flag = SHARED[name]
    argv = [] if flag.parse is None else [EXAMPLES[name]]
    cli = _cli_settings(f"--{name}", *argv)
    assert cli != _cli_settings()  # the example changes something
    _same(cli, _pytest_settings(pytester, f"--fa-{name}", *argv))
    if flag.ini and flag.parse is not None:  # and the ini key means it too
        pytester.makeini(f"[pytest]\nfa_{flag.dest} = {EXAMPLES[name]}\n")
        _same(cli, _pytest_settings(pytester))


@pytest.mark.parametrize("name", sorted(n for n, f in SHARED.items() if f.parse is not None))
def test_a_bad_value_is_refused_by_both_faces_for_the_same_reason(
        pytester: pytest.Pytester, name: str) -> None:
    flag = SHARED[name]
    bad = "" if flag.kind == "string" else "abc"
    with pytest.raises(ValueError) as parsed:
        flag.parse(bad)  # type: ignore[misc]
    reason = str(parsed.value)
    command = ["train", "--method"] if name == "method-arg" else ["sweep", "--methods"]
    with pytest.raises(UsageError) as cli:  # sweep's --method-arg takes comma lists
        build_parser().parse_args([*command, "dfa", "-o", "o", f"--{name}={bad}"])
    assert f"argument --{name}: {bad!r} is not valid: {reason}" in str(cli.value)
    with pytest.raises(pytest.UsageError) as plugin:
        read_request(pytester.parseconfig("--fa-method", "dfa", f"--fa-{name}={bad}"))
    assert str(plugin.value) == f"--fa-{name} {bad!r} is not valid: {reason}"


def test_the_ini_keys_are_typed_as_what_they_are(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig()
    kinds = {"int": "int", "float": "float", "string": "string", "switch": "bool"}
    for flag in SHARED.values():
        if flag.ini:  # a flag given several times is a list ("args"), its key plural
            kind = "args" if flag.many else kinds[flag.kind]
            assert config._parser._inidict[flag.ini_key][1] == kind


def test_fresh_subjects_are_the_same_in_both_faces(pytester: pytest.Pytester) -> None:
    argv = ["--arch", "mlp", "--arch-arg", "d_hidden=8", "--data", "synthetic", "--data-arg",
            "num_samples=300", "--epochs", "3", "--seeds", "4", "2", "--method-arg",
            "penalty=0.01"]
    args = build_parser().parse_args(["sweep", "--methods", "dfa", "-o", "o", *argv])
    cli = fresh_subjects("dfa", args.seeds, arch=args.arch, data=args.data,
                         epochs=args.epochs,
                         method_options=parse_key_values(["penalty=0.01"], what="x"),
                         arch_options=parse_key_values(args.arch_arg, what="x"),
                         data_options=parse_key_values(args.data_arg, what="x"))
    fa_argv = [a.replace("--", "--fa-", 1) if a.startswith("--") else a for a in argv]
    request = read_request(pytester.parseconfig("--fa-method", "dfa", *fa_argv))
    plugin = build_subjects(request, plugin_settings(request), pytester.path)
    assert plugin == cli and [s.id for s in plugin] == ["dfa-penalty=0.01-seed4",
                                                        "dfa-penalty=0.01-seed2"]


def test_help_texts_are_the_same_in_both_faces(pytester: pytest.Pytester) -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    cli_help = {a.option_strings[0]: a.help for command in ("sweep", "train")
                for a in commands[command]._actions if a.option_strings}
    plugin_help = {o.names()[0]: o.attrs().get("help", "")
                   for o in pytester.parseconfig()._parser._anonymous.options
                   + [o for g in pytester.parseconfig()._parser._groups for o in g.options]}
    for name, flag in SHARED.items():
        assert cli_help[f"--{name}"] == flag.help_text() or flag.parse is None
        assert plugin_help[f"--fa-{name}"].startswith(flag.help_text())


def test_the_ci_loops_flags_are_one_vocabulary_in_both_faces(pytester: pytest.Pytester) -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    config = pytester.parseconfig()
    plugin_help = {o.names()[0]: o.attrs().get("help", "")
                   for g in config._parser._groups for o in g.options}
    for command in ("check", "sweep"):
        cli_help = {a.option_strings[0]: a.help for a in commands[command]._actions
                    if a.option_strings}
        for name, flag in CI_LOOP.items():
            assert cli_help[f"--{name}"] == plugin_help[f"--fa-{name}"] == flag.help
    assert "default " + DEFAULT_SPEC in CI_LOOP["compare-fail"].help


@pytest.mark.parametrize("name", ["compare", "compare-fail", "store", "md"])
def test_an_empty_ci_flag_is_refused_by_both_faces_naming_it(
        pytester: pytest.Pytester, name: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", str(tmp_path / "run.pt"), f"--{name}", " "]) == 2
    assert f"--{name}: ' ' is not valid: it must not be empty" in capsys.readouterr().err
    result = pytester.runpytest_subprocess("--fa-checkpoint", str(tmp_path / "run.pt"),
                                           f"--fa-{name}", " ")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--fa-{name} ' ' is not valid: it must not be empty*"])


# -- the same flags give the same outcomes ---------------------------------------------------
TINY = ["--arch", "resmlp", "--arch-arg", "d_hidden=16", "num_blocks=2", "--data", "synthetic",
        "--data-arg", "num_samples=200", "--batch-size", "32", "--lr", "1e-2", "--device", "cpu",
        "--no-progress"]
#: evaluation flags given to both faces (--x here, --fa-x to pytest)
JUDGED = ["--baseline-acc", "0.05", "--min-margin", "-40", "--max-growth", "100",
          "--eval-size", "64", "--device", "cpu"]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two seeds of one method, saved as checkpoints by ``fa-checks train``."""
    folder = tmp_path_factory.mktemp("seeds")
    paths = [folder / f"dfa-{seed}.pt" for seed in (0, 1)]
    for seed, path in enumerate(paths):
        assert cli_main(["train", "--method", "dfa", "--epochs", "1", "--seed", str(seed), *TINY,
                         "--cache-dir", str(folder / "cache"), "-o", str(path)]) == 0
    return paths


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON report without what only says where a file was read."""
    subjects = [{k: v for k, v in entry.items() if k != "subject"} | {
        "subject": {k: v for k, v in entry.get("subject", {}).items() if k != "path"}}
        for entry in data["subjects"]]
    return {"subjects": subjects, "across_seeds": data["across_seeds"]}


@pytest.mark.slow
def test_check_and_the_plugin_give_the_same_outcomes_for_the_same_flags(
        two_seeds: list[Path], pytester: pytest.Pytester, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cache = str(tmp_path / "cache")
    code = cli_main(["check", *map(str, two_seeds), *JUDGED, "--cache-dir", cache, "-q",
                     "--json", str(tmp_path / "cli.json"), "--plots", str(tmp_path / "cli")])
    cli_lines = [line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("across seeds ")]
    # two seeds of one method make one group, and fa-checks check gates it
    assert len(cli_lines) == 1 and cli_lines[0].startswith("across seeds dfa: ")

    fa_flags = [a.replace("--", "--fa-", 1) if a.startswith("--") else a for a in JUDGED]
    subjects = [arg for path in two_seeds for arg in ("--fa-checkpoint", str(path))]
    result = pytester.runpytest_subprocess(
        *subjects, *fa_flags, "--fa-cache-dir", cache, "-p", "no:xdist",
        "--fa-json", str(tmp_path / "plugin.json"), "--fa-plots", str(tmp_path / "plugin"),
        timeout=300)
    plugin_lines = [line.strip() for line in result.stdout.lines
                    if line.strip().startswith("across seeds ")]
    assert plugin_lines == cli_lines
    assert int(result.ret) == code and code in (0, 1)
    cli_json = json.loads((tmp_path / "cli.json").read_text())
    plugin_json = json.loads((tmp_path / "plugin.json").read_text())
    assert _comparable(plugin_json) == _comparable(cli_json)
    assert [e["subject"]["id"] for e in cli_json["subjects"]] == [str(p) for p in two_seeds]
    figures = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert figures and figures == sorted(p.name for p in (tmp_path / "plugin").iterdir())


def test_seed_groups_are_made_of_subjects_that_differ_only_in_seed() -> None:
    from fa_checks.session import CheckSession, fresh_identity, group_subjects

    dfa = fresh_subjects("dfa", [1, 2], arch="mlp", data="synthetic", epochs=1)
    other_arch = fresh_subjects("dfa", [3, 4], arch="resmlp", data="synthetic", epochs=1)
    lonely = fresh_subjects("bp", [1], data="synthetic", epochs=1)
    groups = group_subjects({s.id: fresh_identity(s) for s in [*dfa, *other_arch, *lonely]})
    # the same method on two architectures: two groups, told apart by their label
    assert groups == {"dfa": ["dfa-seed1", "dfa-seed2"], "dfa-2": ["dfa-seed3", "dfa-seed4"]}
    # without D3 (--baseline none) there is no margin to gate across seeds
    no_d3 = dataclasses.replace(Settings(), depth_utility=False)
    assert CheckSession(no_d3, dfa).seed_groups == {}
    assert CheckSession(Settings(), dfa).seed_groups == {"dfa": ["dfa-seed1", "dfa-seed2"]}


def test_a_checkpoints_data_is_filled_in_by_one_rule_in_both_faces(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    from fa_checks.session import fill_checkpoints
    from fa_checks.subjects import checkpoint_subjects

    checkpoint = str(tmp_path / "old-format.pt")  # a plain path: refused when evaluated
    args = build_parser().parse_args(["check", checkpoint, "--data", "synthetic",
                                      "--data-arg", "num_samples=300", "--epochs", "3"])
    cli = fill_checkpoints(checkpoint_subjects(args.checkpoints), data=args.data,
                           data_options=parse_key_values(args.data_arg, what="--data-arg"),
                           epochs=args.epochs)
    request = read_request(pytester.parseconfig(
        "--fa-checkpoint", checkpoint, "--fa-data", "synthetic", "--fa-data-arg",
        "num_samples=300", "--fa-epochs", "3"))
    plugin = build_subjects(request, plugin_settings(request), tmp_path)
    assert plugin == cli
    assert (plugin[0].data, plugin[0].data_options, plugin[0].epochs) == (
        "synthetic", {"num_samples": 300}, 3)
    # a parameter the dataset does not take is refused by both, naming the flag
    bad = read_request(pytester.parseconfig("--fa-checkpoint", checkpoint, "--fa-data-arg",
                                            "colour=red"))
    with pytest.raises(ValueError, match="^--fa-data-arg: "):
        build_subjects(bad, plugin_settings(bad), tmp_path)
    with pytest.raises(ValueError, match="^--data-arg: "):
        fill_checkpoints(cli, data_options={"colour": "red"})


@pytest.mark.parametrize("name", FRESH_ONLY)
def test_a_flag_of_fresh_runs_is_refused_for_checkpoints_by_both_faces_with_one_sentence(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], name: str) -> None:
    value = {"seeds": "3", "arch": "mlp"}.get(name, "k=1")
    assert cli_main(["check", "x.pt", f"--{name}", value]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith(f"fa-checks: error: --{name} applies to fresh runs (a checkpoint "
                           "records its own method, options, architecture and seed)")
    with pytest.raises(pytest.UsageError) as plugin:
        read_request(pytester.parseconfig("--fa-checkpoint", "x.pt", f"--fa-{name}", value))
    assert str(plugin.value).startswith(f"--fa-{name} applies to fresh runs (a checkpoint "
                                        "records its own method")


def test_check_has_every_shared_flag() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    options = {o for action in commands["check"]._actions for o in action.option_strings}
    assert {f"--{name}" for name in SHARED} | {f"--{name}" for name in OUTPUTS} <= options
