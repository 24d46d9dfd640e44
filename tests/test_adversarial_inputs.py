"""Hostile inputs other than reports and the cache: archives whose member names are ambiguous,
pickles built to explode when walked or printed, glob patterns over link loops, an address where
something that is not Ray listens, and file names that would repaint the terminal.  Each ends in
a verdict or a one-line refusal, quickly, through both faces where both read the input."""

from __future__ import annotations

import pickle
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from hostile import archive_with, nested_lists_pickle, not_ray_server, shared_bomb

from fa_checks.checkpoint import CheckpointError, load_checkpoint
from fa_checks.cli.main import main
from fa_checks.subjects import checkpoint_subjects

ESCAPE = "\x1b[2J\u202e"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "default-cache"))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def plugin(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, "-p", "no:xdist", "--fa-device", "cpu",
                                         "--color=no", timeout=120)


def _pickle_of(value) -> bytes:
    return pickle.dumps(value, protocol=2)


# -- archives: the pickle scanned is the pickle loaded ---------------------------------------------
HOSTILE_ARCHIVES = {
    # data.pkl beside DATA.PKL: one scanned, the other loaded, on a case-folding reader
    "case": lambda: archive_with(_pickle_of({}), extra={"archive/DATA.PKL": _pickle_of({})}),
    "duplicate": lambda: archive_with(_pickle_of({}), extra={"archive/data.pkl": b"x"}),
    "two-pickles": lambda: archive_with(_pickle_of({}), extra={"archive/other.pkl": b"x"}),
    "backslash": lambda: archive_with(_pickle_of({}), extra={"archive\\data/0": b"x"}),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ARCHIVES))
