"""The plugin's pure parts: its flags, worker devices and threads, scheduling scopes, and the
properties that cross the xdist boundary.  No subprocesses here."""

from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest_fa_checks.flags import FLAGS, PREFIX, ini_key, option_dest, read_request
from pytest_fa_checks.parallel import subject_scope, worker_device, worker_index
from pytest_fa_checks.records import (
    GATE,
    REPORT,
    SUBJECT,
    GroupRecord,
    SubjectRecord,
    absorb,
    across_seeds_properties,
    subject_properties,
)
from pytest_fa_checks.session import build_settings, build_subjects

from fa_checks.diagnostics.protocol import gate_across_seeds
from fa_checks.errors import ConfigError
from fa_checks.report import (
    AcrossSeeds,
    DepthUtility,
    ReferenceValidity,
    Report,
    ScaleStability,
    error_entry,
)

finite = st.floats(allow_nan=False, allow_infinity=False)


def test_every_flag_has_the_common_prefix_and_a_unique_destination() -> None:
    names = [PREFIX + name for name in FLAGS]
    assert len({option_dest(flag) for flag in FLAGS.values()}) == len(FLAGS)
    assert {"--fa-checkpoint", "--fa-method", "--fa-method-arg", "--fa-arch", "--fa-arch-arg",
            "--fa-data", "--fa-data-root", "--fa-epochs", "--fa-seeds", "--fa-device",
            "--fa-eval-size", "--fa-max-growth", "--fa-grad-floor", "--fa-min-margin",
            "--fa-baseline-acc", "--fa-min-cosine", "--fa-min-rho", "--fa-json",
            "--fa-trust", "--fa-retrain", "--fa-threads", "--fa-cache-dir"} <= set(names)


def test_ini_keys_are_the_documented_ones() -> None:
    keys = {ini_key(flag) for flag in FLAGS.values() if flag.ini}
    assert keys == {"fa_max_growth", "fa_grad_floor", "fa_min_margin", "fa_eval_size",
                    "fa_min_cosine", "fa_min_rho", "fa_device", "fa_epochs", "fa_data",
                    "fa_data_root", "fa_schedule", "fa_lr", "fa_batch_size",
                    "fa_weight_decay", "fa_threads", "fa_cache_dir", "fa_gpus_per_run",
                    "fa_cpus_per_run", "fa_gate_d4", "fa_d4_alpha", "fa_d4_share",
                    "fa_d4_floor",
                    # the gate in the configuration alone: what to train
                    "fa_methods", "fa_seeds", "fa_arch", "fa_arch_args", "fa_method_args",
                    "fa_data_args"}


# -- flags read from a real pytest config (in process: no subprocess needed) --------------------
def test_command_line_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfa_max_growth = 7\nfa_grad_floor = 1e-3\n")
    request = read_request(pytester.parseconfig("--fa-max-growth", "9"))
    thresholds = build_settings(request).thresholds
    assert thresholds.max_growth == 9.0  # command line
    assert thresholds.grad_floor == 1e-3  # ini
    assert not request.active


