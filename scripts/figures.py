"""Measure the README's figure tables, record them in docs/figures.json and write them into
README.md, so every figure the README shows comes from one run of one script.

    .venv/bin/python scripts/figures.py            # measure (about 6 minutes on 2 cores)
    .venv/bin/python scripts/figures.py --check    # measure and compare with docs/figures.json

The setting (also written into the file): MNIST-1D (10,000 samples, 80/20 split), ResMLP d=256
L=4, AdamW lr 1e-3, weight decay 0.01, batch 128, 20 epochs, eval batch 1024, CPU, one torch
thread.  With one thread on the CPU a run is deterministic on one machine; another CPU rounds
differently.  The slow tests (tests/test_figures.py) measure them again and compare within
TOLERANCE (and BP's constant-rate row within ITS_OWN_BAND), which absorb another CPU, torch or
BLAS build.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures.json"
README = ROOT / "README.md"

SETTING: dict[str, Any] = {
    "data": "mnist1d", "arch": "resmlp", "arch_options": {"d_hidden": 256, "num_blocks": 4},
    "epochs": 20, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 128, "eval_size": 1024,
    "device": "cpu", "threads": 1,
}
#: how far a re-measurement may be from the recorded figure and still agree
TOLERANCE = {"test_acc": 0.005, "baseline_acc": 0.005, "max_growth": 0.02, "g_L": 0.05}
#: BP at a constant rate ends 20 epochs still fitting its training set, where rounding moves its
#: figures far more than any other run's.  Measured on two x86 CPUs (the recording machine, and
#: an AMD EPYC without AVX-512): its g_L moved 2.2x, its growth 3.7% and its accuracy 0.15 pp,
#: while every other run's figures agreed within 0.05%.  All far from their thresholds, and its
#: verdict must still agree exactly; growth within 10%, g_L within a factor of 3.
ITS_OWN_BAND = {("constant", "BP"): {"max_growth": 0.10, "g_L_factor": 3.0}}
#: (label, method, options) of the reproduction table
RUNS = (("BP", "bp", {}), ("DFA", "dfa", {}), ("DFA + penalty 1e-2", "dfa", {"penalty": 0.01}))
DEMO_SEEDS = (0, 1)
#: the research code's two mode-2 experiments (shared/seeds), reproduced at the constant rate
DIRECTION_RUNS = ("DFA", "DFA + penalty 1e-2")
#: eval batch sizes at which D4 is measured again for the penalised run (its verdict must hold)
DIRECTION_SIZES = (256, 1024, 2000)
#: how far a re-measured per-layer cosine or rho may move (one CPU against another)
DIRECTION_TOLERANCE = 0.01
#: what the research code predicted before it ran, in its own words
PREDICTIONS = {
    "direction_quality": (
        "dfa_direction_quality_test.py (codex round 13): the penalised-DFA cosine will still be "
        "near zero (~0.01-0.05) with a healthy reference; judged at layer 2: |cos| < 0.05 poor "
        "(second failure mode confirmed), < 0.20 mediocre (partially supported), else "
        "reasonable (rejected)"),
    "perturbation_correlation": (
        "perturbation_correlation_audit.py (codex round 19): vanilla DFA deep rho ~0 (noise in "
        "the degenerate regime); penalised DFA deep rho > 0 if its cosine reflects a real local "
        "signal; judged on the mean over l1+: penalised > 0.05 and vanilla < 0.05 means the "
        "penalised signal is locally useful, both < 0.05 means neither is"),
}


def measure(cache_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every figure of the README's tables, from fresh runs in ``cache_dir``."""
    from fa_checks.cache.store import ArtifactCache
    from fa_checks.evaluation import across_seeds, evaluate_subject
    from fa_checks.output.render import across_seeds_line, verdict_table
    from fa_checks.settings import Settings
    from fa_checks.subjects import fresh_subjects
    from fa_checks.training.threads import use_threads

    use_threads(SETTING["threads"])
    cache = ArtifactCache(cache_dir)
    results: dict[str, Any] = {"reproduction": {}, "demo": {}}

    def report(method: str, options: dict[str, Any], seed: int, schedule: str,
               eval_size: int = SETTING["eval_size"]) -> Any:
        settings = Settings(schedule=schedule, lr=SETTING["lr"], batch_size=SETTING["batch_size"],
                            weight_decay=SETTING["weight_decay"],
                            eval_size=eval_size, device=SETTING["device"],
                            threads=SETTING["threads"])
        [subject] = fresh_subjects(method, [seed], arch=SETTING["arch"], data=SETTING["data"],
                                   epochs=SETTING["epochs"], method_options=options,
                                   arch_options=SETTING["arch_options"])
        log(f"measuring {subject.id} ({schedule} schedule)")
        return evaluate_subject(subject, settings, cache)

    reports: dict[str, Any] = {}
    for schedule in ("constant", "cosine"):
        rows = {}
        for label, method, options in RUNS:
            r = report(method, options, 0, schedule)
            rows[label] = {"test_acc": r.test_acc, "max_growth": r.d1.max_growth,
                           "g_L": r.d2.g_L, "baseline_acc": r.d3.baseline_acc,
                           "verdict": r.verdict, "mode1": r.mode1, "mode2": r.mode2,
                           "verdict_gated": gated_verdict(r)}
            if schedule == "constant":
                reports[label] = r
        results["reproduction"][schedule] = rows
    results["direction"] = {label: direction_figures(reports[label]) for label in DIRECTION_RUNS}
    results["direction_by_eval_size"] = {}
    for size in DIRECTION_SIZES:
        r = reports["DFA + penalty 1e-2"] if size == SETTING["eval_size"] else report(
            "dfa", {"penalty": 0.01}, 0, "constant", eval_size=size)
        assert r.d4 is not None
        results["direction_by_eval_size"][str(size)] = {
            "at_chance": r.d4.chance_layers, "share": r.d4.share, "fires": r.d4.fires,
            "mode2": r.mode2, "cosine": r.credit.cosine, "null_std": r.credit.null_std}
    demo = [report(method, {}, seed, "constant") for method in ("bp", "dfa")
            for seed in DEMO_SEEDS]
    lines = verdict_table(demo)
    for method in ("bp", "dfa"):
        group = [r for r in demo if r.subject["method"] == method]
        gate = across_seeds(method, group, group[0].d3.threshold_pp)
        lines.append(across_seeds_line(method, gate))
    results["demo"] = {"table": lines, "sentence": next(
        s for r in demo if r.subject["id"] == "dfa-seed0" for s in r.failing_sentences()
        if s.startswith("D1"))}
    return results


