"""The cache serves only what it computed for the key it is asked: an entry copied over from
another subject, an edited entry with a recomputed digest, or a checkpoint replaced while it is
read never make a failing model PASS; the cache never writes or deletes through a link, and
never reads a file that is not a bounded regular file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import pytest
from hostile import tiny_checkpoints

from fa_checks.cache.store import ArtifactCache, CacheError
from fa_checks.cli.main import main

CHECK = ["--baseline-acc", "0.3", "--no-credit", "-q", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "default-cache"))


def check(capsys, path: Path, cache: Path, *extra: str) -> tuple[int, str]:
    code = main(["check", str(path), "--cache-dir", str(cache), *CHECK, *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def reports(cache: Path) -> set[Path]:
    return {p for p in (cache / "report").glob("*.json")}


def recomputed(path: Path) -> bool:
    """The entry at ``path`` is one the cache wrote for its own name, and says FAIL."""
    stored = json.loads(path.read_text())
    return (stored["binding"]["name"] == path.name
            and stored["value"]["D1"]["fires"] is True)


def redigest(cache: Path, path: Path, text: str) -> None:
    """Write ``text`` as the entry at ``path`` with a digest recomputed to match it (and
    bound to the name it sits under, as the cache writes it)."""
    path.write_text(text)
    binding = ArtifactCache(cache).binding("report", path)
    Path(f"{path}.sha256").write_text(json.dumps({
        "sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": len(text.encode()),
        "binding": binding}))


# -- binding: an entry answers only the key it was written under -----------------------------------
def test_another_subjects_report_copied_over_is_not_served(tmp_path, files, capsys):
    cache = tmp_path / "cache"
    assert check(capsys, files["exploding.pt"], cache)[0] == 1
    (failing,) = reports(cache)
    assert check(capsys, files["bp.pt"], cache)[0] == 0
    (passing,) = reports(cache) - {failing}
    for suffix in ("", ".sha256"):
        shutil.copy(f"{passing}{suffix}", f"{failing}{suffix}")
    assert check(capsys, files["exploding.pt"], cache)[0] == 1
    assert recomputed(failing)


def test_an_edited_report_with_a_recomputed_digest_is_not_served(tmp_path, files, capsys):
    cache = tmp_path / "cache"
    assert check(capsys, files["exploding.pt"], cache)[0] == 1
    (entry_path,) = reports(cache)
    stored = json.loads(entry_path.read_text())
    value = stored["value"]
    value["verdict"], value["mode1"] = "PASS", False
    value["D1"].update(max_growth=1.0, fires=False)
    value["D2"].update(g_L=1.0, fires=False)
    redigest(cache, entry_path, json.dumps(stored))
    assert check(capsys, files["exploding.pt"], cache)[0] == 1
    assert recomputed(entry_path)
    # so is one whose thresholds were loosened, its figures and flags made to agree with them
    stored["value"] = json.loads(json.dumps(value))
    for section, name in (("D1", "threshold"), ("D2", "floor")):
        stored["value"][section][name] = 1e300 if name == "threshold" else 0.0
    redigest(cache, entry_path, json.dumps(stored))
    assert check(capsys, files["exploding.pt"], cache)[0] == 1
    assert recomputed(entry_path)


# -- a checkpoint read once: hashed and loaded from the same bytes ---------------------------------
def test_a_checkpoint_replaced_while_it_is_read_is_judged_as_the_bytes_hashed(
        tmp_path, files, capsys, monkeypatch):
    import fa_checks.checkpoint.load as load

    cache = tmp_path / "cache"
    target = tmp_path / "model.pt"
    shutil.copy(files["exploding.pt"], target)
    original = load._torch_load

    def swapped(path, handle, **kwargs):  # another process replaces the file meanwhile
        shutil.copy(files["bp.pt"], target)
        return original(path, handle, **kwargs)

    monkeypatch.setattr(load, "_torch_load", swapped)
    assert check(capsys, target, cache)[0] == 1  # the bytes hashed are the bytes judged
    monkeypatch.setattr(load, "_torch_load", original)
    assert check(capsys, target, cache)[0] == 0  # now bp's bytes: their own report
    shutil.copy(files["exploding.pt"], target)
    assert check(capsys, target, cache)[0] == 1  # the failing bytes are never served PASS


PATCH = """
import shutil, fa_checks.checkpoint.load as load
_original = load._torch_load
def _swapped(path, handle, **kwargs):
    shutil.copy({good!r}, {target!r})
    return _original(path, handle, **kwargs)