def test_the_schedule_reaches_the_settings(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfa_schedule = constant\n")
    request = read_request(pytester.parseconfig("--fa-method", "dfa"))
    assert build_settings(request, "cpu").schedule == "constant"  # from the ini file
    tuned = build_settings(read_request(pytester.parseconfig(
        "--fa-method", "dfa", "--fa-lr", "0.01", "--fa-batch-size", "32",
        "--fa-weight-decay", "0")), "cpu")
    assert (tuned.lr, tuned.batch_size, tuned.weight_decay) == (0.01, 32, 0.0)
    plain = build_settings(read_request(pytester.parseconfig("--fa-schedule", "cosine")))
    assert plain.schedule == "cosine" and plain.device == "auto"


def test_fresh_runs_on_data_from_disk_need_a_root(pytester: pytest.Pytester) -> None:
    request = read_request(pytester.parseconfig("--fa-method", "bp", "--fa-data", "cifar10"))
    with pytest.raises(ConfigError, match="--fa-data cifar10 is read from a local folder: "
                                          "give it with --fa-data-root DIR"):
        build_subjects(request, build_settings(request), pytester.path)


def test_a_bad_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfa_schedule = weekly\n")
    with pytest.raises(pytest.UsageError, match="ini option fa_schedule = 'weekly'"):
        read_request(pytester.parseconfig())


@pytest.mark.parametrize(("args", "fragment"), [
    (["--fa-seeds", "1", "2"], "--fa-seeds applies to fresh runs"),
    (["--fa-method-arg", "penalty=0.1"], "--fa-method-arg applies to fresh runs"),
    (["--fa-baseline-acc", "35"], "fraction between 0 and 1"),
    (["--fa-min-cosine", "2"], "between -1 and 1"),
    (["--fa-schedule", "step"], "use one of cosine, constant"),
    (["--fa-batch-size", "0"], "1 or more"),
    (["--fa-method", "bp", "--fa-seeds", str(2**63)], "from 0 to 2\\^63-1"),
    (["--fa-method", "bp", "--fa-seeds", "-1"], "from 0 to 2\\^63-1"),
])
def test_inconsistent_or_out_of_range_flags_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], fragment: str
) -> None:
    with pytest.raises(pytest.UsageError, match=fragment):
        read_request(pytester.parseconfig(*args))


