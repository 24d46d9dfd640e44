"""Sweeps on a real two-node Ray cluster on this machine (no mocks), against local evaluation.

The cluster (``ray_cluster``: a head and a worker node, one CPU each) is started once for the
session.  Subjects are tiny (ResMLP d=16, two blocks, 2 epochs of the synthetic data) and the
torch threads are one everywhere, so a report computed on Ray is bit for bit the local one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import ray_rules
from ray_cluster import ray_cluster  # noqa: F401 - the session fixture

from fa_checks.cache import ArtifactCache
from fa_checks.engine import (
    Settings,
    checkpoint_subjects,
    evaluate_subject,
    fresh_subjects,
    train_subject,
)
from fa_checks.errors import UserError
from fa_checks.protocol import Report
from fa_checks.ray_backend import RayError, TaskError, evaluate_on_ray

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray")]

ARCH = {"d_hidden": 16, "num_blocks": 2}
DATA = {"num_samples": 256}
SETTINGS = Settings(device="cpu", eval_size=64)


def tiny(method: str, seeds: list[int], **options) -> list:
    return fresh_subjects(method, seeds, data="synthetic", epochs=2, arch_options=ARCH,
                          data_options=DATA, method_options=options)


SWEEP = tiny("bp", [1, 2, 3]) + tiny("dfa", [1, 2, 3])


def figures(report: Report) -> str:
    """Everything a report says except where its files are and where it ran, as JSON text
    (text, so that NaN equals NaN)."""
    data = report.to_dict()
    data["subject"] = {k: v for k, v in data["subject"].items() if k not in ("path", "ran_on")}
    return json.dumps(data, sort_keys=True)


def tasks_of(outcomes) -> dict[str, dict]:
    """Every task of a call, once (a baseline task is in the report of each subject it served)."""
    return {task["task"]: task for report in outcomes.values()
            for task in report.subject["ran_on"].values()}


def created_keys(cache: ArtifactCache) -> list[tuple[str, str]]:
    return [(entry["kind"], entry["key"]) for entry in cache.created()]


@pytest.fixture(scope="module")
def local_reports(tmp_path_factory) -> dict[str, Report]:
    """The sweep evaluated in this process, the way the command line does without Ray."""
    cache = ArtifactCache(tmp_path_factory.mktemp("local-cache"))
    return {subject.id: evaluate_subject(subject, SETTINGS, cache) for subject in SWEEP}


@pytest.fixture(scope="module")
def swept(ray_cluster, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The sweep on the cluster, once for the module: (outcomes, driver cache, log lines,
    outcomes in the order ``on_result`` gave them)."""
    cache = ArtifactCache(tmp_path_factory.mktemp("ray-cache"))
    lines: list[str] = []
    streamed: list[tuple[str, object]] = []
    outcomes = evaluate_on_ray(SWEEP, SETTINGS, cache, address=ray_cluster.address,
                               log=lines.append,
                               on_result=lambda *outcome: streamed.append(outcome))
    return outcomes, cache, lines, streamed


# -- a sweep -------------------------------------------------------------------------------------
def test_a_sweep_on_two_nodes_gives_the_local_reports(swept, local_reports):
    outcomes, cache, _, streamed = swept
    assert list(outcomes) == [s.id for s in SWEEP]
    # each outcome was handed over once, as it landed
    assert sorted(subject_id for subject_id, _ in streamed) == sorted(outcomes)
    assert all(outcome is outcomes[subject_id] for subject_id, outcome in streamed)
    for subject in SWEEP:
        report = outcomes[subject.id]
        assert isinstance(report, Report), report
        assert figures(report) == figures(local_reports[subject.id])
        # the report names the driver's own copy of the run, not a worker's temporary one
        path = Path(report.subject["path"])
        assert path.is_file() and path.is_relative_to(cache.root)
        assert path == train_subject(subject, SETTINGS, cache)


