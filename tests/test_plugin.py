"""The pytest plugin, driven as a user drives it: ``pytest --fa-...`` in a fresh process.

Every scenario runs tiny subjects (a ResMLP of width 16 on the ``synthetic`` task) so the whole
file stays within a few minutes on two cores.  Outcomes are read from JUnit XML (item names,
outcomes, properties), the ``--fa-report`` JSON and the cache's ``created.jsonl``.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from fa_checks.checkpoint import load_checkpoint, save_checkpoint
from fa_checks.training.loop import train

TINY = {"d_hidden": 16, "num_blocks": 2}
CACHE = Path("fa-cache")  # each test's own cache, under its pytester folder
SUITE_ITEMS = ("test_scale_stability", "test_reference_validity", "test_depth_utility")


# -- subjects made once for the whole module ---------------------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """bp.pt passes; exploding.pt is bp.pt with its residual branches scaled by 1e6 (D1 and D2
    fire; D3 fires against a high baseline); nan.pt has NaN weights; corrupt.pt is not a file
    torch can read."""
    folder = tmp_path_factory.mktemp("checkpoints")
    train("bp", "resmlp", "synthetic", epochs=8, seed=0, lr=1e-2, arch_options=TINY,
          checkpoint=folder / "bp.pt", progress=False, device="cpu")
    bp = load_checkpoint(folder / "bp.pt")
    exploding = bp.build_model()
    diverged = bp.build_model()
    with torch.no_grad():
        for block in exploding.blocks:
            block.w2.weight.mul_(1e6)
            block.w2.bias.mul_(1e6)
        diverged.blocks[0].w1.weight.fill_(float("nan"))
    for name, model in (("exploding.pt", exploding), ("nan.pt", diverged)):
        save_checkpoint(folder / name, model=model, data=bp.data, seed=0, epochs=8)
    (folder / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    return {p.name: p for p in folder.iterdir()}


def use(pytester: pytest.Pytester, checkpoints: dict[str, Path], *names: str) -> None:
    for name in names:
        shutil.copy(checkpoints[name], pytester.path / name)


@pytest.fixture(autouse=True)
def private_cache(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scenario gets a cache of its own (the user's cache directory, as both faces use)."""
    monkeypatch.setenv("FA_CHECKS_CACHE", str(pytester.path / CACHE))


# -- reading what a run produced -----------------------------------------------------------------
@dataclass
class Case:
    outcome: str  # passed | failed | error | skipped
    message: str = ""
    properties: dict[str, str] = field(default_factory=dict)


def junit(path: Path) -> dict[str, Case]:
    """Each test case of a JUnit file by its name (``test_x[subject]``)."""
    cases: dict[str, Case] = {}
    for element in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = element.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = child.get("message", "") + (child.text or "")
        props = {p.get("name"): p.get("value") for p in element.iter("property")}
        cases[element.get("name")] = Case(outcome, message, props)
    return cases


def created(pytester: pytest.Pytester) -> list[dict]:
    log = pytester.path / CACHE / "created.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def run(pytester: pytest.Pytester, *args: str, xdist: bool = False,
        junit_name: str = "junit.xml") -> pytest.RunResult:
    extra = ["-n", "2"] if xdist else ["-p", "no:xdist"]
    # not a device test: on a GPU machine "auto" would train on the GPU (tests/test_cuda.py)
    device = [] if any(a.startswith("--fa-device") for a in args) else ["--fa-device", "cpu"]
    return pytester.runpytest_subprocess(*args, *extra, *device, f"--junitxml={junit_name}",
                                         timeout=300)


def one_line_error(result: pytest.RunResult) -> str:
    lines = [line for line in result.stderr.lines if line.strip()]
    assert len(lines) == 1, result.stderr.str()
    assert lines[0].startswith("ERROR: ")
    return lines[0]


