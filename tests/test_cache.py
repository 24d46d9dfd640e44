"""The artifact cache: content addresses, compute-once across processes, atomic creation."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fa_checks.cache.store import (
    CREATED_LOG,
    KEY_LENGTH,
    ArtifactCache,
    CacheError,
    canonical_json,
    default_cache_root,
    file_digest,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(
    allow_nan=False, allow_infinity=False
)
specs = st.dictionaries(
    st.text(max_size=6),
    st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8),
    max_size=5,
)


# -- keys ---------------------------------------------------------------------------------
@given(spec=specs)
def test_key_ignores_dict_order(spec):
    cache = ArtifactCache("unused", version="1")
    reordered = dict(reversed(list(spec.items())))
    assert cache.key("run", spec) == cache.key("run", reordered)
    assert len(cache.key("run", spec)) == KEY_LENGTH


@given(spec=specs, extra=st.text(min_size=1, max_size=6))
def test_key_changes_with_the_spec(spec, extra):
    cache = ArtifactCache("unused", version="1")
    changed = {**spec, "__extra__" + extra: 1}
    assert cache.key("run", spec) != cache.key("run", changed)


def test_key_is_sha256_of_canonical_kind_spec_version():
    cache = ArtifactCache("unused", version="9.9")
    spec = {"seed": 3, "method": "dfa", "lr": 1e-3}
    text = json.dumps({"kind": "run", "spec": spec, "version": "9.9"}, sort_keys=True,
                      separators=(",", ":"))
    assert cache.key("run", spec) == hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def test_key_depends_on_kind_and_version_and_reads_tuples_as_lists():
    spec = {"shape": (1, 2)}
    v1, v2 = ArtifactCache("r", version="1"), ArtifactCache("r", version="2")
    assert v1.key("run", spec) != v2.key("run", spec)
    assert v1.key("run", spec) != v1.key("baseline", spec)
    assert v1.key("run", spec) == v1.key("run", {"shape": [1, 2]})
    assert v1.key("run", {"root": Path("a/b")}) == v1.key("run", {"root": "a/b"})


def test_default_version_is_the_library_version():
    from fa_checks import __version__

    assert ArtifactCache("r").version == __version__


def test_path_for_is_root_kind_key_suffix(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.path_for("baseline", {"seed": 1}, ".json")
    assert path == tmp_path / "baseline" / (cache.key("baseline", {"seed": 1}) + ".json")


@pytest.mark.parametrize("kind", ["", "../up", "a/b", ".hidden", "has space"])
def test_bad_kind_is_a_clear_error(tmp_path, kind):
    with pytest.raises(CacheError, match="bad artifact kind"):
        ArtifactCache(tmp_path).path_for(kind, {})


@pytest.mark.parametrize("suffix", ["pt", "/x.pt", ".p/t"])
def test_bad_suffix_is_a_clear_error(tmp_path, suffix):
    with pytest.raises(CacheError, match="bad artifact suffix"):
        ArtifactCache(tmp_path).path_for("run", {}, suffix)


def test_spec_that_is_not_json_is_a_clear_error(tmp_path):
    with pytest.raises(CacheError, match="object .* cannot be part of a cache key"):
        ArtifactCache(tmp_path).key("run", {"model": object()})


def test_canonical_json_is_compact_and_sorted():
    assert canonical_json({"b": 1, "a": (2, 3)}) == '{"a":[2,3],"b":1}'


# -- computing once -----------------------------------------------------------------------
def _writer(text: str, calls: list[Path]):
    def create(tmp: Path) -> None:
        calls.append(tmp)
        tmp.write_text(text)

    return create


def test_get_or_create_computes_once_and_logs_it(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    first = cache.get_or_create("run", {"seed": 0}, _writer("A", calls))
    second = cache.get_or_create("run", {"seed": 0}, _writer("B", calls))
    assert first == second == cache.path_for("run", {"seed": 0})
    assert first.read_text() == "A"
    assert len(calls) == 1
    (entry,) = cache.created()
    assert entry["kind"] == "run"
    assert entry["key"] == cache.key("run", {"seed": 0})
    assert entry["pid"] == os.getpid()
    assert abs(entry["time"] - time.time()) < 60


def test_create_gets_a_temporary_path_beside_the_artifact_with_its_suffix(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    path = cache.get_or_create("report", {"x": 1}, _writer("{}", calls), suffix=".json")
    (tmp,) = calls
    assert tmp.parent == path.parent
    assert tmp.name.endswith(".json") and tmp != path
    assert not tmp.exists()


def test_different_specs_are_different_artifacts(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    a = cache.get_or_create("run", {"seed": 0}, _writer("A", calls))
    b = cache.get_or_create("run", {"seed": 1}, _writer("B", calls))
    assert a != b and a.read_text() == "A" and b.read_text() == "B"
    assert len(cache.created()) == 2


@pytest.mark.parametrize("failure", [RuntimeError("training diverged"), KeyboardInterrupt()])
def test_failed_create_leaves_nothing_and_propagates(tmp_path, failure):
    cache = ArtifactCache(tmp_path)

    def create(tmp: Path) -> None:
        tmp.write_text("half")
        raise failure

    with pytest.raises(type(failure)):
        cache.get_or_create("run", {"seed": 0}, create)
    kind_dir = tmp_path / "run"
    assert [p.name for p in kind_dir.iterdir() if not p.name.endswith(".lock")] == []
    assert cache.created() == []
    # the next request computes it
    path = cache.get_or_create("run", {"seed": 0}, _writer("ok", []))
    assert path.read_text() == "ok"


def test_create_that_writes_nothing_is_an_error(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheError, match="wrote no file"):
        cache.get_or_create("run", {}, lambda tmp: None)
    assert not cache.path_for("run", {}).exists()
    assert cache.created() == []


def test_refresh_recomputes(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls: list[Path] = []
    cache.get_or_create("run", {}, _writer("old", calls))
    path = cache.get_or_create("run", {}, _writer("new", calls), refresh=True)
    assert path.read_text() == "new"
    assert len(calls) == 2 and len(cache.created()) == 2


# -- JSON artifacts -----------------------------------------------------------------------
def stored_json(cache: ArtifactCache, kind: str, spec: Any, value: Any) -> Path:
    """``value`` stored as the ``kind`` artifact of ``spec`` (as evaluation stores a report)."""
    cache.get_or_create_json(kind, spec, lambda: value, refresh=True)
    return cache.path_for(kind, spec, ".json")


def test_json_round_trip_and_absence(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.read_json("report", {"s": 1}) is None
    value = {"verdict": "PASS", "d1": {"max_growth": 1.25, "per_block": [1.0, 1.25]}}
    path = stored_json(cache, "report", {"s": 1}, value)
    assert path == cache.path_for("report", {"s": 1}, ".json")
    assert cache.read_json("report", {"s": 1}) == value
    assert [e["kind"] for e in cache.created()] == ["report"]
    assert [p for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_damaged_json_reads_as_absent(tmp_path):
    said: list[str] = []
    cache = ArtifactCache(tmp_path, log=said.append)
    path = stored_json(cache, "report", {}, {"a": 1})
    path.write_text('{"a": ')
    assert cache.read_json("report", {}) is None
    assert len(said) == 1 and "truncated or edited" in said[0]


def test_get_or_create_json_computes_once_even_for_null(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return None

    assert cache.get_or_create_json("report", {}, compute) is None
    assert cache.get_or_create_json("report", {}, compute) is None
    assert len(calls) == 1


def test_get_or_create_json_recomputes_a_damaged_file(tmp_path):
    cache = ArtifactCache(tmp_path)
    assert cache.get_or_create_json("report", {}, lambda: {"n": 1}) == {"n": 1}
    cache.path_for("report", {}, ".json").write_text("not json")
    with pytest.warns(RuntimeWarning, match="'report' artifact .* is damaged"):
        assert cache.get_or_create_json("report", {}, lambda: {"n": 2}) == {"n": 2}
    assert cache.get_or_create_json("report", {}, lambda: {"n": 3}) == {"n": 2}


def test_json_value_that_cannot_be_stored_is_a_clear_error(tmp_path):
    with pytest.raises(CacheError, match="cannot store as JSON"):
        stored_json(ArtifactCache(tmp_path), "report", {}, {"x": object()})


# -- bookkeeping --------------------------------------------------------------------------
def test_clear_removes_artifacts_and_log_but_keeps_root(tmp_path):
    root = tmp_path / "cache"
    cache = ArtifactCache(root)
    cache.get_or_create("run", {}, _writer("A", []))
    stored_json(cache, "report", {}, [1])
    cache.clear()
    assert root.is_dir() and list(root.iterdir()) == []
    assert cache.created() == []
    assert cache.read_json("report", {}) is None
    ArtifactCache(tmp_path / "never-made").clear()  # a missing root is fine


def test_clear_removes_only_what_the_cache_wrote(tmp_path):
    # FA_CHECKS_CACHE pointed at a folder of the user's own: clearing it must lose nothing
    root = tmp_path / "mine"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("code")
    (root / "notes.txt").write_text("important")
    cache = ArtifactCache(root)
    cache.get_or_create("run", {}, _writer("A", []))
    (root / "run" / "draft.txt").write_text("mine too")
    assert set(cache.info()) == {"run"}  # "src" holds nothing of the cache's
    left = cache.clear()
    assert sorted(left) == sorted([root / "notes.txt", root / "run" / "draft.txt",
                                   root / "src"])
    assert (root / "src" / "main.py").read_text() == "code"
    assert (root / "notes.txt").read_text() == "important"
    assert [p.name for p in (root / "run").iterdir()] == ["draft.txt"]
    assert cache.created() == [] and cache.info() == {}


def test_a_cache_root_that_is_a_file_is_refused_by_every_use(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    cache = ArtifactCache(afile)
    for use in (cache.info, cache.clear):
        with pytest.raises(CacheError, match=f"cache {afile}: not a folder; point FA_CHECKS_CACHE"):
            use()
    monkeypatch.setenv("FA_CHECKS_CACHE", str(afile))
    from fa_checks.settings import Settings

    with pytest.raises(CacheError, match="not a folder"):
        Settings().open_cache()
    assert afile.read_text() == "not a folder"


def test_created_skips_a_line_cut_short(tmp_path):
    cache = ArtifactCache(tmp_path)
    stored_json(cache, "report", {}, 1)
    with open(tmp_path / CREATED_LOG, "a") as handle:
        handle.write('{"kind": "ru')
    assert [e["kind"] for e in cache.created()] == ["report"]


def test_file_digest_is_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_digest(path) == hashlib.sha256(b"abc" * 1000).hexdigest()[:KEY_LENGTH]
    assert file_digest(path, length=64) == hashlib.sha256(b"abc" * 1000).hexdigest()
    path.write_bytes(b"abd" * 1000)
    assert file_digest(path) != hashlib.sha256(b"abc" * 1000).hexdigest()[:KEY_LENGTH]


def test_default_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FA_CHECKS_CACHE", str(tmp_path / "explicit"))
    assert default_cache_root() == tmp_path / "explicit"
    monkeypatch.delenv("FA_CHECKS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "fa-checks"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_root() == tmp_path / "home" / ".cache" / "fa-checks"


# -- several processes --------------------------------------------------------------------
def _slow_create(counter: str):
    def create(tmp: Path) -> None:
        with open(counter, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # hold the lock long enough that the other process must wait
        tmp.write_text(f"made by {os.getpid()}")

    return create


def _ask_for_artifact(root: str, counter: str, barrier, results) -> None:
    cache = ArtifactCache(root)
    barrier.wait(timeout=120)
    path = cache.get_or_create("run", {"seed": 7}, _slow_create(counter))
    results.put((os.getpid(), str(path), path.read_text()))


def test_two_processes_asking_at_once_compute_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    counter = tmp_path / "calls.txt"
    workers = [
        context.Process(target=_ask_for_artifact,
                        args=(str(tmp_path / "cache"), str(counter), barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len({pid for pid, _, _ in answers}) == 2
    assert len({path for _, path, _ in answers}) == 1
    assert len({text for _, _, text in answers}) == 1
    assert len(counter.read_text().splitlines()) == 1
    cache = ArtifactCache(tmp_path / "cache")
    (entry,) = cache.created()
    assert answers[0][2] == f"made by {entry['pid']}"
    # a later run reuses it
    assert cache.get_or_create("run", {"seed": 7}, _writer("again", [])).read_text() \
        == answers[0][2]


# -- the cache checks itself --------------------------------------------------------------
def _baseline_schema(value):
    """The kind of check evaluation supplies: a baseline is a dict with an accuracy."""
    if not isinstance(value, dict) or not 0 <= value["test_acc"] <= 1:
        raise ValueError("a baseline needs test_acc between 0 and 1")


def _recording_cache(root: Path) -> tuple[ArtifactCache, list[str]]:
    said: list[str] = []
    return ArtifactCache(root, log=said.append), said


def test_every_artifact_has_a_digest_beside_it(tmp_path):
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create("run", {}, _writer("weights", []))
    record = json.loads(Path(f"{path}.sha256").read_text())
    assert record == {"sha256": hashlib.sha256(b"weights").hexdigest(), "bytes": 7,
                      "binding": cache.binding("run", path)}
    json_path = stored_json(cache, "report", {}, {"a": 1})
    assert json.loads(Path(f"{json_path}.sha256").read_text())["bytes"] == \
        json_path.stat().st_size


@pytest.mark.parametrize(("damage", "said"), [
    (lambda p: p.write_bytes(p.read_bytes()[:3]), "truncated or edited"),
    (lambda p: p.write_bytes(p.read_bytes().replace(b"w", b"W")), "do not match its digest"),
    (lambda p: Path(f"{p}.sha256").unlink(), "no digest"),
    (lambda p: Path(f"{p}.sha256").write_text("{"), "digest file is damaged"),
], ids=["truncated", "edited", "no-digest", "bad-digest"])
def test_a_damaged_run_is_said_in_one_line_and_computed_again(tmp_path, damage, said):
    cache, lines = _recording_cache(tmp_path)
    calls: list[Path] = []
    path = cache.get_or_create("run", {"seed": 1}, _writer("weights", calls))
    damage(path)
    again = cache.get_or_create("run", {"seed": 1}, _writer("weights", calls))
    assert again == path and path.read_text() == "weights" and len(calls) == 2
    (line,) = lines
    assert said in line and "'run'" in line and str(path) in line and "\n" not in line
    # and the recomputed artifact is served without another word
    cache.get_or_create("run", {"seed": 1}, _writer("never", calls))
    assert len(calls) == 2 and len(lines) == 1


@pytest.mark.parametrize("stored", ["{}", "null", '{"history": []}', '{"test_acc": 7}'])
def test_a_json_artifact_that_fails_its_schema_is_recomputed(tmp_path, stored):
    cache, lines = _recording_cache(tmp_path)
    good = {"test_acc": 0.5}
    cache.get_or_create_json("baseline", {}, lambda: good, validate=_baseline_schema)
    path = cache.path_for("baseline", {}, ".json")
    # bound to its key, with a digest that matches it: only the schema can tell
    _forge(cache, "baseline", path, _bound_entry(cache, "baseline", {}, path, stored))
    value = cache.get_or_create_json("baseline", {}, lambda: {"test_acc": 0.25},
                                     validate=_baseline_schema)
    assert value == {"test_acc": 0.25}
    (line,) = lines
    assert "fails its schema" in line and "test_acc" in line


@pytest.mark.parametrize(("stored", "said"), [
    ("[" * 100_000 + "]" * 100_000, "nests deeper than 32 levels"),
    ('{"test_acc": 1' + "0" * 10_000 + "}", "a number of thousands of digits"),
])
def test_json_that_would_exhaust_the_reader_is_damage_and_recomputed(tmp_path, stored, said):
    cache, lines = _recording_cache(tmp_path)
    cache.get_or_create_json("baseline", {}, lambda: {"test_acc": 0.5}, validate=_baseline_schema)
    path = cache.path_for("baseline", {}, ".json")
    _forge(cache, "baseline", path, stored)  # with a matching digest: the reader must refuse it
    assert cache.get_or_create_json("baseline", {}, lambda: {"test_acc": 0.25},
                                    validate=_baseline_schema) == {"test_acc": 0.25}
    (line,) = lines
    assert str(path) in line and said in line and "computing it again" in line


def test_a_report_edited_to_pass_is_caught_by_its_digest(tmp_path):
    cache, lines = _recording_cache(tmp_path)
    cache.get_or_create_json("report", {}, lambda: {"max_growth": 8433.0})
    path = cache.path_for("report", {}, ".json")
    path.write_text(path.read_text().replace("8433.0", "1.0"))
    assert cache.get_or_create_json("report", {}, lambda: {"max_growth": 8433.0}) == \
        {"max_growth": 8433.0}
    assert "digest" in lines[0]


def test_a_computed_value_that_fails_its_schema_is_a_cache_error_and_not_stored(tmp_path):
    cache = ArtifactCache(tmp_path)
    with pytest.raises(CacheError, match="just computed fails its own check"):
        cache.get_or_create_json("baseline", {}, lambda: {}, validate=_baseline_schema)
    assert not cache.path_for("baseline", {}, ".json").exists()
    assert cache.created() == []


def test_a_file_artifact_can_be_checked_by_the_caller(tmp_path):
    cache, lines = _recording_cache(tmp_path)

    def complete(path: Path) -> None:
        if not path.read_text().endswith("END"):
            raise ValueError("no END marker")

    calls: list[Path] = []
    cache.get_or_create("run", {}, _writer("weights END", calls), validate=complete)
    path = cache.path_for("run", {})
    _forge(cache, "run", path, "weights")  # with a matching digest: the caller's check catches it
    cache.get_or_create("run", {}, _writer("weights END", calls), validate=complete)
    assert len(calls) == 2 and "no END marker" in lines[0]


@pytest.mark.parametrize("suffix", [".sha256", ".pt.lock", ".holder"])
def test_suffixes_the_cache_uses_itself_are_refused(tmp_path, suffix):
    with pytest.raises(CacheError, match="which the cache uses"):
        ArtifactCache(tmp_path).path_for("run", {}, suffix)


# -- temporary files of killed writers ----------------------------------------------------
def _dead_pid() -> int:
    """A pid that ran and is gone: a child that has exited and been reaped."""
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    return child.pid


def test_temporaries_of_dead_writers_and_old_ones_are_removed_on_the_next_write(tmp_path):
    from fa_checks.cache.store import HOST_ID

    cache = ArtifactCache(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    killed = folder / f".abc.pt.{HOST_ID}.{dead}.0123abcd.tmp.pt"
    nested = folder / f"..abc.pt.{HOST_ID}.{dead}.0123abcd.tmp.pt.{dead}.89abcdef.tmp"
    running = folder / f".def.pt.{HOST_ID}.{alive}.0123abcd.tmp.pt"
    elsewhere = folder / f".ghi.pt.00000000.{dead}.0123abcd.tmp.pt"  # another host: keep
    old = folder / f".jkl.pt.{dead}.0123abcd.tmp.pt"  # an older writer's name, a day old
    for path in (killed, nested, running, elsewhere, old):
        path.write_bytes(b"x" * 1000)
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (day_ago, day_ago))
    assert cache.info()["run"]["temporary_files"] == 5
    cache.get_or_create("run", {}, _writer("A", []))
    left = {p.name for p in folder.iterdir() if p.name.startswith(".")}
    assert left == {running.name, elsewhere.name}


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    script = (
        "import os, sys, time\n"
        "from fa_checks.cache.store import ArtifactCache\n"
        "def create(tmp):\n"
        "    tmp.write_bytes(b'x' * 3_000_000)\n"
        "    print('written', flush=True)\n"
        "    time.sleep(600)\n"
        f"ArtifactCache({str(tmp_path)!r}).get_or_create('run', {{'s': 1}}, create)\n"
    )
    import signal
    import subprocess
    import sys

    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    folder = tmp_path / "run"
    assert [p for p in folder.iterdir() if ".tmp" in p.name]  # what a killed writer leaves
    cache = ArtifactCache(tmp_path)
    path = cache.get_or_create("run", {"s": 1}, _writer("done", []))  # the lock was released
    assert path.read_text() == "done"
    assert [p for p in folder.iterdir() if ".tmp" in p.name] == []


# -- locks --------------------------------------------------------------------------------
def _hold_lock(root: str, ready, release) -> None:
    cache = ArtifactCache(root)

    def create(tmp: Path) -> None:
        ready.set()
        release.wait(timeout=120)
        tmp.write_text("made")

    cache.get_or_create("run", {"seed": 3}, create)


def test_a_lock_held_too_long_names_the_artifact_and_its_holder(tmp_path, monkeypatch):
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(timeout=120)
        cache = ArtifactCache(tmp_path, lock_timeout=0.3)
        key = cache.key("run", {"seed": 3})
        with pytest.raises(CacheError) as info:
            cache.get_or_create("run", {"seed": 3}, _writer("never", []))
        message = str(info.value)
        assert f"'run' artifact {key}.pt" in message and f"pid {holder.pid}" in message
        assert "FA_CHECKS_LOCK_TIMEOUT" in message and "\n" not in message
        monkeypatch.setenv("FA_CHECKS_LOCK_TIMEOUT", "0.2")
        with pytest.raises(CacheError, match=f"pid {holder.pid}"):
            ArtifactCache(tmp_path).get_or_create("run", {"seed": 3}, _writer("never", []))
    finally:
        release.set()
        holder.join(timeout=120)
    assert holder.exitcode == 0
    assert ArtifactCache(tmp_path).get_or_create("run", {"seed": 3}, _writer("x", [])) \
        .read_text() == "made"
    assert not list((tmp_path / "run").glob("*.holder"))


@pytest.mark.parametrize("text", ["abc", "-1", "0", "nan"])
def test_a_bad_lock_timeout_variable_is_a_cache_error(monkeypatch, text):
    monkeypatch.setenv("FA_CHECKS_LOCK_TIMEOUT", text)
    with pytest.raises(CacheError, match="FA_CHECKS_LOCK_TIMEOUT"):
        ArtifactCache("unused")


# -- info and clear -----------------------------------------------------------------------
def test_info_counts_artifacts_and_bytes_per_kind_and_clear_removes_one_kind(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.get_or_create("run", {"s": 1}, _writer("a" * 100, []))
    cache.get_or_create("run", {"s": 2}, _writer("b" * 50, []))
    stored_json(cache, "report", {}, {"a": 1})
    info = cache.info()
    assert set(info) == {"run", "report"}
    assert info["run"]["artifacts"] == 2 and info["report"]["artifacts"] == 1
    run_bytes = sum(p.stat().st_size for p in (tmp_path / "run").iterdir())
    assert info["run"]["bytes"] == run_bytes >= 150
    assert info["run"]["temporary_files"] == 0
    cache.clear("run")
    assert set(cache.info()) == {"report"}
    assert cache.read_json("report", {}) == {"a": 1}
    with pytest.raises(CacheError, match="bad artifact kind"):
        cache.clear("../elsewhere")
    assert ArtifactCache(tmp_path / "none").info() == {}


def _bound_entry(cache: ArtifactCache, kind: str, spec, path: Path, value_text: str) -> str:
    """A JSON entry's text as the cache writes it, holding ``value_text`` as its value."""
    binding = {**cache.binding(kind, path), "spec": spec}
    return '{"binding": ' + json.dumps(binding) + ', "value": ' + value_text + "}"


def _forge(cache: ArtifactCache, kind: str, path: Path, text: str) -> None:
    """Write ``text`` as the artifact at ``path`` with a digest that matches it and is bound
    to the key it sits under: only what reads the value can tell."""
    path.write_text(text)
    Path(f"{path}.sha256").write_text(json.dumps(
        {"sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": len(text.encode()),
         "binding": cache.binding(kind, path)}))
