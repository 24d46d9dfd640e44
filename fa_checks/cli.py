"""The ``fa-checks`` command line: ``train``, ``check``, ``report`` and ``sweep``.

Exit codes: 0 when every checked subject passes, 1 when any fails, 2 for a usage or input error
(a bad checkpoint, an unknown method, a malformed ``key=value``), reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .engine import (
    EngineError,
    Settings,
    Subject,
    check_data_root,
    check_writable,
    check_writable_folder,
    checkpoint_subjects,
    copy_atomic,
    format_options,
    fresh_subjects,
    parse_options,
    parse_value,
    resolve_device,
    seed_summary,
    write_json_atomic,
)

if TYPE_CHECKING:
    from .cache import ArtifactCache
    from .protocol import Report

PROG = "fa-checks"


class UsageError(Exception):
    """A command line that cannot be run; the message is one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and lets ``main`` return 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Every error a user can cause; each carries a one-line message naming what is wrong."""
    from .anatomy import AnatomyError
    from .cache import CacheError
    from .checkpoint import CheckpointError
    from .data import DataError
    from .methods import MethodError
    from .models import ModelError

    return (EngineError, MethodError, ModelError, DataError, CheckpointError, CacheError,
            AnatomyError, OSError)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# -- shared option groups --------------------------------------------------------------------
def _add_data_options(parser: argparse.ArgumentParser, *, default: str | None = "mnist1d") -> None:
    parser.add_argument("--data", default=default, metavar="NAME",
                        help="dataset: mnist1d (default), synthetic, cifar10, cifar100, mnist")
    parser.add_argument("--data-root", metavar="DIR", help="folder holding the dataset files")
    parser.add_argument("--data-arg", action="extend", nargs="+", default=[], metavar="K=V",
                        help="dataset parameter, e.g. num_samples=2000")


def _add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="resmlp", help="resmlp (default), mlp, vit, resnet")
    parser.add_argument("--arch-arg", action="extend", nargs="+", default=[], metavar="K=V",
                        help="model keyword, e.g. d_hidden=256 num_blocks=4")
    _add_data_options(parser)
    parser.add_argument("--epochs", type=_positive_int, default=20)
    parser.add_argument("--batch-size", type=_positive_int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                        help="learning-rate schedule: cosine annealing (default) or constant")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--eval-size", type=_positive_int, default=1024,
                        help="test samples for the diagnostics (default 1024)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="show a progress line on stderr (default: when it is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def _add_check_options(parser: argparse.ArgumentParser) -> None:
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline-acc", type=_fraction, metavar="ACC",
                          help="frozen-blocks baseline test accuracy for D3, e.g. 0.496")
    baseline.add_argument("--baseline", choices=("auto", "none"), default=None,
                          help="auto (default): train and cache the frozen-blocks baseline with "
                               "the subject's arch, data, seed and epochs; none: skip D3")
    parser.add_argument("--json", metavar="FILE", help="write the reports as JSON")
    parser.add_argument("--max-growth", type=float, metavar="G", help="D1 threshold (50)")
    parser.add_argument("--grad-floor", type=float, metavar="F", help="D2 floor (1.28e-5)")
    parser.add_argument("--min-margin", type=float, metavar="PP",
                        help="D3 threshold in percentage points (2)")
    parser.add_argument("--min-cosine", type=float, metavar="C",
                        help="also gate the credit cosine (off by default)")
    parser.add_argument("--min-rho", type=float, metavar="R",
                        help="also gate the perturbation correlation (off by default)")
    parser.add_argument("--no-credit", dest="credit", action="store_false",
                        help="skip the credit metrics")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="artifact cache (default: $FA_CHECKS_CACHE or ~/.cache/fa-checks)")
    parser.add_argument("--retrain", action="store_true",
                        help="recompute cached runs, baselines and reports")
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-layer figures")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is an accuracy: give a fraction in [0, 1]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Silent-failure checks for feedback-alignment "
                                            "style training.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser("train", help="train a method and write a checkpoint",
                                description="Train one method with one seed; write a "
                                            "fa-checks/1 checkpoint.")
    train.add_argument("--method", required=True, help="bp, fa, dfa, ... or module:Class")
    train.add_argument("--method-arg", action="extend", nargs="+", default=[], metavar="K=V",
                       help="method option, e.g. penalty=0.01")
    _add_training_options(train)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-o", "--output", required=True, metavar="FILE",
                       help="where to write the checkpoint")
    train.set_defaults(handler=_cmd_train)

    check = commands.add_parser("check", help="run the protocol on checkpoints",
                                description="Run D1 (scale), D2 (reference), D3 (depth utility) "
                                            "and the credit metrics on checkpoints.")
    check.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                       help="checkpoint files or glob patterns")
    _add_check_options(check)
    check.add_argument("--eval-size", type=_positive_int, default=1024)
    check.add_argument("--trust", action="store_true",
                       help="allow checkpoints that need arbitrary unpickling (only for files "
                            "you trust)")
    check.add_argument("--device", default="auto")
    _add_data_options(check, default=None)
    check.set_defaults(handler=_cmd_check)

    report = commands.add_parser("report", help="print the verdict table of JSON reports",
                                 description="Print the verdict table (and per-layer figures) "
                                             "of JSON reports written by check --json.")
    report.add_argument("reports", nargs="+", metavar="REPORT_JSON")
    report.add_argument("--quiet", "-q", action="store_true", help="no per-layer figures")
    report.set_defaults(handler=_cmd_report)

    sweep = commands.add_parser("sweep", help="train and check a grid of methods and seeds",
                                description="Train every method x option value x seed, check "
                                            "each run, print mean and std over seeds per cell.")
    sweep.add_argument("--methods", nargs="+", required=True, metavar="METHOD")
    sweep.add_argument("--seeds", nargs="+", type=int, required=True, metavar="SEED")
    sweep.add_argument("--method-arg", action="extend", nargs="+", default=[], metavar="K=V[,V]",
                       help="method option; comma-separated values each make a cell, e.g. "
                            "penalty=0,1e-4,1e-2 (applies to the methods that take it)")
    _add_training_options(sweep)
    _add_check_options(sweep)
    sweep.add_argument("-o", "--output", required=True, metavar="DIR",
                       help="folder for the checkpoints (named by cell and seed)")
    sweep.set_defaults(handler=_cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fa-checks``; returns the exit code (0 pass, 1 fail, 2 usage or input error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
        return int(args.handler(args))
    except UsageError as exc:
        print(_one_line(exc), file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        raise


# -- helpers ---------------------------------------------------------------------------------
def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _show_progress(args: argparse.Namespace) -> bool:
    progress = getattr(args, "progress", None)  # check has no --progress: when on a terminal
    return sys.stderr.isatty() if progress is None else bool(progress)


def _thresholds(args: argparse.Namespace) -> Any:
    from .protocol import Thresholds

    given = {
        "max_growth": args.max_growth,
        "grad_floor": args.grad_floor,
        "min_margin_pp": args.min_margin,
        "min_cosine": args.min_cosine,
        "min_rho": args.min_rho,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    try:
        return dataclasses.replace(Thresholds(), **chosen)
    except ValueError as exc:
        message = str(exc)
        for field_name, option in _THRESHOLD_OPTIONS.items():
            message = message.replace(f"Thresholds.{field_name}", option)
        raise UsageError(f"{PROG}: error: {message}") from None


_THRESHOLD_OPTIONS = {"max_growth": "--max-growth", "grad_floor": "--grad-floor",
                      "min_margin_pp": "--min-margin", "min_cosine": "--min-cosine",
                      "min_rho": "--min-rho"}


def _settings(args: argparse.Namespace) -> Settings:
    """The engine's settings from whichever options the command has; the device is checked
    now, before any work."""
    values: dict[str, Any] = {"data_root": args.data_root, "device": args.device,
                              "progress": _show_progress(args)}
    if hasattr(args, "batch_size"):  # train, sweep
        values.update(batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      schedule=args.schedule, eval_size=args.eval_size)
    if hasattr(args, "baseline"):  # check, sweep
        values.update(
            eval_size=args.eval_size,
            thresholds=_thresholds(args),
            baseline_acc=args.baseline_acc,
            depth_utility=args.baseline != "none",  # default (None) is auto
            credit=args.credit,
            retrain=args.retrain,
        )
    settings = Settings(**values)
    resolve_device(settings.device, what=settings.option("device"))
    return settings


def _cache(args: argparse.Namespace) -> ArtifactCache:
    from .cache import ArtifactCache, default_cache_root

    return ArtifactCache(Path(args.cache_dir) if args.cache_dir else default_cache_root())


def passed(report: Report) -> bool:
    """Whether the protocol passed ``report`` (no diagnostic fired)."""
    flag = getattr(report, "passed", None)
    if isinstance(flag, bool):
        return flag
    return str(report.verdict).upper().startswith("PASS")


def report_entry(report: Report) -> dict[str, Any]:
    """``Report.to_dict()`` plus the subject's ``id``, ``path``, ``method`` and ``seed``."""
    subject = dict(report.subject or {})
    return {
        **report.to_dict(),
        "id": subject.get("id"),
        "path": subject.get("path"),
        "method": subject.get("method"),
        "seed": subject.get("seed"),
    }


