"""One vocabulary for both faces: every shared flag has the same default, type and meaning in
``fa-checks`` (``--name``) and in pytest (``--fa-name``, and the ini key ``fa_name``)."""

from __future__ import annotations

import dataclasses

import pytest
from pytest_fa_checks.checks import build_settings as plugin_settings
from pytest_fa_checks.checks import build_subjects
from pytest_fa_checks.flags import read_request

from fa_checks.cli import UsageError, build_parser, given_flags
from fa_checks.flags import SHARED, build_settings
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
    "ray": "10.0.0.5:6379", "gpus-per-run": "0.25", "cpus-per-run": "2",
}


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


@pytest.mark.parametrize("name", sorted(n for n, f in SHARED.items() if f.setting))
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