def gated_verdict(r: Any) -> str:
    """The verdict the run gets with D4 gated (--gate-d4): derived from the same figures."""
    if r.d4 is None:
        return r.verdict
    gated = copy.deepcopy(r)
    gated.d4.gated = True
    return gated.verdict


def direction_figures(r: Any) -> dict[str, Any]:
    """The two mode-2 experiments on one run: per layer the reference, the cosine against its
    null with the research code's band, rho against its null, and D4's judgement."""
    from fa_checks.direction import band

    credit, d4 = r.credit, r.d4
    layers = []
    for l, g in enumerate(r.d2.grad_norms):
        layers.append({
            "layer": f"h_{l}", "g_norm": g, "reference_valid": r.d2.valid[l],
            "cosine": credit.cosine[l], "band": band(credit.cosine[l]),
            "null_mean": credit.null_mean[l], "null_std": credit.null_std[l],
            "rho": credit.rho[l],
            "rho_null_mean": credit.null_rho_mean[l], "rho_null_std": credit.null_rho_std[l],
            "p_cosine": d4.p_cosine[l], "p_rho": d4.p_rho[l], "at_chance": d4.at_chance[l],
        })
    deep_rho = [v for v in credit.rho[1:] if v is not None]
    return {"layers": layers, "deep_rho": sum(deep_rho) / len(deep_rho),
            "d4": {"judged": d4.judged, "at_chance": d4.chance_layers, "share": d4.share,
                   "fires": d4.fires, "explanation": d4.explanation},
            "mode1": r.mode1, "mode2": r.mode2}


def environment() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": SETTING["threads"]}


