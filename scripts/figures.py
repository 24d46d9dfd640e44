"""Measure the README's figure tables, record them in docs/figures.json and write them into
README.md, so every figure the README shows comes from one run of one script.

    .venv/bin/python scripts/figures.py            # measure (about 3 minutes on 2 cores)
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

    def report(method: str, options: dict[str, Any], seed: int, schedule: str) -> Any:
        settings = Settings(schedule=schedule, lr=SETTING["lr"], batch_size=SETTING["batch_size"],
                            weight_decay=SETTING["weight_decay"],
                            eval_size=SETTING["eval_size"], device=SETTING["device"],
                            threads=SETTING["threads"])
        [subject] = fresh_subjects(method, [seed], arch=SETTING["arch"], data=SETTING["data"],
                                   epochs=SETTING["epochs"], method_options=options,
                                   arch_options=SETTING["arch_options"])
        log(f"measuring {subject.id} ({schedule} schedule)")
        return evaluate_subject(subject, settings, cache)

    for schedule in ("constant", "cosine"):
        rows = {}
        for label, method, options in RUNS:
            r = report(method, options, 0, schedule)
            rows[label] = {"test_acc": r.test_acc, "max_growth": r.d1.max_growth,
                           "g_L": r.d2.g_L, "baseline_acc": r.d3.baseline_acc,
                           "verdict": r.verdict, "mode1": r.mode1}
        results["reproduction"][schedule] = rows
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


def environment() -> dict[str, Any]:
    import torch

    return {"torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "threads": SETTING["threads"]}


def agree(recorded: dict[str, Any], measured: dict[str, Any]) -> list[str]:
    """Where ``measured`` leaves ``recorded``'s tolerance (empty when the figures agree)."""
    problems = []
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
            verdict = f["verdict"] + (", mode 1" if f["mode1"] else "")
            cells += [f"{f['test_acc']:.3f}", format_number(f["max_growth"]),
                      f"{f['g_L']:.1e}", verdict]
        rows.append("| " + " | ".join(cells) + " |")
    rows.insert(3, f"| frozen blocks | {frozen['constant']:.3f} | | | (baseline) | "
                   f"{frozen['cosine']:.3f} | | | (baseline) |")
    demo = "\n".join("    " + line for line in results["demo"]["table"])
    return {"reproduction": "\n".join(rows), "demo": demo,
            "sentence": results["demo"]["sentence"]}


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
                                   "tolerance": TOLERANCE, "figures": results},
                                  indent=2) + "\n", encoding="utf-8")
    write_readme(markdown_tables(results))
    print(f"wrote {FIGURES.relative_to(ROOT)} and the README's tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