# -- tables ----------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return format(value, spec)
    return str(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, row)) for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _percent(fraction: float | None) -> str:
    """An accuracy as the sentences write it: 0.9625 -> 96.2%."""
    from .protocol import format_number

    if fraction is None:
        return "-"
    return f"{100 * fraction:.1f}%" if math.isfinite(fraction) else format_number(fraction)


def verdict_table(reports: Sequence[Report]) -> str:
    from .protocol import format_number
    header = ["subject", "method", "seed", "test acc", "D1 growth", "D2 g_L", "D3 margin",
              "verdict"]
    rows = []
    for report in reports:
        subject = report.subject or {}
        margin = getattr(report.d3, "margin_pp", None)
        rows.append([
            subject.get("id", "?"),
            subject.get("method") or "-",
            _fmt(subject.get("seed")),
            _percent(report.test_acc),
            format_number(report.d1.max_growth),
            _fmt(report.d2.g_L, ".2e"),
            "-" if margin is None else f"{margin:+.1f} pp",
            report.verdict,
        ])
    return _table(header, rows)


def _per_layer(values: Any, l: int) -> Any:
    if isinstance(values, (list, tuple)) and 0 <= l < len(values):
        return values[l]
    return None


def layer_table(report: Report) -> str:
    """Per hidden state: ``||h_l||``, ``||g_l||``, the growth into it, and the credit figures."""
    hidden = list(report.d1.hidden_norms or [])
    grads = list(report.d2.grad_norms or [])
    growth = list(report.d1.per_block_growth or [])
    credit = _credit_columns(report.credit)
    layers = max(len(hidden), len(grads), *(len(v) for v in credit.values()), 0)
    header = ["layer", "||h_l||", "||g_l||", "growth"] + list(credit)
    rows = []
    for l in range(layers):
        row = [
            f"h_{l}",
            _fmt(_per_layer(hidden, l), ".3g"),
            _fmt(_per_layer(grads, l), ".2e"),
            _fmt(_per_layer(growth, l - 1) if l > 0 else None, ".3g"),
        ]
        row += [_fmt(_per_layer(values, l), ".3f") for values in credit.values()]
        rows.append(row)
    return _table(header, rows)