# -- a plain run ---------------------------------------------------------------------------------
def test_a_plain_run_collects_nothing_of_ours_and_imports_no_torch(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_plain="""
        import sys

        # the flags' vocabulary, which imports no torch, is all the plugin loads of fa_checks
        VOCABULARY = {"fa_checks", "fa_checks.errors", "fa_checks.values", "fa_checks.flags",
                      "fa_checks.report", "fa_checks.settings", "fa_checks.files",
                      "fa_checks.direction", "fa_checks.judgements"}

        def test_nothing_heavy_was_imported():
            assert "torch" not in sys.modules and "matplotlib" not in sys.modules
            ours = {m for m in sys.modules if m == "fa_checks" or m.startswith("fa_checks.")}
            assert ours <= VOCABULARY, ours - VOCABULARY
            assert "pytest_fa_checks" in sys.modules  # the plugin is loaded, just idle

        def test_our_fixture_skips_without_a_subject(fa_report):
            raise AssertionError("unreachable")
    """)
    result = pytester.runpytest_subprocess("-rs", "-p", "no:randomly")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*no fa-checks subject: run pytest with --fa-checkpoint*"])
    result.stdout.no_fnmatch_line("*fa-checks verdicts*")
    result.stdout.no_fnmatch_line("*suite.py*")


# -- checkpoints ---------------------------------------------------------------------------------
def test_a_passing_bp_checkpoint_exits_0_with_a_table_json_and_junit_properties(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    result = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3",
                 "--fa-min-cosine", "0.9", "--fa-min-rho", "0.5", "--fa-report", "out/fa.json")
    result.assert_outcomes(passed=5)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*fa-checks verdicts*", "subject *verdict",
                                 "bp.pt * ok * ok * ok *PASS"])
    cases = junit(pytester.path / "junit.xml")
    assert set(cases) == {f"{name}[bp.pt]" for name in SUITE_ITEMS} | {
        "test_credit_cosine[bp.pt]", "test_credit_rho[bp.pt]"}
    props = cases["test_scale_stability[bp.pt]"].properties
    assert props["fa_subject"] == "bp.pt" and props["fa_method"] == "bp"
    assert props["fa_seed"] == "0" and props["fa_verdict"] == "PASS"
    assert float(props["fa_d1_max_growth"]) < 50
    data = json.loads((pytester.path / "out" / "fa.json").read_text())
    assert [s["id"] for s in data["subjects"]] == ["bp.pt"]
    subject = data["subjects"][0]
    assert subject["verdict"] == "PASS" and subject["method"] == "bp" and subject["seed"] == 0
    assert Path(subject["path"]).resolve() == (pytester.path / "bp.pt").resolve()
    assert subject["D1"]["max_growth"] == pytest.approx(float(props["fa_d1_max_growth"]))
    assert subject["credit"]["deep_cosine"] > 0.9


def test_d4_is_an_item_only_when_gated_from_the_flag_or_the_ini_file(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    result = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3",
                 "--fa-report", "fa.json")
    result.assert_outcomes(passed=3)  # D4 reported, not an item
    subject = json.loads((pytester.path / "fa.json").read_text())["subjects"][0]
    assert subject["D4"]["gated"] is False and subject["mode2"] is False
    # BP has no feedback to redraw: its true gradient is held to the absolute floor and passes
    assert subject["D4"]["test"] == "floor" and subject["D4"]["fires"] is False
    pytester.makeini("[pytest]\nfa_gate_d4 = true\n")
    result = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3")
    result.assert_outcomes(passed=4)
    assert junit(pytester.path / "junit.xml")["test_direction_quality[bp.pt]"].outcome == "passed"
    result = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3",
                 "--fa-d4-floor", "1", "-p", "no:cacheprovider")  # nothing exceeds a floor of 1
    result.assert_outcomes(passed=3, failed=1)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*D4 direction quality failed: * blocks with a valid reference "
                                 "learn from a signal at chance*absolute floor 1*",
                                 "bp.pt * ok * ok * ok *FAIL(D4)  [[]mode 2[]]"])


def test_an_exploding_checkpoint_fails_d1_d2_d3_with_sentences(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "exploding.pt")
    result = run(pytester, "--fa-checkpoint", "exploding.pt", "--fa-baseline-acc", "0.99")
    result.assert_outcomes(failed=3)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*D1 scale stability failed: the residual stream grew *x across block 0 * against a "
        "limit of 50x; a terminal LayerNorm would hide this from the loss",
        "*D2 reference validity failed: the per-sample BP gradient at h_2 is *, below the "
        "floor 1.28e-05*",
        "*D3 depth utility failed: test accuracy *% is * pp below the frozen-blocks baseline "
        "99.0%*",
        "exploding.pt * FAIL * FAIL * FAIL *FAIL(D1+D2+D3)  [[]mode 1[]]",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*def test_*")  # a sentence, not the test's source


