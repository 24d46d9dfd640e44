"""A cached report is found from the file's digest and the settings alone, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from fa_checks.cache.reports import cached_report
from fa_checks.cache.store import ArtifactCache
from fa_checks.checkpoint import save_checkpoint
from fa_checks.data import load_data
from fa_checks.evaluation import evaluate_subject
from fa_checks.models import build_model
from fa_checks.report import Thresholds
from fa_checks.settings import Settings
from fa_checks.subjects import Subject, checkpoint_subjects

SETTINGS = {"eval_size": 64, "device": "cpu", "batch_size": 32, "lr": 1e-2,
            "baseline_acc": 0.25}


def _checkpoint(path: Path, seed: int = 0) -> Path:
    data = load_data("synthetic", num_samples=200)
    torch.manual_seed(seed)
    model = build_model("resmlp", input_shape=data.input_shape, num_classes=data.num_classes,
                        d_hidden=16, num_blocks=2)
    return save_checkpoint(path, model=model, data=data.spec, seed=seed, epochs=1,
                           optimizer={"lr": 1e-2, "weight_decay": 0.01, "batch_size": 32})


def _settings(**overrides) -> Settings:
    return Settings(**{**SETTINGS, "thresholds": Thresholds(), **overrides})


def test_the_lookup_serves_exactly_what_evaluation_stored(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_checkpoint(tmp_path / "run.pt"))])
    assert cached_report(subject, _settings(), cache) is None  # nothing stored yet
    computed = evaluate_subject(subject, _settings(), cache)
    served = cached_report(subject, _settings(), cache)
    assert served is not None and served.to_dict() == computed.to_dict()
    assert served.subject["id"] == subject.id and served.subject["path"] == str(subject.path)


def test_the_lookup_computes_nothing_where_it_cannot_decide_alone(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_checkpoint(tmp_path / "run.pt"))])
    evaluate_subject(subject, _settings(), cache)
    # settings that change figures, a recompute, a device that must be checked, new bytes
    assert cached_report(subject, _settings(eval_size=32), cache) is None
    assert cached_report(subject, _settings(retrain=True), cache) is None
    assert cached_report(subject, _settings(device="cuda"), cache) is None
    fresh = Subject(id="dfa-seed0", kind="fresh", method="dfa", seed=0, epochs=1)
    assert cached_report(fresh, _settings(), cache) is None
    _checkpoint(tmp_path / "run.pt", seed=1)
    assert cached_report(subject, _settings(), cache) is None
    assert [entry["kind"] for entry in cache.created()] == ["report"]


def test_a_damaged_cached_report_is_said_once_and_computed_again(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_checkpoint(tmp_path / "run.pt"))])
    evaluate_subject(subject, _settings(), cache)
    [stored] = (tmp_path / "cache" / "report").glob("*.json")
    stored.write_text(stored.read_text().replace("test_acc", "test_acc_"))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert cached_report(subject, _settings(), cache) is None  # quiet: the next step says
        report = evaluate_subject(subject, _settings(), cache)
    assert report.test_acc is not None
    assert len([w for w in said if "damaged" in str(w.message)]) == 1


LOOKUP = """
import json, sys
from fa_checks.cache.store import ArtifactCache
from fa_checks.evaluation import evaluate_subject
from fa_checks.report import Thresholds
from fa_checks.settings import Settings
from fa_checks.subjects import checkpoint_subjects
settings = Settings(**json.loads(sys.argv[3]), thresholds=Thresholds())
[subject] = checkpoint_subjects([sys.argv[2]])
report = evaluate_subject(subject, settings, ArtifactCache(sys.argv[1]))
print(json.dumps({"torch": "torch" in sys.modules, "test_acc": report.test_acc}))
"""


def test_a_cached_evaluation_in_a_fresh_process_never_imports_torch(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    [subject] = checkpoint_subjects([str(_checkpoint(tmp_path / "run.pt"))])
    computed = evaluate_subject(subject, _settings(), cache)
    result = subprocess.run(
        [sys.executable, "-c", LOOKUP, str(tmp_path / "cache"), str(subject.path),
         json.dumps(SETTINGS)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    answer = json.loads(result.stdout)
    assert answer == {"torch": False, "test_acc": computed.test_acc}


SESSION = """
import json, sys
from fa_checks.cache.store import ArtifactCache
from fa_checks.report import Thresholds
from fa_checks.session import CheckSession
from fa_checks.settings import Settings
from fa_checks.subjects import checkpoint_subjects
settings = Settings(**json.loads(sys.argv[3]), thresholds=Thresholds())
session = CheckSession(settings, checkpoint_subjects(sys.argv[2:3] + sys.argv[4:]),
                       cache=ArtifactCache(sys.argv[1]))
gates = session.gates()
print(json.dumps({"torch": "torch" in sys.modules,
                  "gates": [[label, gate.n] for label, gate in gates]}))
"""


def test_seed_groups_of_cached_checkpoints_are_read_without_torch(tmp_path):
    # a file's method and seed are read once (torch), then kept in the cache by its digest
    from fa_checks.session import CheckSession
    from fa_checks.training.loop import train

    paths = [str(tmp_path / f"dfa{seed}.pt") for seed in (0, 1)]
    for seed, path in enumerate(paths):
        train("dfa", "resmlp", "synthetic", epochs=1, seed=seed, device="cpu", progress=False,
              arch_options={"d_hidden": 16, "num_blocks": 2}, data_options={"num_samples": 200},
              checkpoint=path)
    cache = ArtifactCache(tmp_path / "cache")
    session = CheckSession(_settings(), checkpoint_subjects(paths), cache=cache)
    assert [(label, gate.n) for label, gate in session.gates()] == [("dfa", 2)]
    result = subprocess.run(
        [sys.executable, "-c", SESSION, str(tmp_path / "cache"), paths[0], json.dumps(SETTINGS),
         *paths[1:]],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert json.loads(result.stdout) == {"torch": False, "gates": [["dfa", 2]]}
