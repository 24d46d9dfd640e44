"""A report file is a claim: ``fa-checks report`` judges it against the thresholds in force and
recomputes every derived figure; a file that chooses its thresholds, switches a diagnostic off
or stores figures that do not follow from its measurements never reads as a PASS.

Only the command line reads report files (the plugin writes them); the cache's reports, which
both faces read, are in tests/test_adversarial_cache.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hostile import entry, write_report

from fa_checks.claims import ClaimRefused, InForce, judge_entry
from fa_checks.cli.main import main
from fa_checks.report import Thresholds

#: a model that fails every diagnostic, measured honestly
EXPLODED = {"norms": (1.0, 1e3, 1e6), "grads": (1e-20, 1e-25, 1e-30), "test_acc": 0.1,
            "baseline": 0.9}


def report_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def refused(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- thresholds the file carries are never the ones it is judged by --------------------------------
@pytest.mark.parametrize("threshold_text", ['"Infinity"', "1e999"])
def test_an_infinite_threshold_in_the_file_is_refused(tmp_path, capsys, threshold_text):
    doctored = entry(**EXPLODED)
    doctored["D1"]["threshold"] = "@T@"
    doctored["D1"]["fires"] = False
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"subjects": [doctored]}).replace('"@T@"', threshold_text))
    code, out, err = report_cli(capsys, str(path))
    assert code == 2 and "PASS" not in out
    refused(err, str(path), "D1.threshold")


def test_thresholds_the_file_chose_are_replaced_by_those_in_force(tmp_path, capsys):
    # growth 1e6, g_L 1e-30 and margin -80 pp, each "within" thresholds the file chose
    chosen = Thresholds(max_growth=1e7, grad_floor=1e-31, min_margin_pp=-90)
    path = write_report(tmp_path / "r.json", entry(**EXPLODED, thresholds=chosen))
    code, out, err = report_cli(capsys, str(path))
    assert code == 1
    assert "FAIL(D1+D2+D3)" in out and "PASS" not in out
    assert "judged against the thresholds in force" in err
    assert "max_growth=1.00e+07 (recorded) -> 50 (in force)" in err
    # the user's own flags are the thresholds in force: their choice, said in the table
    code, out, _ = report_cli(capsys, str(path), "--max-growth", "1e7", "--grad-floor",
                              "1e-31", "--min-margin", "-90")
    assert code == 0 and "PASS" in out


def test_a_file_cannot_switch_d3_off(tmp_path, capsys):
    switched = entry(test_acc=0.01, baseline=None)  # "not checked", test accuracy 1%
    path = write_report(tmp_path / "r.json", switched)
    code, out, err = report_cli(capsys, str(path))
    assert code == 2 and "PASS" not in out
    refused(err, "subjects[0]", "no D3 margin", "--baseline-acc")
    code, out, _ = report_cli(capsys, str(path), "--baseline-acc", "0.5")
    assert code == 1 and "FAIL(D3)" in out
    # the user, not the file, may accept a report without D3
    code, out, _ = report_cli(capsys, str(path), "--baseline", "none")
    assert code == 0 and "D3 not checked" in out


def test_a_stored_verdict_and_flags_are_never_read(tmp_path, capsys):
    doctored = entry(**EXPLODED)
    doctored["verdict"], doctored["mode1"] = "PASS", False
    code, out, _ = report_cli(capsys, str(write_report(tmp_path / "r.json", doctored)))
    assert code == 1 and "FAIL(D1+D2+D3)" in out


# -- derived figures must follow from what they derive from ----------------------------------------
@pytest.mark.parametrize(("field", "edit"), [
    # test accuracy 10% against a baseline of 90%, stored with a margin of +50 pp
    ("D3.margin_pp", lambda e: e["D3"].update(margin_pp=50.0, fires=False)),
    # g_L 0.5 beside per-layer gradient norms of 1e-9
    ("D2.g_L", lambda e: e["D2"].update(g_L=0.5, fires=False)),
    # hidden norms 1 -> 1e6 stored with growth 1.0
    ("D1.per_block_growth", lambda e: e["D1"].update(per_block_growth=[1.0, 1.0],
                                                     max_growth=1.0, fires=False)),
    ("D1.max_growth", lambda e: e["D1"].update(max_growth=1.0, fires=False)),
    ("D3.baseline_acc", lambda e: e["D3"].update(baseline_acc=-3.0, margin_pp=310.0,
                                                 fires=False)),
    ("test_acc", lambda e: e.update(test_acc=5.0)),
    ("D2", lambda e: e["D2"].update(grad_norms=[1.0])),
])
def test_a_derived_figure_that_disagrees_is_refused(tmp_path, capsys, field, edit):
    doctored = entry(norms=(1.0, 1e3, 1e6), grads=(1e-9, 1e-9, 1e-9), test_acc=0.1,
                     baseline=0.9)
    edit(doctored)
    path = write_report(tmp_path / "r.json", entry(ident="honest"), doctored)
    code, out, err = report_cli(capsys, str(path))
    assert code == 2 and "PASS" not in out
    refused(err, str(path), "subjects[1]", field)


def test_judge_entry_recomputes_what_the_file_says(tmp_path):
    judged = judge_entry(entry(**EXPLODED), InForce(), where="here").report
    assert judged.failures == ["D1", "D2", "D3"] and judged.d3.margin_pp == -80.0
    with pytest.raises(ClaimRefused, match="here: D1.threshold"):
        doctored = entry()
        doctored["D1"]["threshold"] = float("inf")
        judge_entry(doctored, InForce(), where="here")


# -- the files themselves --------------------------------------------------------------------------
def test_a_fifo_or_huge_report_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    sparse = tmp_path / "huge.json"
    with open(sparse, "wb") as handle:
        handle.truncate(6 * 2**30)
    for path in (fifo, sparse):
        started = time.monotonic()
        code, out, err = report_cli(capsys, str(path))
        assert code == 2 and time.monotonic() - started < 5
        refused(err, str(path))


def test_strings_from_a_report_reach_the_terminal_escaped(tmp_path, capsys):
    hostile = "\x1b[2J\x1b[1;1Hall PASS\u202egnissap\u2066"
    good = entry(ident=hostile)
    error = {"id": hostile, "verdict": "ERROR", "error": f"bad {hostile}\x07"}
    code, out, err = report_cli(capsys, str(write_report(tmp_path / "r.json", good, error)))
    assert code == 2
    for text in (out, err):
        assert "\x1b" not in text and "\u202e" not in text and "\u2066" not in text
        assert "\x07" not in text
    assert "\\x1b[2J" in out and "\\u202e" in out


def test_a_report_entry_nested_beyond_reason_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text('{"subjects": [{"history": ' + "[" * 100_000 + "]" * 100_000 + "}]}")
    code, _, err = report_cli(capsys, str(path))
    assert code == 2
    refused(err, "nests deeper")


def test_a_long_subject_id_gets_a_short_plot_name(tmp_path, capsys):
    long_id = "runs/" + "deep/" * 60 + "x" * 300 + ".pt"
    path = write_report(tmp_path / "r.json", entry(ident=long_id, history=[
        {"epoch": 1, "train_loss": 1.0, "test_acc": 0.5},
        {"epoch": 2, "train_loss": 0.5, "test_acc": 0.8}]))
    code, _, _ = report_cli(capsys, str(path), "--plots", str(tmp_path / "plots"),
                            "--html", str(tmp_path / "page.html"))
    assert code == 0
    names = [p.name for p in Path(tmp_path / "plots").iterdir()]
    assert names and all(len(name) < 120 for name in names)
