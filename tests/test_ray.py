"""Sweeps on a real two-node Ray cluster on this machine (no mocks), against local evaluation.

The cluster (``ray_cluster``: a head and a worker node, one CPU each) is started once for the
session; ``tests/conftest.py`` keeps this module on one xdist worker.  Subjects are tiny
(ResMLP d=16, two blocks, 2 epochs of the synthetic data) and the torch threads are one
everywhere, so a report computed on Ray is bit for bit the local one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import ray_rules
from ray_cluster import ray_cluster  # noqa: F401 - the session fixture

from fa_checks.cache.store import ArtifactCache
from fa_checks.cli.main import main
from fa_checks.cluster import RayError, evaluate_on_ray
from fa_checks.cluster.connect import rules_environment
from fa_checks.cluster.plan import Missing, StoredOnly, fresh_baseline, plan
from fa_checks.evaluation import Failure, evaluate_subject
from fa_checks.report import Report
from fa_checks.settings import Settings
from fa_checks.subjects import checkpoint_subjects, fresh_subjects
from fa_checks.training.runs import frozen_baseline, train_subject

pytestmark = pytest.mark.ray

ARCH = {"d_hidden": 16, "num_blocks": 2}
DATA = {"num_samples": 256}
SETTINGS = Settings(device="cpu", eval_size=64)
#: the same subjects on the command line and in pytest
TINY_FLAGS = ["--arch-arg", "d_hidden=16", "num_blocks=2", "--data", "synthetic", "--data-arg",
              "num_samples=256", "--epochs", "2", "--eval-size", "64", "--device", "cpu"]
PLUGIN_FLAGS = ["--fa-arch-arg", "d_hidden=16", "--fa-arch-arg", "num_blocks=2", "--fa-data",
                "synthetic", "--fa-data-arg", "num_samples=256", "--fa-epochs", "2",
                "--fa-eval-size", "64", "--fa-device", "cpu"]


def tiny(method: str, seeds: list[int], **options) -> list:
    return fresh_subjects(method, seeds, data="synthetic", epochs=2, arch_options=ARCH,
                          data_options=DATA, method_options=options)


def on(cluster, settings: Settings = SETTINGS) -> Settings:
    return dataclasses.replace(settings, ray_address=cluster.address)


SWEEP = tiny("bp", [1, 2, 3]) + tiny("dfa", [1, 2, 3])


def figures(report: Report | dict) -> str:
    """Everything a report says except where its files are and where it ran, as JSON text
    (text, so that NaN equals NaN)."""
    data = dict(report.to_dict() if isinstance(report, Report) else report)
    data.pop("path", None)
    data["subject"] = {k: v for k, v in data.get("subject", {}).items()
                       if k not in ("path", "ran_on")}
    return json.dumps(data, sort_keys=True)


def tasks_of(outcomes) -> dict[str, dict]:
    """Every task of a call, once (a baseline task is in the report of each subject it served)."""
    return {task["task"]: task for report in outcomes.values()
            for task in report.subject["ran_on"].values()}


def created_keys(cache: ArtifactCache) -> list[tuple[str, str]]:
    return [(entry["kind"], entry["key"]) for entry in cache.created()]


@pytest.fixture(scope="module")
def local_reports(tmp_path_factory) -> tuple[dict[str, Report], ArtifactCache]:
    """The sweep evaluated in this process, the way the command line does without Ray."""
    cache = ArtifactCache(tmp_path_factory.mktemp("local-cache"))
    return {subject.id: evaluate_subject(subject, SETTINGS, cache) for subject in SWEEP}, cache


@pytest.fixture(scope="module")
def swept(ray_cluster, tmp_path_factory):  # noqa: F811 - the fixture imported above
    """The sweep on the cluster, once for the module: (outcomes, driver cache, log lines,
    outcomes in the order ``on_result`` gave them)."""
    cache = ArtifactCache(tmp_path_factory.mktemp("ray-cache"))
    lines: list[str] = []
    streamed: list[tuple[str, object]] = []
    outcomes = evaluate_on_ray(SWEEP, on(ray_cluster), cache, log=lines.append,
                               on_result=lambda *outcome: streamed.append(outcome))
    return outcomes, cache, lines, streamed


# -- the plan, without a cluster -----------------------------------------------------------------
def test_the_planned_baseline_is_the_one_the_evaluation_asks_for(local_reports):
    _, cache = local_reports
    # evaluated here: every artifact the plan would ask for is the one the library stored
    for subject in SWEEP:
        frozen_baseline(fresh_baseline(subject), SETTINGS, StoredOnly(cache))
        train_subject(subject, SETTINGS, StoredOnly(cache))
    jobs, known = plan(SWEEP, SETTINGS, cache)
    assert jobs == {} and all(isinstance(known[s.id], Report) for s in SWEEP)
    with pytest.raises(Missing) as missing:
        evaluate_subject(SWEEP[0], SETTINGS, StoredOnly(cache, fresh=True))
    assert missing.value.kind == "run"


def test_the_limits_override_and_the_rules_travel_to_the_workers(monkeypatch):
    monkeypatch.delenv("FA_CHECKS_LIMITS", raising=False)
    [user] = tiny("user_rules:ScaledDirectFeedback", [1])
    assert rules_environment([user], None) == {"py_modules": [sys.modules["user_rules"]]}
    # a worker must refuse and allow what the driver does, so the override goes with the job
    monkeypatch.setenv("FA_CHECKS_LIMITS", "max_epochs=20000")
    env = rules_environment([], {"env_vars": {"MINE": "1"}})
    assert env == {"env_vars": {"MINE": "1", "FA_CHECKS_LIMITS": "max_epochs=20000"}}


def test_a_damaged_artifact_is_planned_again_and_said_once(tmp_path):
    lines: list[str] = []
    cache = ArtifactCache(tmp_path, log=lines.append)
    subject = SWEEP[0]
    evaluate_subject(subject, SETTINGS, cache)
    run = train_subject(subject, SETTINGS, cache)
    run.write_bytes(run.read_bytes() + b"!")  # its digest no longer matches
    jobs, known = plan([subject], SETTINGS, cache)
    assert known == {}
    assert [job.kind for job in jobs.values()] == ["run", "evaluation"]
    evaluation = jobs[f"evaluation:{subject.id}"]
    # the intact baseline is sent from the cache; the run is made again first
    assert [needed.kind for needed in evaluation.inputs] == ["run", "baseline"]
    assert evaluation.waits_for == {f"run:{run.relative_to(tmp_path).as_posix()}"}
    assert len(lines) == 1 and str(run) in lines[0] and "damaged" in lines[0]


def test_a_plan_shares_baselines_and_submits_inputs_first(tmp_path):
    jobs, known = plan(SWEEP, SETTINGS, ArtifactCache(tmp_path))
    assert known == {}
    kinds = [job.kind for job in jobs.values()]
    assert sorted(kinds) == sorted(["run"] * 6 + ["baseline"] * 3 + ["evaluation"] * 6)
    for job in jobs.values():
        if job.kind == "evaluation":
            earlier = list(jobs)[: list(jobs).index(job.id)]
            assert job.waits_for and job.waits_for <= set(earlier)
            assert [needed.kind for needed in job.inputs] == ["run", "baseline"]
        if job.kind == "baseline":  # bp-seedN and dfa-seedN
            assert len(job.subjects) == 2


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
        assert figures(report) == figures(local_reports[0][subject.id])
        # the report names the driver's own copy of the run, not a worker's temporary one
        path = Path(report.subject["path"])
        assert path.is_file() and path.is_relative_to(cache.root)
        assert path == train_subject(subject, SETTINGS, StoredOnly(cache))


def test_tasks_ran_on_both_nodes_and_shared_baselines_were_trained_once(
        swept, ray_cluster):  # noqa: F811
    outcomes, cache, lines, _ = swept
    tasks = tasks_of(outcomes)
    assert len(tasks) == 15  # six runs, three baselines, six evaluations
    assert len({task["node_id"] for task in tasks.values()}) == 2
    assert ray_cluster.workers[0].ip in {task["node_ip"] for task in tasks.values()}
    assert all(task["attempts"] == 1 for task in tasks.values())
    kinds = [kind for kind, _ in created_keys(cache)]
    # bp-seedN and dfa-seedN share one frozen-blocks baseline: three, not six; and no
    # evaluation trained a baseline of its own
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
    nowhere = dataclasses.replace(SETTINGS, ray_address="127.0.0.1:9")
    again = evaluate_on_ray(SWEEP, nowhere, cache, log=lines.append)
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
        outcomes = evaluate_on_ray(subjects, on(ray_cluster), cache,
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
    subjects = (tiny("ray_rules:RaisesInStep", [1]) + tiny("ray_rules:FaultInStep", [1])
                + tiny("user_rules:ScaledDirectFeedback", [1]) + tiny("bp", [4]))
    lines: list[str] = []
    outcomes = evaluate_on_ray(subjects, on(ray_cluster), cache, log=lines.append)
    broken, fault, user, bp = (outcomes[s.id] for s in subjects)
    # the rule's own exception: the user's to fix, named where it was raised on the worker
    assert type(broken) is Failure and broken.subject == subjects[0]
    assert broken.message == (
        f"RuntimeError raised in your code (ray_rules, line "
        f"{ray_rules.line_of('raise RuntimeError(STEP_MESSAGE)')}, in step): "
        f"{ray_rules.STEP_MESSAGE}; fix it there")
    assert broken.to_dict()["verdict"] == "ERROR" and "internal" not in broken.to_dict()
    assert f"ray: run of ray_rules:RaisesInStep-seed1 failed: {broken.message}" in lines
    assert "ray: evaluation of ray_rules:RaisesInStep-seed1 not run: its run failed" in lines
    # an exception that passed through no frame of the user's: a fault, as in this process
    assert isinstance(fault, Failure) and fault.internal and isinstance(fault.cause, TypeError)
    assert fault.message.startswith("run of ray_rules:FaultInStep-seed1 raised TypeError: ")
    assert "\n" not in fault.message and "\x1b" not in fault.traceback
    assert 'File "' in fault.traceback and "TypeError: " in fault.traceback
    assert fault.to_dict()["verdict"] == "ERROR" and fault.to_dict()["internal"] is True
    # a user's rule reaches the workers with its module (py_modules), not a shared folder
    local = ArtifactCache(tmp_path / "local")
    assert figures(user) == figures(evaluate_subject(subjects[2], SETTINGS, local))
    assert figures(bp) == figures(evaluate_subject(subjects[3], SETTINGS, local))


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
    outcomes = evaluate_on_ray([good, bad], on(ray_cluster), cache)
    report = outcomes[good.id]
    assert figures(report) == figures(evaluate_subject(good, SETTINGS, local))
    assert report.subject["path"] == str(model)
    # the checkpoint's baseline was trained inside its evaluation and landed with its report
    assert sorted(kind for kind, _ in created_keys(cache)) == ["baseline", "report"]
    error = outcomes[bad.id]
    assert type(error) is Failure and str(broken) in error.message
    assert "fa-checks-ray-" not in error.message


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
            evaluate_on_ray(subjects, on(ray_cluster), cache, log=interrupt_when_both_nodes_work)
        # the connection stays (it was this test's); the two runs of 2 minutes are cancelled
        deadline = time.monotonic() + 60
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray.available_resources().get("CPU", 0) == 2
        assert created_keys(cache) == []
    finally:
        ray.shutdown()


# -- the two faces -------------------------------------------------------------------------------
def junit_outcomes(path: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        found = [tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None]
        outcomes[case.get("name")] = found[0] if found else "passed"
    return outcomes


def test_the_plugin_on_the_cluster_gives_what_two_xdist_workers_give(
        ray_cluster, pytester: pytest.Pytester):  # noqa: F811
    (pytester.path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    args = ["--fa-method", "bp", "--fa-method", "dfa", "--fa-seeds", "1", "2",
            "--fa-checkpoint", "corrupt.pt", *PLUGIN_FLAGS]
    runs = {}
    for name, extra in (("xdist", ["-n", "2"]), ("ray", ["--fa-ray", ray_cluster.address])):
        result = pytester.runpytest_subprocess(
            *args, *extra, f"--fa-cache-dir={name}-cache", f"--fa-report={name}.json",
            f"--junitxml={name}.xml", timeout=300)
        runs[name] = (result, junit_outcomes(pytester.path / f"{name}.xml"),
                      json.loads((pytester.path / f"{name}.json").read_text()))
    (xdist, xdist_cases, xdist_json), (ray, ray_cases, ray_json) = runs["xdist"], runs["ray"]
    # the corrupt file errors its items: an input error, exit 4, the same with both
    assert ray.ret == xdist.ret == pytest.ExitCode.USAGE_ERROR, ray.stdout.str()
    assert ray_cases == xdist_cases
    assert set(ray_cases.values()) == {"error", "failure", "passed"}
    assert len(ray_cases) == 5 * 3 + 2  # D1-D3 per subject, across seeds for bp and dfa
    assert [figures(e) for e in ray_json["subjects"]] == \
        [figures(e) for e in xdist_json["subjects"]]
    assert ray_json["across_seeds"] == xdist_json["across_seeds"]
    # where each subject ran is recorded; the driver said what ran where
    for entry in ray_json["subjects"]:
        if entry["verdict"] != "ERROR":
            assert set(entry["subject"]["ran_on"]) == {"run", "baseline", "evaluation"}
    ray.stdout.fnmatch_lines(["fa-checks: ray: done in * s: 4 reports, 1 errors"])


def test_the_command_lines_sweep_on_the_cluster_prints_the_local_table(
        ray_cluster, tmp_path, capsys):  # noqa: F811
    command = ["sweep", "--methods", "bp", "dfa", "--seeds", "1", "2", *TINY_FLAGS,
               "--no-progress"]
    printed = {}
    for name, extra in (("local", []), ("ray", ["--ray", ray_cluster.address])):
        code = main([*command, *extra, "--cache-dir", str(tmp_path / f"{name}-cache"),
                     "-o", str(tmp_path / name), "--json", str(tmp_path / f"{name}.json")])
        out, err = capsys.readouterr()
        printed[name] = (code, out, err)
    (local_code, local_out, _), (ray_code, ray_out, ray_err) = printed["local"], printed["ray"]
    assert ray_code == local_code and ray_out == local_out
    assert "ray: done in" in ray_err
    # the runs are copied into -o, as without Ray
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local").iterdir()) == \
        ["bp-seed1.pt", "bp-seed2.pt", "dfa-seed1.pt", "dfa-seed2.pt"]
    entries = {name: json.loads((tmp_path / f"{name}.json").read_text())["subjects"]
               for name in ("local", "ray")}
    assert [figures(e) for e in entries["ray"]] == [figures(e) for e in entries["local"]]
    assert all(e["subject"]["path"].startswith(str(tmp_path / "ray")) for e in entries["ray"])


# -- refused before any work ---------------------------------------------------------------------
def test_without_ray_installed_both_faces_say_how_to_install_it(
        monkeypatch, tmp_path, capsys, pytester: pytest.Pytester):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    cache = ArtifactCache(tmp_path)
    nearby = dataclasses.replace(SETTINGS, ray_address="auto")
    with pytest.raises(RayError, match=re.escape("--ray needs Ray: pip install 'fa-checks[ray]'")):
        evaluate_on_ray(SWEEP, nearby, cache)
    code = main(["sweep", "--methods", "bp", *TINY_FLAGS, "--ray", "auto", "-o",
                 str(tmp_path / "runs"), "--cache-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert (code, out, err) == (2, "", "fa-checks: error: --ray needs Ray: pip install "
                                       "'fa-checks[ray]'\n")
    assert cache.created() == []
    result = pytester.runpytest("--fa-method", "bp", "--fa-ray", "auto", "-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --fa-ray needs Ray: pip install 'fa-checks[ray]'"])


def test_n_with_fa_ray_is_a_usage_error(pytester: pytest.Pytester):
    result = pytester.runpytest("--fa-method", "bp", "--fa-ray", "auto", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if line.strip()]
    assert lines == ["ERROR: --fa-ray and -n do not go together: with --fa-ray the Ray cluster "
                     "runs the subjects in parallel, so drop -n (this process waits for the "
                     "cluster)"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"gpus_per_run": -0.5}, "--gpus-per-run -0.5: it must be 0 or more"),
    ({"gpus_per_run": 1.5}, "--gpus-per-run 1.5: above 1 it must be a whole number"),
    ({"cpus_per_run": 0}, "--cpus-per-run 0: it must be 1 or more"),
    ({"device": "cuda"}, "--device cuda on Ray needs GPUs for each task: give --gpus-per-run"),
    ({"device": "cuda:1", "gpus_per_run": 0.5}, "--device cuda:1: on Ray each task gets its GPU"),
    ({"ray_address": "http://head"}, "--ray 'http://head' is not a Ray address: use auto"),
    ({"ray_address": "head:port"}, "--ray 'head:port' is not a Ray address"),
])
def test_settings_are_checked_before_anything_runs(changes, message, tmp_path):
    settings = dataclasses.replace(SETTINGS, **{"ray_address": "auto", **changes})
    with pytest.raises(RayError, match=re.escape(message)):
        evaluate_on_ray(SWEEP, settings, ArtifactCache(tmp_path))


def test_an_address_where_no_cluster_listens_is_refused_at_once(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'fa-checks[ray]'")
    # checked before ray.init, which would retry for minutes
    nowhere = dataclasses.replace(SETTINGS, ray_address="127.0.0.1:9")
    with pytest.raises(RayError, match=re.escape("--ray 127.0.0.1:9: no Ray cluster answers")):
        evaluate_on_ray(SWEEP, nowhere, ArtifactCache(tmp_path))