def agree(recorded: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    """Where ``measured`` leaves ``recorded``'s tolerance (empty when the figures agree)."""
    problems = agree_direction(recorded, measured)
    for schedule, rows in recorded["reproduction"].items():
        for label, figures in rows.items():
            now = measured["reproduction"][schedule][label]
            band = ITS_OWN_BAND.get((schedule, label), {})
            for key, value in figures.items():
                got = now[key]
                if key in ("test_acc", "baseline_acc"):
                    ok = abs(got - value) <= TOLERANCE[key]
                elif key == "g_L" and "g_L_factor" in band:
                    ok = value / band["g_L_factor"] <= got <= value * band["g_L_factor"]
                elif key in band:
                    ok = abs(got - value) <= band[key] * abs(value)
                elif key in TOLERANCE:
                    ok = abs(got - value) <= TOLERANCE[key] * abs(value)
                else:
                    ok = got == value
                if not ok:
                    problems.append(f"{schedule} {label} {key}: recorded {value}, now {got}")
    return problems


def agree_direction(recorded: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    """The mode-2 figures: judgements exactly; cosines and rho within DIRECTION_TOLERANCE where
    the layer's reference is valid (where it is not, they measure noise and are not figures)."""
    problems = []
    for label, figures in recorded.get("direction", {}).items():
        now = measured["direction"][label]
        for was, got in zip(figures["layers"], now["layers"], strict=True):
            for key in ("reference_valid", "at_chance", "band"):
                if was[key] != got[key]:
                    problems.append(f"direction {label} {was['layer']} {key}: recorded "
                                    f"{was[key]}, now {got[key]}")
            if not was["reference_valid"]:
                continue  # against a reference below float resolution both are noise (D2)
            for key in ("cosine", "rho"):
                if was[key] is not None and abs(got[key] - was[key]) > DIRECTION_TOLERANCE:
                    problems.append(f"direction {label} {was['layer']} {key}: recorded "
                                    f"{was[key]}, now {got[key]}")
        for key in ("fires", "at_chance"):
            if figures["d4"][key] != now["d4"][key]:
                problems.append(f"direction {label} D4 {key}: recorded {figures['d4'][key]}, "
                                f"now {now['d4'][key]}")
    for size, figures in recorded.get("direction_by_eval_size", {}).items():
        now = measured["direction_by_eval_size"][size]
        for key in ("fires", "mode2"):
            if figures[key] != now[key]:
                problems.append(f"direction at eval size {size} {key}: recorded "
                                f"{figures[key]}, now {now[key]}")
    return problems


def direction_tables(results: dict[str, Any]) -> str:
    """The README's mode-2 block: per layer, both runs, the research code's bands beside D4."""
    def signed(x: float | None) -> str:
        return "-" if x is None else f"{x:+.3f}"

    def null(mean: float | None, std: float | None) -> str:
        return "-" if mean is None or std is None else f"{mean:+.3f} ± {std:.3f}"

    lines = ["| run | layer | ‖g_l‖ | ref | cosine | null (mean ± std) | band | rho | "
             "rho null | p(cos) | p(rho) | D4 |", "|---|---|---|---|---|---|---|---|---|---|"
             "---|---|"]
    for label in DIRECTION_RUNS:
        figures = results["direction"][label]
        for row in figures["layers"]:
            judged = row["at_chance"]
            verdict = "-" if judged is None else ("at chance" if judged else "beats chance")
            if row["layer"] == "h_0":
                verdict = "- (embedding)"
            elif not row["reference_valid"]:
                verdict = "not judged (ref below floor)"
            p_cos, p_rho = row["p_cosine"], row["p_rho"]
            lines.append(
                f"| {label} | {row['layer']} | {row['g_norm']:.1e} | "
                f"{'ok' if row['reference_valid'] else 'below'} | {signed(row['cosine'])} | "
                f"{null(row['null_mean'], row['null_std'])} | {row['band']} | "
                f"{signed(row['rho'])} | {null(row['rho_null_mean'], row['rho_null_std'])} | "
                f"{'-' if p_cos is None else f'{p_cos:.2g}'} | "
                f"{'-' if p_rho is None else f'{p_rho:.2g}'} | {verdict} |")
    return "\n".join(lines)


def predictions_block(results: dict[str, Any]) -> str:
    """The research code's pre-registered predictions beside what fa-checks measures."""
    d = results["direction"]
    pen, van = d["DFA + penalty 1e-2"], d["DFA"]
    layer2 = pen["layers"][2]
    sizes = results["direction_by_eval_size"]
    by_size = "; ".join(
        f"N={n}: at chance {', '.join(f'h_{l}' for l in f['at_chance']) or 'none'}, "
        f"{'fires' if f['fires'] else 'passes'} (null std "
        f"{min(f['null_std'][1:]):.3f}-{max(f['null_std'][1:]):.3f})" for n, f in sizes.items())
    return "\n".join([
        "| experiment | predicted (pre-registered) | measured | by the research code's rule |",
        "|---|---|---|---|",
        f"| direction quality, penalised DFA, h_2 | cosine ~0.01-0.05 | {layer2['cosine']:+.3f}"
        f" (null {layer2['null_mean']:+.3f} ± {layer2['null_std']:.3f}) | {layer2['band']}: "
        f"{_research_word(layer2['band'])} |",
        f"| perturbation correlation, deep mean (h_1..h_4) | vanilla ~0, penalised > 0 | "
        f"vanilla {van['deep_rho']:+.3f}, penalised {pen['deep_rho']:+.3f} | "
        f"{_audit_word(van['deep_rho'], pen['deep_rho'])} |",
        f"| D4, penalised DFA | (not in the research code) | at chance "
        f"{', '.join(f'h_{l}' for l in pen['d4']['at_chance'])} of h_1..h_4 "
        f"({pen['d4']['share']:.0%}) | {'mode 2' if pen['mode2'] else 'not mode 2'}; "
        f"{by_size} |",
    ])


def _research_word(band: str) -> str:
    return {"poor": "second failure mode confirmed", "mediocre": "partially supported",
            "reasonable": "rejected"}.get(band, band)


def _audit_word(vanilla: float, penalised: float) -> str:
    if abs(penalised) > 0.05 and abs(vanilla) < 0.05:
        return "penalised signal locally useful, vanilla not"
    if abs(penalised) < 0.05 and abs(vanilla) < 0.05:
        return "both ~0"
    return "neither of the audit's outcomes"


def markdown_tables(results: dict[str, Any]) -> dict[str, str]:
    """The README blocks: the reproduction table and the demo's verdict table."""
    from fa_checks.report import format_number

    rows = ["| method | constant rate: test acc | D1 growth | D2 g_L | verdict | cosine "
            "schedule: test acc | D1 growth | D2 g_L | verdict |", "|---|---|---|---|---|---|"
            "---|---|---|"]
    repro = results["reproduction"]
    frozen = {s: repro[s]["BP"]["baseline_acc"] for s in repro}
    for label, _, _ in RUNS:
        cells = [label]
        for schedule in ("constant", "cosine"):
            f = repro[schedule][label]
            verdict = f["verdict"] + (", mode 1" if f["mode1"] else "") + (
                ", mode 2" if f.get("mode2") else "")
            if f.get("verdict_gated", f["verdict"]) != f["verdict"]:
                verdict += f" ({f['verdict_gated']} with D4 gated)"
            cells += [f"{f['test_acc']:.3f}", format_number(f["max_growth"]),
                      f"{f['g_L']:.1e}", verdict]
        rows.append("| " + " | ".join(cells) + " |")
    rows.insert(3, f"| frozen blocks | {frozen['constant']:.3f} | | | (baseline) | "
                   f"{frozen['cosine']:.3f} | | | (baseline) |")
    demo = "\n".join("    " + line for line in results["demo"]["table"])
    blocks = {"reproduction": "\n".join(rows), "demo": demo,
              "sentence": results["demo"]["sentence"]}
    if "direction" in results:
        blocks["direction"] = direction_tables(results)
        blocks["predictions"] = predictions_block(results)
    return blocks


def write_readme(blocks: dict[str, str]) -> None:
    text = README.read_text(encoding="utf-8")
    for name, block in blocks.items():
        start, end = f"<!-- figures:{name} -->", f"<!-- /figures:{name} -->"
        if start not in text:
            continue
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = f"{head}{start}\n{block}\n{end}{tail}"
    README.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with docs/figures.json instead of writing it")
    parser.add_argument("--cache-dir", help="reuse this cache (default: a fresh one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as fresh:
        results = measure(Path(args.cache_dir or fresh))
    if args.check:
        problems = agree(json.loads(FIGURES.read_text())["figures"], results)
        print("\n".join(problems) or "the figures agree with docs/figures.json")
        return 1 if problems else 0
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps({"setting": SETTING, "environment": environment(),
                                   "tolerance": {**TOLERANCE,
                                                 "direction": DIRECTION_TOLERANCE},
                                   "predictions": PREDICTIONS, "figures": results},
                                  indent=2) + "\n", encoding="utf-8")
    write_readme(markdown_tables(results))
    print(f"wrote {FIGURES.relative_to(ROOT)} and the README's tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