_CREDIT_COLUMNS = ("cosine", "rho", "nudging", "pooled_cosine", "null_mean", "null_std")


def _credit_columns(credit: Any) -> dict[str, list[Any]]:
    """The per-layer credit figures as columns, whatever shape the report keeps them in."""
    if credit is None:
        return {}
    if dataclasses.is_dataclass(credit):
        credit = dataclasses.asdict(credit)
    if isinstance(credit, Mapping):
        return {k: list(credit[k]) for k in _CREDIT_COLUMNS
                if isinstance(credit.get(k), (list, tuple))}
    if isinstance(credit, (list, tuple)):  # one record per layer
        rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r)
                for r in credit]
        return {k: [r.get(k) for r in rows] for k in _CREDIT_COLUMNS
                if any(k in r for r in rows)}
    return {}


def explanations(report: Report) -> list[str]:
    """The sentences of the diagnostics that fired."""
    out = []
    for name in ("d1", "d2", "d3"):
        result = getattr(report, name)
        if getattr(result, "fires", False):
            out.append(f"{name.upper()}: {result.explanation}")
    return out


def print_reports(reports: Sequence[Report], *, quiet: bool = False) -> None:
    if not reports:
        return
    print(verdict_table(reports))
    for report in reports:
        lines = explanations(report)
        if quiet and not lines:
            continue
        print()
        print(f"{(report.subject or {}).get('id', '?')}: {report.verdict}")
        for line in lines:
            print(f"  {line}")
        if not quiet:
            print(_indent(layer_table(report)))


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in text.splitlines())