def test_seeds_and_methods_are_deduplicated_in_order(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig("--fa-method", "dfa", "--fa-method", "bp", "--fa-method",
                                  "dfa", "--fa-seeds", "3", "1", "3")
    request = read_request(config)
    assert request.methods == ("dfa", "bp")
    assert request.get("seeds") == (3, 1)
    assert request.active


# -- workers -----------------------------------------------------------------------------------
@given(st.integers(0, 63), st.integers(1, 8), st.sampled_from(["auto", "cuda"]))
def test_workers_are_spread_round_robin_over_the_gpus(index: int, gpus: int, asked: str) -> None:
    device = worker_device(asked, index, gpus)
    assert device == f"cuda:{index % gpus}"
    assert worker_device(asked, index + gpus, gpus) == device


@given(st.integers(1, 8))
def test_every_gpu_gets_a_worker_when_there_are_enough_workers(gpus: int) -> None:
    assert {worker_device("auto", i, gpus) for i in range(gpus)} == {
        f"cuda:{k}" for k in range(gpus)
    }


@pytest.mark.parametrize("asked,gpus,expected", [
    ("auto", 0, "cpu"), ("cpu", 4, "cpu"), ("cuda:1", 4, "cuda:1"), ("cuda", 0, "cuda"),
])
def test_explicit_devices_are_kept(asked: str, gpus: int, expected: str) -> None:
    assert worker_device(asked, 5, gpus) == expected


def test_worker_index_reads_xdist_worker_names() -> None:
    assert [worker_index(w) for w in ("gw0", "gw7", "gw12")] == [0, 7, 12]


# -- scheduling scopes -------------------------------------------------------------------------
ident = st.text(string.ascii_letters + string.digits + "._=", min_size=1, max_size=12)


@given(st.lists(ident, min_size=1, max_size=5, unique=True), st.data())
def test_a_subjects_items_share_one_scope(ids: list[str], data: st.DataObject) -> None:
    subject = data.draw(st.sampled_from(ids))
    nodeids = [
        f"pytest_fa_checks/suite.py::test_scale_stability[{subject}]",
        f"pytest_fa_checks/suite.py::test_depth_utility[{subject}]",
        # the user's own parameter: a value no subject id can be ('#' is outside ``ident``), so
        # the item belongs to exactly one subject (with ids ['3', '0'], "[0-3]" would name two)
        f"tests/test_mine.py::TestX::test_y[{subject}-#3]",
    ]
    assert {subject_scope(n, ids, []) for n in nodeids} == {f"subject:{subject}"}


def test_longest_subject_id_wins_and_unrelated_items_are_their_own_scope() -> None:
    ids = ["dfa-seed1", "dfa-seed12"]
    assert subject_scope("m.py::t[dfa-seed12]", ids, []) == "subject:dfa-seed12"
    assert subject_scope("m.py::t[dfa-seed1]", ids, []) == "subject:dfa-seed1"
    assert subject_scope("m.py::t[dfa-seed1-2]", ids, []) == "subject:dfa-seed1"
    assert subject_scope("m.py::t_plain", ids, []) == "m.py::t_plain"
    assert subject_scope("m.py::t[other]", ids, []) == "m.py::t[other]"
    across = "pytest_fa_checks/suite.py::test_depth_utility_across_seeds[dfa]"
    assert subject_scope(across, ids, ["dfa"]) == "across-seeds:dfa"


# -- properties: worker -> controller ------------------------------------------------------------
def _entry(fires: bool = False, growth: float = 1.3) -> dict:
    report = Report(
        test_acc=0.8,
        d1=ScaleStability(growth, [growth], [1.0, growth], 50.0, growth > 50, "d1", 0),
        d2=ReferenceValidity(3e-6, [1.0, 3e-6], 1e-6, False, "d2"),
        d3=DepthUtility(4.0 if not fires else -4.0, 0.76, 2.0, fires, "d3"),
        num_samples=64,
        subject={"id": "dfa-seed3", "method": "dfa", "seed": 3, "path": "/c/run.pt"},
    )
    return report.to_dict()


def test_properties_carry_the_report_to_the_controller_intact() -> None:
    entry = _entry()
    props = subject_properties(entry)
    names = [name for name, _ in props]
    assert names[0] == SUBJECT and REPORT in names
    assert dict(props)["fa_d1_max_growth"] == 1.3
    # every value survives str(), as JUnit writes it
    assert all(isinstance(str(value), str) for _, value in props)
    subjects: dict[str, SubjectRecord] = {}
    absorb(props, subjects, {}, set())
    absorb(props, subjects, {}, set())  # the call and teardown reports carry the same
    assert subjects["dfa-seed3"].entry == entry
    assert Report.from_dict(subjects["dfa-seed3"].entry).to_dict() == entry


def test_non_finite_figures_travel_as_json_strings() -> None:
    props = dict(subject_properties(_entry(growth=math.inf)))
    assert props["fa_d1_max_growth"] == "Infinity"
    assert math.isinf(Report.from_dict(json.loads(props[REPORT])).d1.max_growth)


def test_an_error_becomes_an_error_entry() -> None:
    entry = error_entry({"id": "bad.pt", "path": "/abs/bad.pt"}, "bad.pt: truncated")
    subjects: dict[str, SubjectRecord] = {}
    absorb(subject_properties(entry), subjects, {}, set())
    assert subjects["bad.pt"].entry == {"id": "bad.pt", "method": None, "seed": None,
                                        "path": "/abs/bad.pt", "verdict": "ERROR",
                                        "error": "bad.pt: truncated"}


def test_across_seeds_gates_are_recorded_per_method() -> None:
    gate = gate_across_seeds([30.0], method="dfa")
    groups: dict[str, GroupRecord] = {}
    absorb(across_seeds_properties("dfa", gate.to_dict()), {}, groups, set())
    assert groups["dfa"].gate["lower_bound_pp"] == "-Infinity"  # JSON-safe
    assert AcrossSeeds.from_dict(groups["dfa"].gate) == gate


def test_the_gated_diagnostics_are_collected() -> None:
    gated: set[str] = set()
    absorb([(GATE, "D1"), *subject_properties(_entry())], {}, {}, gated)
    absorb([(GATE, "D3")], {}, {}, gated)
    assert gated == {"D1", "D3"}