load._torch_load = _swapped
"""


@pytest.mark.slow  # two pytest -n 2 subprocesses
def test_the_plugin_with_xdist_judges_the_bytes_it_hashed(pytester, files, monkeypatch):
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / "fa-cache"))
    target = pytester.path / "model.pt"
    shutil.copy(files["exploding.pt"], target)
    pytester.makeconftest(PATCH.format(good=str(files["bp.pt"]), target=str(target)))
    args = ["--fa-checkpoint", "model.pt", "--fa-baseline-acc", "0.3", "--fa-device", "cpu",
            "-p", "no:cacheprovider"]
    raced = pytester.runpytest_subprocess(*args, "-n", "2", timeout=300)
    assert raced.ret == 1, raced.stdout.str()
    (pytester.path / "conftest.py").unlink()
    shutil.copy(files["exploding.pt"], target)
    again = pytester.runpytest_subprocess(*args, "-n", "2", timeout=300)
    assert again.ret == 1, again.stdout.str()
    again.stdout.no_fnmatch_line("*model.pt * PASS*")


def test_the_plugin_never_serves_a_copied_over_report(pytester, files, monkeypatch):
    cache = pytester.path / "fa-cache"
    monkeypatch.setenv("FA_CHECKS_CACHE", str(cache))
    for name in ("bp.pt", "exploding.pt"):
        shutil.copy(files[name], pytester.path / name)
    args = ["--fa-baseline-acc", "0.3", "--fa-device", "cpu", "-p", "no:xdist"]
    assert pytester.runpytest_subprocess("--fa-checkpoint", "exploding.pt", *args).ret == 1
    (failing,) = reports(cache)
    assert pytester.runpytest_subprocess("--fa-checkpoint", "bp.pt", *args).ret == 0
    (passing,) = reports(cache) - {failing}
    for suffix in ("", ".sha256"):
        shutil.copy(f"{passing}{suffix}", f"{failing}{suffix}")
    result = pytester.runpytest_subprocess("--fa-checkpoint", "exploding.pt", *args)
    assert result.ret == 1
    result.stdout.no_fnmatch_line("*exploding.pt * PASS*")


# -- hygiene: no write or delete through a link, nothing deleted the index does not name -----------
def test_clear_deletes_nothing_the_cache_did_not_write(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    photo = home / "photos" / "0123456789abcdef0123.jpg"
    photo.write_bytes(b"jpeg")
    (home / "project").mkdir()
    cache = ArtifactCache(home)
    cache.get_or_create_json("report", {"a": 1}, lambda: {"x": 1})
    assert main(["cache", "clear", "--cache-dir", str(home)]) == 0
    assert photo.read_bytes() == b"jpeg" and (home / "project").is_dir()
    assert not (home / "report").exists()
    # a kind named on the command line clears only what the index says it wrote there
    (home / "run").mkdir()
    stray = home / "run" / "0123456789abcdef0123.pt"
    stray.write_bytes(b"mine")
    assert main(["cache", "clear", "--kind", "run", "--cache-dir", str(home)]) == 0
    assert stray.read_bytes() == b"mine"
    capsys.readouterr()


@pytest.mark.parametrize("part", ["run", "created.jsonl", "created.jsonl.lock"])
def test_a_symlinked_part_of_the_cache_is_refused_in_one_line(tmp_path, capsys, part):
    cache_dir = tmp_path / "cache"
    cache = ArtifactCache(cache_dir)
    cache.get_or_create("run", {}, lambda tmp: tmp.write_bytes(b"w"))
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = outside / "0123456789abcdef0123.pt"
    precious.write_bytes(b"precious")
    link = cache_dir / part
    if link.is_dir():
        shutil.rmtree(link)
    else:
        link.unlink(missing_ok=True)
    link.symlink_to(outside if part == "run" else precious)
    with pytest.raises(CacheError, match="symbolic link"):
        cache.get_or_create("run", {"other": 1}, lambda tmp: tmp.write_bytes(b"w"))
    code = main(["cache", "clear", "--kind", "run", "--cache-dir", str(cache_dir)])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "symbolic link" in err
    assert precious.read_bytes() == b"precious"


def test_a_lock_or_holder_link_is_never_written_through(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    path = cache.path_for("run", {})
    path.parent.mkdir(parents=True)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    Path(f"{path}.lock.holder").symlink_to(precious)
    with pytest.raises(CacheError, match="symbolic link"):
        cache.get_or_create("run", {}, lambda tmp: tmp.write_bytes(b"w"))
    assert precious.read_text() == "keep"
    other = cache.path_for("run", {"b": 1})
    Path(f"{other}.lock").symlink_to(precious)
    with pytest.raises(CacheError, match="symbolic link"):
        cache.get_or_create("run", {"b": 1}, lambda tmp: tmp.write_bytes(b"w"))
    assert precious.read_text() == "keep"


# -- every file read from the cache is a regular file under a bound --------------------------------
@pytest.mark.parametrize("what", ["fifo", "dev-zero", "sparse"])
@pytest.mark.parametrize("where", ["entry", "digest"])
def test_a_cache_file_that_is_not_a_bounded_regular_file_is_recomputed_at_once(
        tmp_path, what, where):
    lines: list[str] = []
    cache = ArtifactCache(tmp_path, log=lines.append)
    cache.get_or_create_json("report", {}, lambda: {"v": 1})
    path = cache.path_for("report", {}, ".json")
    target = path if where == "entry" else Path(f"{path}.sha256")
    target.unlink()
    if what == "fifo":
        os.mkfifo(target)
    elif what == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        with open(target, "wb") as handle:
            handle.truncate(6 * 2**30)
    started = time.monotonic()
    assert cache.get_or_create_json("report", {}, lambda: {"v": 2}) == {"v": 2}
    assert time.monotonic() - started < 5
    assert lines and "damaged" in lines[0] and "\n" not in lines[0]


def test_a_tampered_generated_data_file_is_regenerated_at_once(tmp_path):
    from fa_checks.data import mnist1d

    params = mnist1d.check_params(num_samples=200, train_split=0.8, seed=0)
    path = mnist1d.cache_path(params, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(2600 * 2**20)
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = mnist1d.load(tmp_path, num_samples=200, train_split=0.8, seed=0)
    assert time.monotonic() - started < 30
    assert len(data.y_train) + len(data.y_test) == 200
    assert any("regenerating" in str(w.message) for w in caught)
    assert path.stat().st_size < 2**20


def test_a_run_artifact_swapped_for_a_sparse_file_is_recomputed_at_once(tmp_path):
    lines: list[str] = []
    cache = ArtifactCache(tmp_path, log=lines.append)
    path = cache.get_or_create("run", {}, lambda tmp: tmp.write_bytes(b"weights"))
    path.unlink()
    with open(path, "wb") as handle:
        handle.truncate(6 * 2**30)
    started = time.monotonic()
    again = cache.get_or_create("run", {}, lambda tmp: tmp.write_bytes(b"weights"))
    assert again.read_bytes() == b"weights" and time.monotonic() - started < 5
    assert lines and "damaged" in lines[0]