def test_tasks_ran_on_both_nodes_and_shared_baselines_were_trained_once(swept, ray_cluster):  # noqa: F811
    outcomes, cache, lines, _ = swept
    tasks = tasks_of(outcomes)
    assert len(tasks) == 15  # six runs, three baselines, six evaluations
    assert len({task["node_id"] for task in tasks.values()}) == 2
    assert ray_cluster.workers[0].ip in {task["node_ip"] for task in tasks.values()}
    assert all(task["attempts"] == 1 for task in tasks.values())
    kinds = [kind for kind, _ in created_keys(cache)]
    # bp-seedN and dfa-seedN share one frozen-blocks baseline: three, not six
    assert sorted(kinds) == sorted(["run"] * 6 + ["baseline"] * 3 + ["report"] * 6)
    assert len(set(created_keys(cache))) == len(kinds)
    for report in outcomes.values():
        assert set(report.subject["ran_on"]) == {"run", "baseline", "evaluation"}
    assert any(re.search(r"\d+/15 tasks done, \d+ running, \d+ queued", line) for line in lines)
    assert lines[-1].startswith("ray: done in") and "6 reports, 0 errors" in lines[-1]


def test_a_second_invocation_computes_nothing_and_needs_no_cluster(swept):
    outcomes, cache, _, _ = swept
    before = created_keys(cache)
    lines: list[str] = []
    # an address where no cluster listens: everything must come from the driver's cache
    again = evaluate_on_ray(SWEEP, SETTINGS, cache, address="127.0.0.1:9", log=lines.append)
    assert created_keys(cache) == before
    assert {k: figures(r) for k, r in again.items()} == \
        {k: figures(r) for k, r in outcomes.items()}
    assert all("ran_on" not in r.subject for r in again.values())
    assert lines == ["ray: all 6 subjects are in the cache; nothing to compute"]


# -- a node dies ---------------------------------------------------------------------------------
def test_a_node_killed_in_the_middle_of_a_sweep(ray_cluster, tmp_path):  # noqa: F811
    # runs of two seconds (bp that sleeps after each of its four steps), so that the worker
    # node, slower to start, finishes one task and starts another while work is left
    subjects = tiny("ray_rules:SlowBackprop", [1, 2, 3, 4, 5, 6], seconds=0.5)
    cache = ArtifactCache(tmp_path / "cache")
    [worker] = ray_cluster.live_workers()
    before_kill: list[tuple[str, str]] = []
    lines: list[str] = []

    def kill_the_worker_when_it_has_done_one_and_runs_another(line: str) -> None:
        lines.append(line)
        counts = re.search(rf"{re.escape(worker.ip)}/\w+: (\d+) done, (\d+) running", line)
        if not before_kill and counts and int(counts[1]) >= 1 and int(counts[2]) >= 1:
            before_kill.extend(created_keys(cache))
            ray_cluster.kill_worker(worker)

    try:
        outcomes = evaluate_on_ray(subjects, SETTINGS, cache, address=ray_cluster.address,
                                   log=kill_the_worker_when_it_has_done_one_and_runs_another)
        assert before_kill, f"the worker node never ran two tasks, so it was not killed: {lines}"
        assert not worker.living()
        local = ArtifactCache(tmp_path / "local")
        for subject in subjects:
            assert figures(outcomes[subject.id]) == \
                figures(evaluate_subject(subject, SETTINGS, local))
        created = created_keys(cache)
        assert len(created) == 18 and len(set(created)) == 18  # nothing landed twice
        assert set(before_kill) <= set(created)
        # the task running on the dead node ran again on the head, and no other: nothing that
        # had finished was computed again
        tasks = tasks_of(outcomes)
        assert len(tasks) == 18
        assert sum(task["attempts"] for task in tasks.values()) in (18, 19)
        assert any("started again" in line for line in lines) or \
            sum(task["attempts"] for task in tasks.values()) == 18
    finally:
        ray_cluster.add_worker()


# -- failures ------------------------------------------------------------------------------------
def test_a_rule_that_raises_errors_its_subject_and_the_others_go_on(ray_cluster, tmp_path):  # noqa: F811
    cache = ArtifactCache(tmp_path / "cache")
    subjects = (tiny("ray_rules:RaisesInStep", [1])
                + tiny("user_rules:ScaledDirectFeedback", [1]) + tiny("bp", [4]))
    lines: list[str] = []
    outcomes = evaluate_on_ray(subjects, SETTINGS, cache, address=ray_cluster.address,
                               log=lines.append)
    broken, user, bp = (outcomes[s.id] for s in subjects)
    assert isinstance(broken, TaskError) and isinstance(broken, UserError)
    assert ray_rules.STEP_MESSAGE in str(broken) and "\n" not in str(broken)
    assert str(broken).startswith("run of ray_rules:RaisesInStep-seed1 raised RuntimeError")
    assert "raise RuntimeError(STEP_MESSAGE)" in broken.traceback
    assert f"ray: {broken}" in lines
    assert "ray: evaluation of ray_rules:RaisesInStep-seed1 not run: its run failed" in lines
    # a user's rule reaches the workers with its module (py_modules), not a shared folder
    local = ArtifactCache(tmp_path / "local")
    assert figures(user) == figures(evaluate_subject(subjects[1], SETTINGS, local))
    assert figures(bp) == figures(evaluate_subject(subjects[2], SETTINGS, local))


