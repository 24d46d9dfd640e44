"""The plugin's pure parts: option parsing, worker devices and threads, scheduling scopes,
the properties that cross the xdist boundary, and the verdict table.  No subprocesses here."""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest_fa_checks import options as opts
from pytest_fa_checks import session
from pytest_fa_checks.parallel import (
    subject_scope,
    worker_device,
    worker_index,
    worker_threads,
)
from pytest_fa_checks.records import (
    REPORT,
    SUBJECT,
    GroupRecord,
    SubjectRecord,
    absorb,
    seed_summary_properties,
    subject_properties,
)
from pytest_fa_checks.summary import render_groups, render_table

finite = st.floats(allow_nan=False, allow_infinity=False)


# -- typed parse functions ---------------------------------------------------------------------
@given(finite.filter(lambda x: x > 0))
def test_positive_float_reads_back_what_repr_wrote(x: float) -> None:
    assert opts.positive_float(repr(x)) == x


@given(finite.filter(lambda x: x <= 0))
def test_positive_float_refuses_zero_and_negatives(x: float) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        opts.positive_float(repr(x))


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "abc", ""])
def test_numbers_must_be_finite_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        opts.any_float(text)


@given(st.floats(min_value=0, max_value=1))
def test_fraction_accepts_the_unit_interval(x: float) -> None:
    assert opts.fraction(repr(x)) == x


@given(finite.filter(lambda x: not 0 <= x <= 1))
def test_fraction_refuses_percentages_and_negatives(x: float) -> None:
    with pytest.raises(ValueError, match="fraction between 0 and 1"):
        opts.fraction(repr(x))


@given(st.integers(min_value=0, max_value=2**40))
def test_seed_round_trips_non_negative_integers(n: int) -> None:
    assert opts.seed(str(n)) == n


@pytest.mark.parametrize("text", ["-1", "1.5", "one"])
def test_seed_refuses_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        opts.seed(text)


@pytest.mark.parametrize("text,expected", [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"),
                                           ("cuda:3", "cuda:3")])
def test_device_accepts_the_documented_names(text: str, expected: str) -> None:
    assert opts.device(text) == expected


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "mps0"])
def test_device_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        opts.device(text)


def test_every_option_has_the_common_prefix_and_a_unique_destination() -> None:
    flags = [option.flag for option in opts.OPTIONS]
    assert all(flag.startswith("--fa-") for flag in flags)
    assert len({option.dest for option in opts.OPTIONS}) == len(opts.OPTIONS)
    assert {"--fa-checkpoint", "--fa-method", "--fa-method-arg", "--fa-arch", "--fa-arch-arg",
            "--fa-data", "--fa-data-root", "--fa-epochs", "--fa-seeds", "--fa-device",
            "--fa-eval-size", "--fa-max-growth", "--fa-grad-floor", "--fa-min-margin",
            "--fa-baseline-acc", "--fa-min-cosine", "--fa-min-rho", "--fa-report",
            "--fa-trust-checkpoint", "--fa-retrain"} <= set(flags)


def test_ini_keys_are_the_documented_ones() -> None:
    keys = {opts.ini_key(option) for option in opts.OPTIONS if option.ini}
    assert keys == {"fa_max_growth", "fa_grad_floor", "fa_min_margin", "fa_eval_size",
                    "fa_min_cosine", "fa_min_rho", "fa_device", "fa_epochs", "fa_data",
                    "fa_data_root", "fa_schedule", "fa_lr", "fa_batch_size",
                    "fa_weight_decay"}


# -- options read from a real pytest config (in process: no subprocess needed) ------------------
def test_command_line_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfa_max_growth = 7\nfa_grad_floor = 1e-3\n")
    config = pytester.parseconfig("--fa-max-growth", "9")
    read = opts.read_options(config)
    assert read.max_growth == 9.0  # command line
    assert read.grad_floor == 1e-3  # ini
    assert read.thresholds == {"max_growth": 9.0, "grad_floor": 1e-3}
    assert not read.active


def test_the_schedule_reaches_the_engine_settings(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfa_schedule = constant\n")
    read = opts.read_options(pytester.parseconfig("--fa-method", "dfa"))
    assert session.build_settings(read, "cpu").schedule == "constant"
    default = opts.read_options(pytester.parseconfig("--fa-method", "dfa"))
    assert default.schedule == "constant"  # from the ini file
    tuned = session.build_settings(opts.read_options(pytester.parseconfig(
        "--fa-method", "dfa", "--fa-lr", "0.01", "--fa-batch-size", "32",
        "--fa-weight-decay", "0")), "cpu")
    assert (tuned.lr, tuned.batch_size, tuned.weight_decay) == (0.01, 32, 0.0)
    plain = session.build_settings(opts.read_options(pytester.parseconfig("--fa-schedule",
                                                                       "cosine")), "cpu")
    assert plain.schedule == "cosine"


def test_fresh_runs_on_data_from_disk_need_a_root(pytester: pytest.Pytester) -> None:
    read = opts.read_options(pytester.parseconfig("--fa-method", "bp", "--fa-data", "cifar10"))
    with pytest.raises(pytest.UsageError, match="--fa-data cifar10 is read from a local folder: "
                                                "give it with --fa-data-root DIR"):
        session.build_subjects(read, pytester.path)


def test_a_bad_ini_value_names_the_key(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfa_eval_size = many\n")
    with pytest.raises(pytest.UsageError, match="ini option fa_eval_size = 'many'"):
        opts.read_options(pytester.parseconfig())


@pytest.mark.parametrize("args,fragment", [
    (["--fa-seeds", "1", "2"], "--fa-seeds applies to fresh runs"),
    (["--fa-method-arg", "penalty=0.1"], "--fa-method-arg applies to fresh runs"),
    (["--fa-baseline-acc", "35"], "fraction between 0 and 1"),
    (["--fa-min-cosine", "2"], "between -1 and 1"),
    (["--fa-schedule", "step"], "use one of cosine, constant"),
    (["--fa-batch-size", "0"], "1 or more"),
])
def test_inconsistent_or_out_of_range_options_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], fragment: str
) -> None:
    with pytest.raises(pytest.UsageError, match=fragment):
        opts.read_options(pytester.parseconfig(*args))