def test_a_subject_a_stopped_session_never_ran_is_named_under_the_table(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "exploding.pt", "bp.pt")
    result = run(pytester, "--maxfail=1", "--fa-checkpoint", "exploding.pt",
                 "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["exploding.pt * FAIL *",
                                 "not run in this session (it stopped first, or -k left them "
                                 "out): bp.pt"])
    result.stdout.no_fnmatch_line("bp.pt * PASS*")


def test_mixed_subjects_give_the_same_verdicts_with_and_without_xdist(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    """A corrupt file errors its own items only; a NaN model fails (never errors, never
    passes); the others run; -n 2 agrees with -n 0 item by item and in the JSON."""
    use(pytester, checkpoints, "bp.pt", "exploding.pt", "nan.pt", "corrupt.pt")
    args = ("--fa-checkpoint", "*.pt", "--fa-baseline-acc", "0.3")
    serial = run(pytester, *args, "--fa-report", "serial.json", junit_name="serial.xml")
    parallel = run(pytester, *args, "--fa-report", "parallel.json", junit_name="parallel.xml",
                   xdist=True)
    for result in (serial, parallel):
        result.assert_outcomes(passed=4, failed=5, errors=3)
        # a file that cannot be evaluated is an input error: never exit 1 ("the method failed")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
    serial_cases = junit(pytester.path / "serial.xml")
    parallel_cases = junit(pytester.path / "parallel.xml")
    assert {k: c.outcome for k, c in serial_cases.items()} == {
        k: c.outcome for k, c in parallel_cases.items()}
    for name in SUITE_ITEMS:
        assert serial_cases[f"{name}[bp.pt]"].outcome == "passed"
        assert serial_cases[f"{name}[nan.pt]"].outcome == "failed"
        assert "diverged" in serial_cases[f"{name}[nan.pt]"].message
        corrupt = serial_cases[f"{name}[corrupt.pt]"]
        assert corrupt.outcome == "error"
        assert "corrupt.pt" in corrupt.message and "Traceback" not in corrupt.message
    # exploding.pt passes D3 against a 30% baseline: only D1 and D2 fire
    assert [serial_cases[f"{n}[exploding.pt]"].outcome for n in SUITE_ITEMS] == [
        "failed", "failed", "passed"]
    # with xdist, each subject's items ran on one worker
    workers: dict[str, set[str]] = {}
    for case in parallel_cases.values():
        workers.setdefault(case.properties["fa_subject"], set()).add(
            case.properties["fa_worker"])
    assert all(len(w) == 1 and not w & {"main"} for w in workers.values()), workers
    reports = {}
    for name in ("serial.json", "parallel.json"):
        data = json.loads((pytester.path / name).read_text())
        reports[name] = {s["id"]: s["verdict"] for s in data["subjects"]}
    assert reports["serial.json"] == reports["parallel.json"] == {
        "bp.pt": "PASS", "corrupt.pt": "ERROR", "exploding.pt": "FAIL(D1+D2)",
        "nan.pt": "FAIL(D1+D2+D3)"}
    # the report of each checkpoint was computed once: the parallel run reused all of them
    assert Counter(e["kind"] for e in created(pytester)) == {"report": 3}


def test_users_own_tests_get_the_fixtures_and_no_built_in_items(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt", "exploding.pt")
    pytester.makepyfile(test_mine="""
        def test_growth_is_small(fa_report):
            assert fa_report.d1.max_growth < 10

        def test_thresholds_come_from_the_command_line(fa_thresholds):
            assert fa_thresholds.max_growth == 20.0

        def test_model_and_data(fa_model, fa_subject):
            x, y = fa_model.data.eval_batch(8)
            assert fa_model.model(x).shape == (8, fa_model.data.num_classes)
            assert fa_model.checkpoint.path.name == fa_subject.id
    """)
    result = run(pytester, "test_mine.py", "--fa-checkpoint", "bp.pt", "--fa-checkpoint",
                 "exploding.pt", "--fa-baseline-acc", "0.3", "--fa-max-growth", "20")
    result.assert_outcomes(passed=4, failed=1)
    cases = junit(pytester.path / "junit.xml")
    assert set(cases) == {"test_growth_is_small[bp.pt]", "test_growth_is_small[exploding.pt]",
                          "test_thresholds_come_from_the_command_line",
                          "test_model_and_data[bp.pt]", "test_model_and_data[exploding.pt]"}
    assert cases["test_growth_is_small[exploding.pt]"].outcome == "failed"
    result.stdout.fnmatch_lines(["*assert * < 10*"])  # assertion rewriting in users' tests
    # the table says that this run gated none of the diagnostics it shows
    result.stdout.fnmatch_lines(["*fa-checks verdicts*",
                                 "exploding.pt *FAIL(D1+D2) (not gated in this run)*",
                                 "gated in this run: none of these diagnostics*"])


def test_fa_model_loads_a_seed_format_checkpoint_on_the_dataset_named_or_errors_naming_it(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    state = load_checkpoint(checkpoints["bp.pt"]).model_state
    torch.save({k.replace("embed_layer.", "embed."): v for k, v in state.items()},
               pytester.path / "seed.pt")  # the research code's bare state dict: no data spec
    pytester.makepyfile(test_mine="""
        import torch

        def test_same_weights_same_logits(fa_model):
            from fa_checks.checkpoint import load_checkpoint

            x, _ = fa_model.data.eval_batch(16)
            reference = load_checkpoint("bp.pt").build_model()
            torch.testing.assert_close(fa_model.model(x), reference(x), rtol=0, atol=0)
            assert fa_model.data.spec["name"] == "synthetic"
    """)
    subjects = ("--fa-checkpoint", "bp.pt", "--fa-checkpoint", "seed.pt")
    run(pytester, "test_mine.py", *subjects, "--fa-data", "synthetic").assert_outcomes(passed=2)
    result = run(pytester, "test_mine.py", *subjects)
    result.assert_outcomes(passed=1, errors=1)
    reason = junit(pytester.path / "junit.xml")["test_same_weights_same_logits[seed.pt]"].message
    assert "seed.pt: the model takes 20 input features" in reason and "(--fa-data)" in reason
    result.stdout.fnmatch_lines(["*fa-checks verdicts*", "seed.pt *ERROR: *seed.pt: the model*"])


def test_ini_thresholds_apply_and_the_command_line_wins(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    pytester.makeini("[pytest]\nfa_max_growth = 1.01\n")  # bp.pt grows ~1.3x across a block
    strict = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3")
    strict.assert_outcomes(passed=2, failed=1)
    strict.stdout.fnmatch_lines(["*D1 scale stability failed: *against a limit of 1.01x*"])
    relaxed = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3",
                  "--fa-max-growth", "50")
    relaxed.assert_outcomes(passed=3)


def test_one_cache_whatever_the_rootdir_and_retrain_recomputes(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    args = ("--fa-baseline-acc", "0.3")
    run(pytester, "--fa-checkpoint", "bp.pt", *args).assert_outcomes(passed=3)
    first = created(pytester)
    assert [e["kind"] for e in first] == ["report"]
    # the same file reached from elsewhere, through a folder with a space (which moved
    # pytest's rootdir and its .pytest_cache), and with pytest's own cache cleared
    elsewhere = pytester.mkdir("other place")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(elsewhere)
        result = pytester.runpytest_subprocess("--fa-checkpoint", "../bp.pt", *args,
                                               "--fa-device", "cpu", "--cache-clear",
                                               "-p", "no:xdist")
    result.assert_outcomes(passed=3)
    assert created(pytester) == first  # reused: one cache, in the user's cache directory
    started = time.time()
    run(pytester, "--fa-checkpoint", "bp.pt", *args, "--fa-retrain").assert_outcomes(passed=3)
    again = created(pytester)[len(first):]
    assert [e["kind"] for e in again] == ["report"] and again[0]["time"] >= started - 1


def test_a_missing_checkpoint_errors_its_own_items_and_the_others_run(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    result = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-checkpoint", "missing.pt",
                 "--fa-baseline-acc", "0.3")
    result.assert_outcomes(passed=3, errors=3)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    cases = junit(pytester.path / "junit.xml")
    for name in SUITE_ITEMS:
        missing = cases[f"{name}[missing.pt]"]
        assert missing.outcome == "error" and "Traceback" not in missing.message
        assert missing.message.rstrip().endswith("missing.pt: no such checkpoint file")
    result.stdout.fnmatch_lines(["missing.pt *ERROR: *missing.pt: no such checkpoint file"])


def test_a_rule_that_raises_errors_its_own_items_naming_the_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(broken_rule="""
        from fa_checks.methods.bp import BP


        class Boom(BP):
            def step(self, x, y):
                raise RuntimeError("my rule broke")
    """)
    result = run(pytester, "--fa-method", "broken_rule:Boom", "--fa-data", "synthetic",
                 "--fa-arch-arg", "d_hidden=16", "--fa-arch-arg", "num_blocks=2",
                 "--fa-epochs", "1")
    result.assert_outcomes(errors=3)
    # the user's own code: an input error (exit 4), not a fault of fa-checks (exit 3)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    expected = ("RuntimeError raised in your code (broken_rule, line 6, in step): "
                "my rule broke; fix it there")
    for name in SUITE_ITEMS:
        case = junit(pytester.path / "junit.xml")[f"{name}[broken_rule:Boom-seed0]"]
        assert case.outcome == "error" and case.message.rstrip().endswith(expected)
        assert "internal error" not in case.message


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("args,fragment", [
    (["--fa-method", "nosuchrule"], "unknown method 'nosuchrule'"),
    (["--fa-method", "bp", "--fa-method-arg", "penalty"], "--fa-method-arg 'penalty' is not "
                                                          "key=value"),
    (["--fa-checkpoint", "runs/*.pt"], "--fa-checkpoint 'runs/*.pt' matches no file"),
    (["--fa-checkpoint", "x.pt", "--fa-max-growth", "lots"], "--fa-max-growth 'lots' is not "
                                                             "valid"),
    (["--fa-method", "bp", "--fa-arch-arg", "d_hidden=abc"],
     "--fa-arch-arg d_hidden='abc': it must be a whole number"),
    (["--fa-method", "bp", "--fa-arch-arg", "d_hidden=-1"], "--fa-arch-arg d_hidden=-1: "),
    (["--fa-method", "bp", "--fa-arch", "vit", "--fa-data", "digits", "--fa-arch-arg",
      "patch_size=0"], "--fa-arch-arg patch_size=0: it must be 1 or more"),
    (["--fa-method", "bp", "--fa-seeds", str(2**64)], "a seed is a whole number from 0"),
    (["--fa-method", ":"], "method ':' is not module:Class"),
    (["--fa-method", "../x:y"], "method '../x:y' is not module:Class"),
    (["--fa-method", "bp", "--fa-arch", "vit"], "architecture 'vit' needs image inputs"),
    (["--fa-method", "bp", "--fa-batch-size", str(10**11)],
     f"--fa-batch-size={10**11}: above the limit max_batch_size=1048576"),
])
def test_bad_options_are_one_line_usage_errors(
    pytester: pytest.Pytester, args: list[str], fragment: str
) -> None:
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert fragment in one_line_error(result)


@pytest.mark.parametrize(("ini", "env", "fragment"), [
    ("fa_epochs = abc", {}, "ini option fa_epochs in {ini}: invalid literal for int() with "
                            "base 10: 'abc'; it must be a whole number"),
    ("fa_max_growth = [1,2]", {}, "ini option fa_max_growth in {ini}: "),
    ("", {"FA_CHECKS_LOCK_TIMEOUT": "abc"}, "FA_CHECKS_LOCK_TIMEOUT='abc': it must be a number"),
    ("", {"FA_CHECKS_THREADS": "0"}, "FA_CHECKS_THREADS='0': it must be a whole number of 1"),
])
def test_bad_ini_keys_and_environment_are_one_line_usage_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str,
    env: dict[str, str], fragment: str
) -> None:
    inifile = pytester.makeini(f"[pytest]\n{ini}\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = pytester.runpytest_subprocess("--fa-method", "bp")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert fragment.format(ini=inifile) in one_line_error(result)


@pytest.mark.parametrize("args,fragment", [
    (["--fa-method", "dfa", "--fa-arch", "transformer"],
     "--fa-arch: unknown architecture 'transformer'"),
    (["--fa-method", "dfa", "--fa-arch-arg", "width=3"],
     "--fa-arch-arg width: architecture 'resmlp' takes no such option; it takes d_hidden"),
    (["--fa-method", "dfa", "--fa-data", "imagenet"], "--fa-data: unknown dataset 'imagenet'"),
    (["--fa-method", "dfa", "--fa-data", "synthetic", "--fa-data-arg", "num_samples=-5"],
     "--fa-data-arg: "),
    (["--fa-method", "dfa", "--fa-method-arg", "colour=red"],
     "--fa-method-arg colour: method 'dfa' takes no such option; it takes penalty, clip"),
    (["--fa-method", "bp", "--fa-method-arg", "lr=1"],
     "--fa-method-arg lr: method 'bp' takes no such option; it takes no options"),
    (["--fa-checkpoint", "a.pt", "--fa-report", "."], ": is a folder; give a file name"),
    (["--fa-checkpoint", "a.pt", "--fa-report", "/proc/fa.json"],
     "--fa-json /proc/fa.json: cannot write there"),
])
def test_bad_subjects_are_usage_errors_before_collection(
    pytester: pytest.Pytester, args: list[str], fragment: str
) -> None:
    (pytester.path / "a.pt").write_bytes(b"")
    with pytest.raises(pytest.UsageError, match=re.escape(fragment)):
        pytester.parseconfigure(*args)


# -- fresh runs across seeds ---------------------------------------------------------------------
def test_four_seeds_with_xdist_train_each_run_and_baseline_once_and_rerun_trains_nothing(
    pytester: pytest.Pytester,
) -> None:
    args = ("--fa-method", "bp", "--fa-seeds", "1", "2", "3", "4", "--fa-data", "synthetic",
            "--fa-arch-arg", "d_hidden=16", "--fa-arch-arg", "num_blocks=1", "--fa-epochs", "1",
            "--fa-report", "fa.json")
    first = run(pytester, *args, xdist=True)
    outcomes = first.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 13, first.stdout.str()
    assert "errors" not in outcomes
    computed = created(pytester)
    assert Counter(e["kind"] for e in computed) == {"run": 4, "baseline": 4, "report": 4}
    assert len({(e["kind"], e["key"]) for e in computed}) == 12  # nothing computed twice
    cases = junit(pytester.path / "junit.xml")
    assert {f"{n}[bp-seed{s}]" for n in SUITE_ITEMS for s in (1, 2, 3, 4)} | {
        "test_depth_utility_across_seeds[bp]"} == set(cases)
    across = cases["test_depth_utility_across_seeds[bp]"]
    summary = json.loads(across.properties["fa_across_seeds"])
    assert summary["n"] == 4 and summary["confidence"] == 0.95
    data = json.loads((pytester.path / "fa.json").read_text())
    assert [s["seed"] for s in data["subjects"]] == [1, 2, 3, 4]
    assert data["across_seeds"][0]["label"] == "bp"
    margins = [s["D3"]["margin_pp"] for s in data["subjects"]]
    assert summary["margins_pp"] == pytest.approx(margins)

    second = run(pytester, *args, xdist=True)
    assert second.parseoutcomes() == outcomes
    assert created(pytester) == computed  # a second invocation trains nothing

    retrained = run(pytester, *args, "--fa-retrain", xdist=True)
    assert retrained.parseoutcomes() == outcomes
    fresh = created(pytester)[len(computed):]
    assert Counter(e["kind"] for e in fresh) == {"run": 4, "baseline": 4, "report": 4}
    assert not any((pytester.path / CACHE / "retrain-claims").glob("*"))  # cleaned up


@pytest.mark.parametrize("xdist", [False, True])
def test_training_progress_shows_in_the_terminal_with_and_without_xdist(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    args = ("--fa-method", "bp", "--fa-data", "synthetic", "--fa-arch-arg", "d_hidden=16",
            "--fa-epochs", "3", "--fa-baseline-acc", "0")
    result = run(pytester, *args, xdist=xdist)
    result.assert_outcomes(passed=3)
    worker = r" \[gw\d\]" if xdist else ""
    result.stdout.re_match_lines([
        rf"fa-checks{worker}: \[bp-seed0\] epoch 1/3  loss [\d.]+  test acc [\d.]+  eta \d+:\d\d",
        rf"fa-checks{worker}: \[bp-seed0\] epoch 3/3  loss [\d.]+  test acc [\d.]+  done",
        r".*fa-checks verdicts.*",
    ])
    quiet = run(pytester, *args, "--fa-retrain", "-qq", xdist=xdist)
    assert quiet.ret == 0  # -qq prints no summary line to count outcomes from
    assert {case.outcome for case in junit(pytester.path / "junit.xml").values()} == {"passed"}
    quiet.stdout.no_fnmatch_line("*epoch 1/3*")
    assert not any((pytester.path / CACHE / "progress").glob("*"))  # cleaned up


@pytest.mark.skipif(sys.platform == "win32", reason="posix paths in the expected output")
def test_single_seed_gets_no_across_seeds_item(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--fa-method", "bp", "--fa-data", "synthetic", "--fa-arch-arg", "d_hidden=16",
        "--fa-epochs", "1", "--fa-baseline-acc", "0", "--co", "-q")
    result.stdout.fnmatch_lines([
        "pytest_fa_checks/suite.py::test_scale_stability[bp-seed0]",
        "pytest_fa_checks/suite.py::test_reference_validity[bp-seed0]",
        "pytest_fa_checks/suite.py::test_depth_utility[bp-seed0]",
        "3 tests collected*",
    ])
    assert created(pytester) == []  # collecting trains nothing


@pytest.mark.slow
def test_a_dfa_checkpoint_from_the_papers_setting_fails_d1_d2_d3(pytester: pytest.Pytester):
    """MNIST-1D, ResMLP d=256 L=4, 20 epochs, constant rate (about a minute on one core)."""
    train("dfa", "resmlp", "mnist1d", epochs=20, seed=0, schedule="constant",
          checkpoint=pytester.path / "dfa.pt", progress=False, device="cpu")
    result = run(pytester, "--fa-checkpoint", "dfa.pt", "--fa-report", "fa.json")
    result.assert_outcomes(failed=3)
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*D1 scale stability failed: the residual stream grew *x across block 0*",
        "*D2 reference validity failed: the per-sample BP gradient at h_4 is *, below the floor*",
        "*D3 depth utility failed: test accuracy *% is * pp below the frozen-blocks baseline*",
        "dfa.pt *FAIL(D1+D2+D3)*[mode 1]*",
    ])
    subject = json.loads((pytester.path / "fa.json").read_text())["subjects"][0]
    assert subject["mode1"] and subject["D1"]["max_growth"] > 1000


# -- the visual report ---------------------------------------------------------------------------
@pytest.mark.parametrize("xdist", [False, True])
def test_the_visual_report_is_one_page_and_png_files_with_and_without_xdist(
    pytester: pytest.Pytester, checkpoints: dict[str, Path], xdist: bool
) -> None:
    use(pytester, checkpoints, "bp.pt", "nan.pt", "corrupt.pt")
    result = run(pytester, "--fa-checkpoint", "*.pt", "--fa-baseline-acc", "0.3",
                 "--fa-html", "out/fa.html", "--fa-plots", "out/png", xdist=xdist)
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # corrupt.pt could not be evaluated
    page = (pytester.path / "out" / "fa.html").read_text()
    assert all(f'href="#{name}' in page for name in ("bp", "nan", "corrupt"))
    assert page.count("<svg") >= 4 and "<script" not in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", page)  # fetches nothing
    pngs = sorted(p.name for p in (pytester.path / "out" / "png").iterdir())
    assert any(name.startswith("bp") and name.endswith("-profile.png") for name in pngs)
    result.stdout.fnmatch_lines(["*fa-checks: wrote the visual report to *fa.html"])


def test_a_run_without_a_report_flag_imports_no_matplotlib(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    use(pytester, checkpoints, "bp.pt")
    pytester.makepyfile(test_mine="""
        import sys

        def test_nothing_draws(fa_report):
            assert fa_report.d1.hidden_norms and "matplotlib" not in sys.modules
    """)
    run(pytester, "test_mine.py", "--fa-checkpoint", "bp.pt").assert_outcomes(passed=1)


def test_pytest_html_carries_each_subjects_figures_once(
    pytester: pytest.Pytester, checkpoints: dict[str, Path]
) -> None:
    pytest.importorskip("pytest_html")
    use(pytester, checkpoints, "bp.pt")
    result = run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3",
                 "--html=report.html", "--self-contained-html", xdist=True)
    result.assert_outcomes(passed=3)
    # pytest-html keeps each item's extras in its page's data, HTML-escaped
    caption = "Scale profile (D1)&lt;/figcaption&gt;"
    assert (pytester.path / "report.html").read_text().count(caption) == 1
    # without pytest-html nothing changes; with it but no subject, nothing of ours is added
    run(pytester, "--fa-checkpoint", "bp.pt", "--fa-baseline-acc", "0.3",
        "-p", "no:html").assert_outcomes(passed=3)
    pytester.makepyfile(test_mine="def test_plain():\n    pass\n")
    run(pytester, "test_mine.py", "--html=mine.html").assert_outcomes(passed=1)
    assert "figcaption" not in (pytester.path / "mine.html").read_text()