def test_a_checkpoint_travels_as_bytes_and_its_errors_name_the_drivers_file(
        ray_cluster, tmp_path):  # noqa: F811
    local = ArtifactCache(tmp_path / "local")
    [subject] = tiny("dfa", [5])
    model = tmp_path / "models" / "dfa.pt"
    model.parent.mkdir()
    shutil.copyfile(train_subject(subject, SETTINGS, local), model)
    broken = tmp_path / "models" / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    by_path = {s.path: s for s in checkpoint_subjects([str(model), str(broken)])}
    good, bad = by_path[str(model)], by_path[str(broken)]

    cache = ArtifactCache(tmp_path / "cache")
    outcomes = evaluate_on_ray([good, bad], SETTINGS, cache, address=ray_cluster.address)
    report = outcomes[good.id]
    assert figures(report) == figures(evaluate_subject(good, SETTINGS, local))
    assert report.subject["path"] == str(model)
    error = outcomes[bad.id]
    assert isinstance(error, UserError) and str(broken) in str(error)
    assert "fa-checks-ray-" not in str(error)


def test_ctrl_c_cancels_the_outstanding_tasks(ray_cluster, tmp_path):  # noqa: F811
    import ray

    subjects = tiny("ray_rules:SleepsInStep", [1, 2, 3], seconds=120)
    cache = ArtifactCache(tmp_path / "cache")

    def interrupt_when_both_nodes_work(line: str) -> None:
        if re.search(r" 2 running", line):
            raise KeyboardInterrupt

    # connected by the caller, who sends the rule's module to the workers
    ray.init(address=ray_cluster.address, runtime_env={"py_modules": [ray_rules]},
             logging_level="ERROR", log_to_driver=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            evaluate_on_ray(subjects, SETTINGS, cache, address=ray_cluster.address,
                            log=interrupt_when_both_nodes_work)
        # the connection stays (it was this test's); the two runs of 2 minutes are cancelled
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray.available_resources().get("CPU", 0) == 2
        assert created_keys(cache) == []
    finally:
        ray.shutdown()


# -- without a cluster ---------------------------------------------------------------------------
def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    cache = ArtifactCache(tmp_path)
    with pytest.raises(RayError, match=re.escape("--ray needs Ray: pip install 'fa-checks[ray]'")):
        evaluate_on_ray(SWEEP, SETTINGS, cache)
    plugin = dataclasses.replace(SETTINGS, option_prefix="--fa-")
    with pytest.raises(RayError, match=re.escape("--fa-ray needs Ray: pip install")):
        evaluate_on_ray(SWEEP, plugin, cache)


@pytest.mark.parametrize(("gpus", "cpus", "device", "message"), [
    (-0.5, 1, "cpu", "--gpus-per-run -0.5: it must be 0 or more"),
    (1.5, 1, "cpu", "--gpus-per-run 1.5: above 1 it must be a whole number"),
    (0.0, 0, "cpu", "--cpus-per-run 0: it must be 1 or more"),
    (0.0, 1, "cuda", "--device cuda on Ray needs GPUs for each task: give --gpus-per-run"),
    (0.5, 1, "cuda:1", "--device cuda:1: on Ray each task gets its GPU from Ray"),
])
def test_resources_are_checked_before_anything_runs(gpus, cpus, device, message, tmp_path):
    settings = dataclasses.replace(SETTINGS, device=device)
    with pytest.raises(RayError, match=re.escape(message)):
        evaluate_on_ray(SWEEP, settings, ArtifactCache(tmp_path), gpus_per_run=gpus,
                        cpus_per_run=cpus)


def test_an_address_where_no_cluster_listens_is_refused_at_once(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'fa-checks[ray]'")
    # checked before ray.init, which would retry for minutes
    with pytest.raises(RayError, match=re.escape("--ray 127.0.0.1:9: no Ray cluster answers")):
        evaluate_on_ray(SWEEP, SETTINGS, ArtifactCache(tmp_path), address="127.0.0.1:9")