# -- commands --------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from .engine import train_fresh

    # every name and option is checked before training, and so is the output path
    (subject,) = fresh_subjects(
        args.method, [args.seed], arch=args.arch, data=args.data, epochs=args.epochs,
        method_options=parse_options(args.method_arg, what="--method-arg"),
        arch_options=parse_options(args.arch_arg, what="--arch-arg"),
        data_options=parse_options(args.data_arg, what="--data-arg"),
    )
    check_writable(args.output, what="-o")
    settings = _settings(args)
    check_data_root(subject.data, settings)
    run = train_fresh(subject, settings, checkpoint=args.output, eval_size=args.eval_size)
    note = ""
    if run.diverged:
        note = f" (diverged in epoch {run.history[-1]['epoch']}: the loss is not finite)"
    print(f"wrote {args.output}: {run.config['method']} on {args.arch}/{args.data}, seed "
          f"{run.seed}, {run.epochs} epochs, test acc {run.test_acc:.4f}{note}")
    return 0


def _evaluate_all(
    subjects: Sequence[Subject], settings: Settings, cache: ArtifactCache,
    *, log: Callable[[str], None] | None,
) -> tuple[list[Report], list[str]]:
    """Every subject's report; input errors are collected as one line each, not raised."""
    from .engine import evaluate_subject

    reports, errors = [], []
    user_errors = _user_errors()
    for subject in subjects:
        try:
            reports.append(evaluate_subject(subject, settings, cache, log=log))
        except user_errors as exc:
            errors.append(f"{PROG}: error: {_one_line(exc)}")
    return reports, errors


def _cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    data_options = parse_options(args.data_arg, what="--data-arg")
    subjects = checkpoint_subjects(args.checkpoints, what="checkpoint")
    if args.json:
        check_writable(args.json, what="--json")
    if args.data or data_options:  # for checkpoints that record no data spec
        subjects = [dataclasses.replace(s, data=args.data or s.data, data_options=data_options)
                    for s in subjects]
    reports, errors = _evaluate_all(subjects, settings, _cache(args),
                                    log=None if args.quiet else _stderr)
    print_reports(reports, quiet=args.quiet)
    if args.json:  # also when every file failed, so no earlier run's file is left to be read
        payload: dict[str, Any] = {"subjects": [report_entry(r) for r in reports]}
        if errors:
            payload["errors"] = errors
        write_json_atomic(args.json, payload)
    for line in errors:
        _stderr(line)
    if errors:
        return 2
    return 0 if all(passed(r) for r in reports) else 1


def load_reports(paths: Sequence[str]) -> list[Report]:
    """Reports from JSON files holding ``{"subjects": [...]}`` or a single report."""
    from .protocol import Report

    reports = []
    for name in paths:
        path = Path(name)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EngineError(f"{path}: no such report file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EngineError(f"{path}: not a JSON report ({exc})") from None
        entries = payload.get("subjects") if isinstance(payload, dict) else None
        if entries is None:
            entries = [payload]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise EngineError(f"{path}: expected {{\"subjects\": [report, ...]}}")
        for entry in entries:
            try:
                report = Report.from_dict(entry)
            except (KeyError, TypeError, ValueError) as exc:
                raise EngineError(f"{path}: a subject is not a report ({exc})") from None
            subject = dict(report.subject or {})
            for key in ("id", "path", "method", "seed"):
                if entry.get(key) is not None:
                    subject.setdefault(key, entry[key])
            subject.setdefault("id", subject.get("path") or str(path))
            report.subject = subject
            reports.append(report)
    return reports


def _cmd_report(args: argparse.Namespace) -> int:
    reports = load_reports(args.reports)
    print_reports(reports, quiet=args.quiet)
    summaries = _seed_summaries(reports)
    if summaries:
        print()
        print(summaries)
    return 0 if all(passed(r) for r in reports) else 1


def _seed_summaries(reports: Sequence[Report]) -> str:
    """Per method with two or more seeds and a D3 margin: the across-seed lower bound."""
    groups: dict[str, list[Report]] = {}
    for report in reports:
        if getattr(report.d3, "margin_pp", None) is None:
            continue
        groups.setdefault(str((report.subject or {}).get("method")), []).append(report)
    lines = []
    for group in groups.values():
        if len(group) >= 2:
            threshold = getattr(group[0].d3, "threshold_pp", None)
            summary = seed_summary(group, min_margin_pp=2.0 if threshold is None else threshold)
            lines.append(("FAIL " if summary.fires else "PASS ") + summary.explanation)
    return "\n".join(lines)


# -- sweep -----------------------------------------------------------------------------------
def sweep_cells(
    methods: Sequence[str], pairs: Sequence[str]
) -> list[tuple[str, dict[str, Any]]]:
    """``(method, options)`` per cell: every combination of the comma-separated values, each
    option applied to the methods that take it."""
    from .methods import MethodError, get_method, method_class
    from .methods.base import method_takes_option

    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        if not sep or not key.strip():
            raise EngineError(f"--method-arg {pair!r} is not key=value[,value...]")
        key = key.strip()
        if key in grid:
            raise EngineError(f"--method-arg gives {key!r} twice; list its values once, "
                              "separated by commas")
        grid[key] = [parse_value(v) for v in values.split(",")]

    cells: list[tuple[str, dict[str, Any]]] = []
    used: set[str] = set()
    for method in methods:
        taken = []
        for key, values in grid.items():
            if not method_takes_option(method_class(method), key):
                continue
            try:
                get_method(method, **{key: values[0]})
            except MethodError:
                continue
            taken.append(key)
        used.update(taken)
        for combo in itertools.product(*(grid[k] for k in taken)):
            cells.append((method, dict(zip(taken, combo, strict=True))))
    unused = sorted(set(grid) - used)
    if unused:
        raise EngineError(f"--method-arg {', '.join(unused)}: none of the methods "
                          f"{', '.join(methods)} takes it")
    return cells


def _mean_std(values: Sequence[float | None]) -> str:
    numbers = [float(v) for v in values if v is not None]
    if not numbers:
        return "-"
    mean = math.fsum(numbers) / len(numbers)
    if len(numbers) < 2:
        return f"{mean:.4g}"
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1))
    return f"{mean:.4g} ± {std:.2g}"


