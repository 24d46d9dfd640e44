"""The one renderer: the verdict table every face prints, the per-layer table, the lines."""

from __future__ import annotations

import math

from fa_checks.diagnostics.protocol import gate_across_seeds
from fa_checks.output.render import across_seeds_line, gated_line, layer_table, verdict_table
from fa_checks.report import (
    CreditMetrics,
    DepthUtility,
    ReferenceValidity,
    Report,
    ScaleStability,
    error_entry,
)


def report(name: str, growth: float = 1.3, g_last: float = 3e-3, margin: float | None = 4.0,
           hidden_last: float = 2.0) -> Report:
    fires = {"D1": not growth <= 50, "D2": not g_last >= 1.28e-5}
    return Report(
        test_acc=0.8,
        d1=ScaleStability(growth, [growth], [1.0, hidden_last], 50.0, fires["D1"], "d1", 0),
        d2=ReferenceValidity(g_last, [1.0, g_last], 1.28e-5, fires["D2"], "d2"),
        d3=DepthUtility(margin, None if margin is None else 0.76, 2.0,
                        None if margin is None else margin < 2.0, "d3"),
        subject={"id": name},
    )


def test_one_aligned_row_per_subject_with_the_verdict_last() -> None:
    lines = verdict_table([report("run.pt"), report("dfa-seed3", 8433.0, 3e-9, -25.0),
                           error_entry({"id": "bad.pt"}, "bad.pt: not a checkpoint")])
    assert lines[0].split() == ["subject", "accuracy", "D1", "growth", "D2", "|g_L|", "D3",
                                "margin", "verdict"]
    assert lines[1].startswith("run.pt") and lines[1].endswith("PASS")
    assert "8433x FAIL" in lines[2] and "3.00e-09 FAIL" in lines[2] and "-25.0pp FAIL" in lines[2]
    assert lines[2].endswith("FAIL(D1+D2+D3)  [mode 1]")
    assert lines[3].endswith("ERROR: bad.pt: not a checkpoint")
    verdict_column = lines[0].index("verdict")
    assert all(line.index(word) == verdict_column
               for line, word in zip(lines[1:], ("PASS", "FAIL(", "ERROR"), strict=True))


def test_a_diverged_row_says_so_once_and_is_not_mode_1() -> None:
    diverged = report("x.pt", math.nan, math.nan, 4.0, hidden_last=math.nan)
    diverged.d3 = DepthUtility(4.0, 0.76, 2.0, True, "diverged", diverged=True)
    [_, row] = verdict_table([diverged])
    assert row.endswith("FAIL(D1+D2+D3)  [diverged]") and "mode 1" not in row
    assert "NaN FAIL" in row and "nan" not in row


def test_the_table_says_what_was_not_checked_or_not_gated() -> None:
    [_, skipped] = verdict_table([report("run.pt", margin=None)])
    assert skipped.endswith("PASS (D3 not checked)") and "- skip" in skipped
    [_, ungated] = verdict_table([report("run.pt", margin=-5.0)], gated=set())
    assert ungated.endswith("FAIL(D3) (not gated in this run)")
    [_, gated] = verdict_table([report("run.pt", margin=-5.0)], gated={"D1", "D2", "D3"})
    assert gated.endswith("FAIL(D3)")
    assert gated_line(None) is None and "none of these" in gated_line(set())
    assert gated_line({"D3", "D1"}) == "gated in this run: D1, D3"


def test_the_across_seeds_line_names_the_method_once() -> None:
    line = across_seeds_line("dfa", gate_across_seeds([-25.0, -24.0], method="dfa"))
    assert line.startswith("across seeds dfa: FAIL: mean D3 margin over 2 seeds is -24.5 pp")
    assert line.count("dfa") == 1
    assert across_seeds_line("bp", None, "bp-seed1 was not evaluated") == (
        "across seeds bp: ERROR: bp-seed1 was not evaluated")


def test_the_layer_table_has_a_row_per_hidden_state_and_the_credit_columns() -> None:
    r = report("run.pt")
    r.credit = CreditMetrics(cosine=[0.5, None], pooled_cosine=[0.4, 0.3], rho=[0.2, 0.1],
                             nudging=[-0.01, -0.02])
    lines = layer_table(r)
    assert lines[0].split() == ["layer", "||h_l||", "||g_l||", "ref", "growth", "cosine",
                                "pooled_cosine", "rho", "nudging"]
    assert lines[1].split()[:5] == ["h_0", "1", "1.00e+00", "ok", "-"]
    assert lines[2].split() == ["h_1", "2", "3.00e-03", "ok", "1.3", "-", "0.300", "0.100",
                                "-0.020"]


def test_the_layer_table_says_where_the_reference_holds_and_what_d4_found() -> None:
    from fa_checks.direction import judge_direction
    from fa_checks.output.render import REFERENCE_NOTE, subject_lines

    r = report("pen.pt", g_last=3e-3)
    r.d2 = ReferenceValidity(3e-3, [1.0, 1e-7, 3e-3], 1.28e-5, False, "d2")
    r.d1 = ScaleStability(1.3, [1.3, 1.2], [1.0, 1.3, 1.5], 50.0, False, "d1", 0)
    r.credit = CreditMetrics(cosine=[0.5, 0.4, 0.01], pooled_cosine=[0.4, 0.3, 0.0],
                             rho=[0.2, 0.3, 0.0], nudging=[-0.01, -0.02, 0.0])
    r.d4 = judge_direction(cosine=r.credit.cosine, rho=r.credit.rho, cosine_null=None,
                           rho_null=None, draws=0, valid=r.d2.valid)
    assert r.d2.valid == [True, False, True]
    lines = layer_table(r)
    assert lines[0].split()[-1] == "D4" and "ref" in lines[0].split()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["h_1"][3] == "below" and rows["h_1"][-1] == "-"  # not judged: noise
    assert rows["h_2"][3] == "ok" and rows["h_2"][-1] == "chance"  # 0.01 < the 0.05 floor
    # one judged block, at chance: D4 fires, D1 and D2 pass: mode 2, tagged with its sentence
    assert r.mode2 and r.d4.fires and r.verdict == "PASS"
    said = subject_lines(r)
    assert said[0] == "pen.pt: PASS  [mode 2]"
    assert any(line.strip().startswith("mode 2: the scale is contained") for line in said)
    assert said[-1].strip() == REFERENCE_NOTE
    r.d4.gated = True
    assert r.verdict == "FAIL(D4)" and verdict_table([r])[1].endswith("FAIL(D4)  [mode 2]")