def test_an_archive_with_ambiguous_member_names_is_refused(tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.pt"
    with pytest.warns(UserWarning) if kind == "duplicate" else _nothing():
        path.write_bytes(HOSTILE_ARCHIVES[kind]())
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    code, _, err = cli(capsys, "check", str(path), "--baseline-acc", "0.3")
    assert code == 2 and str(path) in one_line(err)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- pickles built to explode when walked or printed -----------------------------------------------
BOMBS = {
    "format-shared": lambda: _pickle_of({"format": shared_bomb(28)}),
    "arch-kwargs-shared": lambda: _pickle_of({"format": "fa-checks/1", "arch": "resmlp",
                                              "arch_kwargs": {"d_hidden": shared_bomb(28)}}),
    "method-options-shared": lambda: _pickle_of({"format": "fa-checks/1", "method": "dfa",
                                                 "method_options": {"x": shared_bomb(28)}}),
    "format-nested": lambda: nested_lists_pickle(100_000),
    "history-nested": lambda: nested_lists_pickle(100_000, key="history"),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_pickle_bomb_is_refused_quickly_through_both_faces(tmp_path, capsys, pytester, kind):
    path = tmp_path / "bomb.pt"
    path.write_bytes(archive_with(BOMBS[kind]()))
    started = time.monotonic()
    code, _, err = cli(capsys, "check", str(path), "--baseline-acc", "0.3")
    assert code == 2 and time.monotonic() - started < 10
    line = one_line(err)
    assert str(path) in line and ("nested deeper" in line or "values counted" in line)
    if kind == "format-nested":  # the plugin reads the same file through the same library
        shutil.copy(path, pytester.path / "bomb.pt")
        result = plugin(pytester, "--fa-checkpoint", "bomb.pt", "--fa-baseline-acc", "0.3")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert "Traceback" not in result.stdout.str()
        result.stdout.fnmatch_lines(["*bomb.pt*nested deeper*"])


# -- globs over a link loop ------------------------------------------------------------------------
def _loop(root: Path) -> None:
    (root / "runs" / "a" / "b").mkdir(parents=True)
    (root / "runs" / "a" / "b" / "up").symlink_to(root / "runs")
    (root / "runs" / "a" / "b" / "up2").symlink_to(root / "runs" / "a")
    (root / "runs" / "a" / "m.pt").write_bytes(b"x")


def test_a_recursive_glob_over_a_link_loop_ends_quickly(tmp_path, capsys, pytester, monkeypatch):
    _loop(tmp_path)
    started = time.monotonic()
    found = checkpoint_subjects(["runs/**/*.pt"], cwd=tmp_path)
    assert [s.id for s in found] == ["runs/a/m.pt"] and time.monotonic() - started < 5
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    code, _, err = cli(capsys, "check", "runs/**/*.nothing")
    assert code == 2 and "matches no file" in one_line(err)
    assert time.monotonic() - started < 10
    _loop(pytester.path)
    started = time.monotonic()
    result = plugin(pytester, "--fa-checkpoint", "runs/**/*.nothing")
    assert result.ret == pytest.ExitCode.USAGE_ERROR and time.monotonic() - started < 60


# -- an address where something that is not Ray listens --------------------------------------------
@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"])
def test_ray_at_an_address_that_is_not_ray_is_refused_in_one_line(tmp_path, capsys, answer):
    pytest.importorskip("ray")
    from fa_checks.cluster.connect import RayError, check_reachable

    with not_ray_server(answer) as port:
        address = f"127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(RayError, match=f"--ray {address}: something listens there"):
            check_reachable(address, "--ray", timeout=1.0)
        assert time.monotonic() - started < 5
        checkpoint = _untrained(tmp_path / "x.pt")  # nothing cached: the run must connect
        started = time.monotonic()
        code, _, err = cli(capsys, "check", str(checkpoint), "--ray", address)
        assert code == 2 and address in one_line(err) and "not a Ray cluster" in err
        assert time.monotonic() - started < 30


@pytest.mark.slow  # a pytest subprocess that imports Ray
def test_the_plugin_refuses_an_address_that_is_not_ray(pytester):
    pytest.importorskip("ray")
    _untrained(pytester.path / "x.pt")
    with not_ray_server() as port:
        started = time.monotonic()
        result = plugin(pytester, "--fa-checkpoint", "x.pt", "--fa-ray", f"127.0.0.1:{port}")
        assert time.monotonic() - started < 60
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"127.0.0.1:{port}" in result.stderr.str() + result.stdout.str()


def _untrained(path: Path) -> Path:
    from fa_checks.checkpoint import save_checkpoint
    from fa_checks.models import build_model

    model = build_model("resmlp", input_shape=(20,), num_classes=4, d_hidden=8, num_blocks=1)
    save_checkpoint(path, model=model, seed=0, epochs=1,
                    data={"name": "synthetic", "num_samples": 200})
    return path


# -- file names that would repaint the terminal ----------------------------------------------------
def test_a_checkpoint_name_reaches_the_terminal_escaped(tmp_path, capsys, pytester):
    name = f"evil{ESCAPE}.pt"
    (tmp_path / name).write_bytes(b"PK\x03\x04 not a checkpoint")
    code, out, err = cli(capsys, "check", str(tmp_path / name), "--baseline-acc", "0.3")
    assert code == 2
    for text in (out, err):
        assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J\\u202e" in err
    (pytester.path / name).write_bytes(b"PK\x03\x04 not a checkpoint")
    result = plugin(pytester, "--fa-checkpoint", "evil*.pt", "--fa-baseline-acc", "0.3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stdout.str() + result.stderr.str()
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b[2J" in text


def test_a_long_or_deep_checkpoint_path_gets_short_plot_names(tmp_path, capsys):
    from fa_checks.output.html import anchors

    long_id = "x" * 300
    deep = "/".join(["d"] * 120) + "/m.pt"
    names = anchors([{"id": long_id}, {"id": deep}, {"id": long_id + "y"}])
    assert all(len(n) <= 80 for n in names) and len(set(names)) == 3


def test_module_does_not_need_torch_for_the_escape_helper():
    from fa_checks.values import printable

    assert printable("plain") == "plain"
    assert printable("a\x1b[0mb\u202ec\u2028") == "a\\x1b[0mb\\u202ec\\u2028"
    assert "torch" in sys.modules and torch is not None  # imported above for the archives


def test_a_huge_sparse_checkpoint_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "sparse.pt"
    with open(path, "wb") as handle:
        handle.truncate(6 * 2**30)
    started = time.monotonic()
    code, _, err = cli(capsys, "check", str(path), "--baseline-acc", "0.3")
    assert code == 2 and time.monotonic() - started < 10
    assert "not a torch checkpoint" in one_line(err)
