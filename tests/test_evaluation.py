"""What the CLI and the plugin share: key=value options, subjects, devices, cached runs and
baselines, evaluation, the across-seeds gate, output files."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fa_checks.cache.store import ArtifactCache
from fa_checks.checkpoint import CheckpointError, save_checkpoint
from fa_checks.data import load_data
from fa_checks.diagnostics.protocol import gate_across_seeds
from fa_checks.errors import ConfigError, UserError
from fa_checks.evaluation import across_seeds, evaluate_subject, load_subject
from fa_checks.files import check_writable, copy_atomic, write_json_atomic
from fa_checks.methods.bp import BP
from fa_checks.models import build_model
from fa_checks.report import (
    DepthUtility,
    ReferenceValidity,
    Report,
    ScaleStability,
    Thresholds,
)
from fa_checks.settings import Settings, resolve_device
from fa_checks.subjects import Subject, checkpoint_subjects, fresh_subjects
from fa_checks.training.loop import train
from fa_checks.training.runs import baseline_subject, frozen_baseline

DATA_OPTIONS = {"num_samples": 200}
ARCH_OPTIONS = {"d_hidden": 16, "num_blocks": 2}
TINY = {"batch_size": 32, "lr": 1e-2, "device": "cpu", "eval_size": 64}


# -- subjects -------------------------------------------------------------------------------
subjects = st.builds(
    Subject,
    id=st.text(min_size=1, max_size=10),
    kind=st.sampled_from(["checkpoint", "fresh"]),
    path=st.none() | st.text(max_size=10),
    method=st.none() | st.sampled_from(["bp", "dfa", "pkg.mod:Rule"]),
    method_options=st.dictionaries(st.sampled_from(["penalty", "clip"]),
                                   st.floats(allow_nan=False) | st.none()),
    seed=st.none() | st.integers(0, 10_000),
    epochs=st.none() | st.integers(1, 100),
)


@given(subject=subjects)
def test_subject_round_trips_through_its_dict(subject):
    back = Subject.from_dict(subject.to_dict())
    assert back == subject and hash(back) == hash(subject)


def test_subject_keeps_its_own_copy_of_options():
    options = {"penalty": 0.01}
    subject = Subject(id="a", kind="fresh", method="dfa", method_options=options)
    options["penalty"] = 1.0
    assert subject.method_options == {"penalty": 0.01}


def test_subject_from_dict_refuses_unknown_fields():
    with pytest.raises(ConfigError, match="no field colour"):
        Subject.from_dict({"id": "a", "kind": "fresh", "colour": "red"})


def test_checkpoint_subjects_expand_sort_and_deduplicate(tmp_path):
    for name in ("b.pt", "a.pt", "c.txt"):
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / name).write_bytes(b"not a checkpoint")  # corrupt is fine here
    found = checkpoint_subjects(["runs/*.pt", "runs/a.pt"], cwd=tmp_path)
    assert [s.id for s in found] == ["runs/a.pt", "runs/b.pt"]
    assert [Path(s.path) for s in found] == [tmp_path / "runs/a.pt", tmp_path / "runs/b.pt"]
    assert all(s.kind == "checkpoint" and Path(s.path).is_absolute() for s in found)


def test_checkpoint_subjects_accept_an_existing_name_with_glob_characters(tmp_path):
    (tmp_path / "run[1].pt").write_bytes(b"x")
    assert [s.id for s in checkpoint_subjects(["run[1].pt"], cwd=tmp_path)] == ["run[1].pt"]


def test_checkpoint_subjects_refuse_a_glob_that_matches_nothing(tmp_path):
    with pytest.raises(ConfigError) as info:
        checkpoint_subjects(["runs/*.pt"], cwd=tmp_path)
    assert str(info.value).startswith("--fa-checkpoint 'runs/*.pt' matches no file")


def test_checkpoint_subjects_keep_the_order_given(tmp_path):
    for name in ("b.pt", "a.pt", "c.pt"):
        (tmp_path / name).write_bytes(b"x")
    found = checkpoint_subjects(["c.pt", "a.pt", "*.pt"], cwd=tmp_path)
    assert [s.id for s in found] == ["c.pt", "a.pt", "b.pt"]


def test_a_missing_checkpoint_is_a_subject_refused_when_evaluated(tmp_path):
    [subject] = checkpoint_subjects(["missing.pt"], cwd=tmp_path)
    assert subject.path == str(tmp_path / "missing.pt")
    with pytest.raises(UserError, match=r"missing\.pt: no such checkpoint file"):
        evaluate_subject(subject, _settings(baseline_acc=0.2), ArtifactCache(tmp_path / "c"))


def test_fresh_subjects_name_each_seed_and_keep_their_settings():
    found = fresh_subjects("dfa", [3, 1, 3], method_options={"penalty": 0.01}, epochs=5,
                           arch_options={"d_hidden": 32}, data="synthetic")
    assert [s.id for s in found] == ["dfa-penalty=0.01-seed3", "dfa-penalty=0.01-seed1"]
    assert all(s.kind == "fresh" and s.epochs == 5 and s.data == "synthetic" for s in found)
    assert [s.id for s in fresh_subjects("bp", [2])] == ["bp-seed2"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"method": "dfa", "method_options": {"colour": 1}},
         "--method-arg colour: method 'dfa' takes no such option; it takes penalty, clip"),
        ({"method": "dfa", "method_options": {"penalty": "lots"}}, "--method-arg: "),
        ({"method": "bp", "method_options": {"lr": 1}}, "it takes no options"),
        ({"method": "bp", "arch": "transformer9"}, "--arch: unknown architecture 'transformer9'"),
        ({"method": "bp", "arch_options": {"width": 3}}, "--arch-arg width: "),
        ({"method": "bp", "data": "imagenet"}, "--data: unknown dataset 'imagenet'"),
        ({"method": "bp", "data_options": {"size": 3}}, "--data-arg: "),
        ({"method": "bp", "data": "synthetic", "data_options": {"num_samples": -5}},
         "--data-arg: "),
        ({"method": "bp", "data_options": {"size": 3}, "flag_prefix": "--fa-"},
         "--fa-data-arg: "),
        ({"method": "ra_rev", "arch": "resmlp"}, "choose one of those with --arch"),
        ({"method": "bp", "seeds": []}, "no seeds"),
    ],
)
def test_fresh_subjects_validate_eagerly(kwargs, fragment):
    seeds = kwargs.pop("seeds", [0])
    method = kwargs.pop("method")
    with pytest.raises(ConfigError) as info:
        fresh_subjects(method, seeds, **kwargs)
    assert fragment in str(info.value)


# -- devices ---------------------------------------------------------------------------------
def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ConfigError, match="^--device 'tpu' is not a device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
@pytest.mark.parametrize("what", ["--device", "--fa-device"])
def test_resolve_device_refuses_cuda_without_cuda_naming_the_callers_option(name, what):
    with pytest.raises(ConfigError) as info:
        resolve_device(name, what=what)
    assert str(info.value) == (f"{what} {name}: CUDA is not available here; "
                               f"use {what} cpu or auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_cannot_be_used_is_refused_even_with_a_cached_report(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_tiny_checkpoint(tmp_path / "run.pt"))])
    evaluate_subject(subject, _settings(baseline_acc=0.25), cache)  # cached on the CPU
    with pytest.raises(ConfigError, match="^--fa-device cuda: CUDA is not available"):
        evaluate_subject(subject, _settings(baseline_acc=0.25, device="cuda",
                                            flag_prefix="--fa-"), cache)


# -- across seeds ----------------------------------------------------------------------------
def _report_with_margin(margin_pp: float | None, method: str = "dfa") -> Report:
    d1 = ScaleStability(1.0, [1.0], [1.0, 1.0], 50.0, False, "")
    d2 = ReferenceValidity(1.0, [1.0, 1.0], 1e-5, False, "")
    d3 = DepthUtility(margin_pp, None if margin_pp is None else 0.5, 2.0,
                      None if margin_pp is None else margin_pp < 2.0, "")
    return Report(test_acc=0.5, d1=d1, d2=d2, d3=d3, subject={"method": method})


margin_lists = st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=8)


@given(margins=margin_lists, confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_across_seeds_gate_is_the_one_sided_student_t_bound(margins, confidence):
    summary = gate_across_seeds(margins, method="dfa", confidence=confidence)
    n = len(margins)
    # a two-sided interval of level 2c - 1 has the one-sided level-c bound as its lower end
    sem = np.std(margins, ddof=1) / math.sqrt(n)
    lower = np.mean(margins)  # every margin equal: no spread, the bound is the mean
    if sem > 0:
        lower, _ = stats.t.interval(2 * confidence - 1, n - 1, loc=np.mean(margins), scale=sem)
    assert summary.n == n and summary.margins_pp == margins
    assert summary.mean_margin_pp == pytest.approx(sum(margins) / n, abs=1e-9)
    assert summary.std_margin_pp == pytest.approx(np.std(margins, ddof=1), abs=1e-9)
    assert summary.lower_bound_pp == pytest.approx(lower, abs=1e-6)
    assert summary.fires == (summary.lower_bound_pp < 2.0)
    assert f"{summary.lower_bound_pp:.1f}" in summary.explanation


def test_across_seeds_passes_a_consistent_margin_and_fails_a_noisy_one():
    assert not across_seeds("dfa", [_report_with_margin(m) for m in (10.0, 11.0, 12.0)],
                            2.0).fires
    noisy = across_seeds("dfa", [_report_with_margin(m) for m in (0.0, 5.0, 10.0)], 2.0)
    assert noisy.mean_margin_pp == 5.0 and noisy.fires  # mean above 2 pp, bound below


def test_across_seeds_with_one_seed_cannot_gate():
    summary = gate_across_seeds([30.0], method="dfa")
    assert summary.lower_bound_pp == -math.inf and summary.fires
    assert "single seed" in summary.explanation


def test_across_seeds_needs_a_margin_for_every_seed():
    with pytest.raises(ConfigError, match="no D3 margin"):
        across_seeds("dfa", [_report_with_margin(5.0), _report_with_margin(None)], 2.0)


# -- cached evaluation -----------------------------------------------------------------------
def _tiny_checkpoint(path: Path, *, seed: int = 0, epochs: int = 1) -> Path:
    data = load_data("synthetic", **DATA_OPTIONS)
    torch.manual_seed(seed)
    model = build_model("resmlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        **ARCH_OPTIONS)
    return save_checkpoint(path, model=model, data=data.spec, seed=seed, epochs=epochs,
                           optimizer={"lr": 1e-2, "weight_decay": 0.01, "batch_size": 32})


def _kinds(cache: ArtifactCache) -> list[str]:
    return [entry["kind"] for entry in cache.created()]


def _settings(**overrides) -> Settings:
    base = {"eval_size": 64, "device": "cpu", "batch_size": 32, "lr": 1e-2,
            "thresholds": Thresholds()}
    return Settings(**{**base, **overrides})


def test_evaluate_subject_twice_computes_once(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_tiny_checkpoint(tmp_path / "run.pt"))])
    settings = _settings(baseline_acc=0.25)
    first = evaluate_subject(subject, settings, cache)
    second = evaluate_subject(subject, settings, cache)
    assert _kinds(cache) == ["report"]
    assert first.to_dict() == second.to_dict()
    assert first.subject["id"] == subject.id and first.subject["seed"] == 0
    assert first.d3.baseline_acc == 0.25 and first.d1.hidden_norms
    # a setting that changes the figures, or new content in the file, is a new report
    evaluate_subject(subject, _settings(baseline_acc=0.25, eval_size=32), cache)
    _tiny_checkpoint(tmp_path / "run.pt", seed=1)
    evaluate_subject(subject, settings, cache)
    assert _kinds(cache) == ["report"] * 3


def test_evaluate_subject_without_depth_utility_skips_d3(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_tiny_checkpoint(tmp_path / "run.pt"))])
    report = evaluate_subject(subject, _settings(depth_utility=False), cache)
    assert report.d3.fires is None and report.d3.margin_pp is None
    assert "baseline" not in _kinds(cache)


def test_baseline_is_the_frozen_run_trained_like_the_checkpoint_and_cached(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    subjects = checkpoint_subjects(
        [str(_tiny_checkpoint(tmp_path / name, epochs=2)) for name in ("a.pt", "b.pt")]
    )
    reports = [evaluate_subject(s, _settings(), cache) for s in subjects]
    assert _kinds(cache).count("baseline") == 1  # same arch, data, seed, epochs: one baseline
    frozen = train("frozen", "resmlp", "synthetic", epochs=2, seed=0, data_options=DATA_OPTIONS,
                   arch_options=ARCH_OPTIONS, progress=False, **TINY)
    assert reports[0].d3.baseline_acc == reports[1].d3.baseline_acc == frozen.test_acc
    baseline = baseline_subject("resmlp", ARCH_OPTIONS, "synthetic", DATA_OPTIONS, 0, 2)
    again = frozen_baseline(baseline, _settings(), cache)
    assert again == frozen.test_acc and _kinds(cache).count("baseline") == 1


def test_a_fresh_subject_is_trained_once(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = fresh_subjects("bp", [4], data="synthetic", epochs=1, arch_options=ARCH_OPTIONS,
                               data_options=DATA_OPTIONS)
    settings = _settings(baseline_acc=0.25)
    report = evaluate_subject(subject, settings, cache)
    assert sorted(_kinds(cache)) == ["report", "run"]
    assert report.subject["id"] == "bp-seed4" and report.subject["method"] == "bp"
    assert report.subject["seed"] == 4 and report.credit is not None
    evaluate_subject(subject, dataclasses.replace(settings, eval_size=32), cache)
    assert sorted(_kinds(cache)) == ["report", "report", "run"]  # the run is reused


def test_a_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    [subject] = checkpoint_subjects([str(bad)])
    with pytest.raises(CheckpointError, match="bad.pt"):
        evaluate_subject(subject, _settings(baseline_acc=0.2), ArtifactCache(tmp_path / "c"))


def test_a_checkpoint_without_epochs_cannot_get_a_matched_baseline(tmp_path):
    data = load_data("synthetic", **DATA_OPTIONS)
    model = build_model("resmlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        **ARCH_OPTIONS)
    path = save_checkpoint(tmp_path / "noepochs.pt", model=model, data=data.spec, seed=0)
    [subject] = checkpoint_subjects([str(path)])
    with pytest.raises(ConfigError, match="records no epochs"):
        evaluate_subject(subject, _settings(), ArtifactCache(tmp_path / "c"))


def _seed_format_state_dict(path: Path) -> Path:
    """A bare ResMLP state dict as the research code saved it (``embed.*``, no data spec)."""
    model = build_model("resmlp", input_shape=(20,), num_classes=4, **ARCH_OPTIONS)
    state = {k.replace("embed_layer.", "embed."): v for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def test_a_checkpoint_without_data_is_checked_on_the_subjects_dataset(tmp_path):
    [subject] = checkpoint_subjects([str(_seed_format_state_dict(tmp_path / "seed.pt"))])
    fitting = dataclasses.replace(subject, data="synthetic", data_options=DATA_OPTIONS)
    report = evaluate_subject(fitting, _settings(baseline_acc=0.25),
                              ArtifactCache(tmp_path / "c"))
    assert report.subject["data"] == "synthetic" and report.num_samples == 40
    wrong = dataclasses.replace(subject, data="synthetic", data_options={"dim": 7})
    with pytest.raises(ConfigError, match="20 input features and 4 classes.*has 7 and 4"):
        evaluate_subject(wrong, _settings(baseline_acc=0.25), ArtifactCache(tmp_path / "c"))


def test_an_edited_user_rule_gets_a_new_cache_key(tmp_path, monkeypatch):
    from fa_checks.training.runs import method_source_digest

    rules = tmp_path / "edited_rules.py"
    rules.write_text("from fa_checks.methods.bp import BP\n\nclass Rule(BP):\n    name = 'r'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = method_source_digest("edited_rules:Rule")
    rules.write_text(rules.read_text() + "\n# a changed learning rule\n")
    after = method_source_digest("edited_rules:Rule")
    assert before is not None and after is not None and before != after
    assert method_source_digest("dfa") is None  # versioned with the library


# -- loading a subject ---------------------------------------------------------------------------
def test_load_subject_gives_the_trained_model_its_rule_and_its_data(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = fresh_subjects("bp", [3], data="synthetic", epochs=1, arch_options=ARCH_OPTIONS,
                               data_options=DATA_OPTIONS)
    settings = _settings(baseline_acc=0.25)
    loaded = load_subject(subject, settings, cache)
    assert _kinds(cache) == ["run"]  # trained once, then reused by the evaluation
    report = evaluate_subject(subject, settings, cache)
    assert sorted(_kinds(cache)) == ["report", "run"]
    assert isinstance(loaded.method, BP) and not loaded.model.training
    assert loaded.data.spec == load_data("synthetic", **DATA_OPTIONS).spec
    assert loaded.checkpoint.seed == 3 and loaded.path == Path(report.subject["path"])
    x, _ = loaded.data.eval_batch(8)
    rebuilt = loaded.checkpoint.build_model()
    torch.testing.assert_close(loaded.model(x), rebuilt(x), rtol=0, atol=0)
    # the report's accuracy is the loaded model's own
    with torch.no_grad():
        predicted = loaded.model(loaded.data.x_test).argmax(-1)
    assert report.test_acc == int((predicted == loaded.data.y_test).sum()) / len(predicted)
    assert load_subject(subject, settings, cache, with_method=False).method is None


def test_a_checkpoint_whose_data_cannot_be_loaded_names_the_file_and_the_option(tmp_path):
    model = build_model("resmlp", input_shape=(3, 32, 32), num_classes=10, d_hidden=8,
                        num_blocks=1)
    path = save_checkpoint(tmp_path / "cifar.pt", model=model, data={"name": "cifar10"},
                           seed=0, epochs=1)
    [subject] = checkpoint_subjects([str(path)])
    with pytest.raises(ConfigError) as info:
        load_subject(subject, _settings(flag_prefix="--fa-"), ArtifactCache(tmp_path / "c"))
    assert str(info.value).startswith(f"{path}: cifar10") and "--fa-data-root" in str(info.value)


# -- output files ----------------------------------------------------------------------------
def test_check_writable_refuses_a_folder_and_an_unwritable_place(tmp_path):
    with pytest.raises(ConfigError, match=r"^--json .*: is a folder; give a file name"):
        check_writable(tmp_path, what="--json")
    with pytest.raises(ConfigError, match=r"^--fa-report /proc/r\.json: cannot write there"):
        check_writable("/proc/r.json", what="--fa-report")
    target = check_writable(tmp_path / "new" / "r.json", what="--json")
    assert target.parent.is_dir() and list(target.parent.iterdir()) == []  # no probe left


def test_json_is_written_atomically_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "fa.json"
    write_json_atomic(target, {"subjects": [{"id": "a"}]})
    assert json.loads(target.read_text()) == {"subjects": [{"id": "a"}]}
    with pytest.raises(ValueError):  # NaN is not JSON: nothing half-written replaces the file
        write_json_atomic(target, {"subjects": [math.nan]})
    assert json.loads(target.read_text()) == {"subjects": [{"id": "a"}]}
    assert sorted(p.name for p in target.parent.iterdir()) == ["fa.json"]


def test_written_files_get_the_usual_permissions_not_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        written = write_json_atomic(tmp_path / "r.json", {"a": 1})
        copied = copy_atomic(written, tmp_path / "copy.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert stat.S_IMODE(copied.stat().st_mode) == 0o644
    assert copied.read_text() == written.read_text()


def test_across_seeds_passes_identical_margins_exactly_at_the_threshold():
    # three seeds each exactly 3.3 pp above their baseline: no spread, so the bound is the
    # mean, which float arithmetic makes 3.2999999999999994 before rounding
    reports = [_report_with_margin(3.3) for _ in range(3)]
    summary = across_seeds("dfa", reports, 3.3)
    assert summary.lower_bound_pp == 3.3 and not summary.fires