def test_seeds_and_methods_are_deduplicated_in_order(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig("--fa-method", "dfa", "--fa-method", "bp", "--fa-method",
                                  "dfa", "--fa-seeds", "3", "1", "3")
    read = opts.read_options(config)
    assert read.methods == ("dfa", "bp")
    assert read.seeds == (3, 1)
    assert read.active


# -- workers -----------------------------------------------------------------------------------
@given(st.integers(1, 256), st.integers(1, 64))
def test_worker_threads_never_oversubscribe(cores: int, workers: int) -> None:
    threads = worker_threads(cores, workers)
    assert threads >= 1
    if workers <= cores:
        assert threads * workers <= cores
        assert (threads + 1) * workers > cores  # and use what is there


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
        f"tests/test_mine.py::TestX::test_y[{subject}-3]",
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
def _report(verdict: str = "PASS", growth: float | str = 1.3) -> dict:
    return {
        "verdict": verdict, "mode1": False, "test_acc": 0.8, "num_samples": 64,
        "D1": {"max_growth": growth, "threshold": 50.0, "fires": verdict != "PASS",
               "explanation": "d1"},
        "D2": {"g_L": 3e-6, "floor": 1.28e-5, "fires": False, "explanation": "d2"},
        "D3": {"margin_pp": 4.0, "baseline_acc": 0.76, "threshold_pp": 2.0, "fires": False,
               "explanation": "d3"},
        "credit": None,
        "subject": {"id": "dfa-seed3", "method": "dfa", "seed": 3, "path": "/c/run.pt"},
    }


def test_properties_carry_the_report_to_the_controller_intact() -> None:
    subject = {"id": "dfa-seed3", "kind": "fresh", "method": "dfa", "seed": 3, "path": None}
    report = _report()
    props = subject_properties(subject, report)
    names = [name for name, _ in props]
    assert names[0] == SUBJECT and REPORT in names
    assert dict(props)["fa_d1_max_growth"] == 1.3
    # every value survives str(), as JUnit writes it
    assert all(isinstance(str(value), str) for _, value in props)
    subjects: dict[str, SubjectRecord] = {}
    absorb(props, subjects, {})
    absorb(props, subjects, {})  # the call and teardown reports carry the same properties
    record = subjects["dfa-seed3"]
    assert record.to_json() == {**report, "id": "dfa-seed3", "method": "dfa", "seed": 3,
                                "path": "/c/run.pt"}


def test_non_finite_figures_travel_as_floats() -> None:
    props = dict(subject_properties({"id": "x"}, _report("FAIL(D1)", growth="NaN")))
    assert math.isnan(props["fa_d1_max_growth"])


def test_an_error_becomes_an_error_record() -> None:
    props = subject_properties({"id": "bad.pt", "path": "/abs/bad.pt"},
                               error="bad.pt: truncated")
    subjects: dict[str, SubjectRecord] = {}
    absorb(props, subjects, {})
    assert subjects["bad.pt"].to_json() == {"id": "bad.pt", "method": None, "seed": None,
                                            "path": "/abs/bad.pt", "verdict": "ERROR",
                                            "error": "bad.pt: truncated"}


def test_seed_summaries_are_recorded_per_method() -> None:
    summary = {"method": "dfa", "n": 2, "lower_bound_pp": -math.inf, "fires": True,
               "explanation": "too few"}
    groups: dict[str, GroupRecord] = {}
    absorb(seed_summary_properties("dfa", summary), {}, groups)
    assert groups["dfa"].summary["lower_bound_pp"] == "-Infinity"  # JSON-safe
    assert render_groups(list(groups.values())) == ["across seeds dfa: FAIL: too few"]


# -- the table and the JSON file ---------------------------------------------------------------
def test_table_has_one_aligned_row_per_subject_with_the_verdict_last() -> None:
    records = [
        SubjectRecord("run.pt", report=_report()),
        SubjectRecord("dfa-seed3", report=_report("FAIL(D1+D2+D3)", growth=8433.0)),
        SubjectRecord("bad.pt", error="bad.pt: not a checkpoint"),
    ]
    lines = render_table(records)
    assert lines[0].split() == ["subject", "accuracy", "D1", "growth", "D2", "|g_L|", "D3",
                                "margin", "verdict"]
    assert lines[1].startswith("run.pt") and lines[1].endswith("PASS")
    assert "8433x FAIL" in lines[2] and lines[2].endswith("FAIL(D1+D2+D3)")
    assert lines[3].endswith("ERROR: bad.pt: not a checkpoint")
    verdict_column = lines[0].index("verdict")
    assert all(line.index(word) == verdict_column
               for line, word in zip(lines[1:], ("PASS", "FAIL(", "ERROR"), strict=True))