def sweep_table(cells: Sequence[tuple[str, Sequence[Report]]]) -> str:
    header = ["cell", "n", "test acc", "D1 growth", "D2 g_L", "D3 margin (pp)", "D3 bound (pp)",
              "verdicts"]
    rows = []
    for name, reports in cells:
        margins = [getattr(r.d3, "margin_pp", None) for r in reports]
        bound = "-"
        if len(reports) >= 2 and all(m is not None for m in margins):
            threshold = getattr(reports[0].d3, "threshold_pp", None)
            summary = seed_summary(reports, min_margin_pp=2.0 if threshold is None else threshold)
            bound = f"{summary.lower_bound_pp:+.1f}" + (" FAIL" if summary.fires else "")
        counts: dict[str, int] = {}
        for report in reports:
            counts[report.verdict] = counts.get(report.verdict, 0) + 1
        rows.append([
            name,
            str(len(reports)),
            _mean_std([r.test_acc for r in reports]),
            _mean_std([r.d1.max_growth for r in reports]),
            _mean_std([r.d2.g_L for r in reports]),
            _mean_std(margins),
            bound,
            ", ".join(f"{v} x{n}" for v, n in sorted(counts.items())),
        ])
    return _table(header, rows)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .engine import evaluate_subject, train_subject

    arch_options = parse_options(args.arch_arg, what="--arch-arg")
    data_options = parse_options(args.data_arg, what="--data-arg")
    cells = sweep_cells(args.methods, args.method_arg)
    # validate every cell, the device and the outputs before training any of them
    plan = [
        (method, options, fresh_subjects(method, args.seeds, arch=args.arch, data=args.data,
                                         epochs=args.epochs, method_options=options,
                                         arch_options=arch_options, data_options=data_options))
        for method, options in cells
    ]
    settings = _settings(args)
    check_data_root(args.data, settings)
    out_dir = check_writable_folder(args.output, what="-o")
    if args.json:
        check_writable(args.json, what="--json")
    cache = _cache(args)
    log = None if args.quiet else _stderr
    results: list[tuple[str, list[Report]]] = []
    everything: list[Report] = []
    for method, options, subjects in plan:
        name = "-".join([method, format_options(options)]) if options else method
        reports = []
        for subject in subjects:
            run_path = train_subject(subject, settings, cache, log=log)
            target = out_dir / f"{_file_name(subject.id)}.pt"
            copy_atomic(run_path, target)
            report = evaluate_subject(subject, settings, cache, log=log)
            report.subject = {**(report.subject or {}), "path": str(target)}
            reports.append(report)
        results.append((name, reports))
        everything.extend(reports)
    print(sweep_table(results))
    if not args.quiet:
        print()
        print_reports(everything, quiet=True)
    if args.json:
        write_json_atomic(args.json, {"subjects": [report_entry(r) for r in everything]})
    # like check: 0 when every run passes, 1 when any fails
    return 0 if all(passed(r) for r in everything) else 1


def _file_name(text: str) -> str:
    """A subject id as a file name (a user method's ``module:Class`` has a colon)."""
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
