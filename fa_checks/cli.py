"""The ``fa-checks`` command line: ``train``, ``check``, ``report``, ``sweep`` and ``cache``.

Exit codes, the contract CI reads: 0 when every subject passes, 1 when a diagnostic failed,
2 for a usage or input error (a bad flag, a bad or missing file, a dataset that is not there,
a full disk, an exception raised in the user's own rule), reported as one line on stderr naming
the flag, file or line of the user's code.  A fault of fa-checks
itself exits 3 with its traceback, never 1.  Every error is turned into its exit code in one
place, :func:`main`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from .cluster.driver import TaskFault
from .errors import as_user_error, one_line
from .evaluation import Failure, Outcome, across_seeds, outcome, seed_groups
from .files import check_writable, check_writable_folder, copy_atomic, write_json_atomic
from .flags import EVALUATION, SHARED, TRAINING, Flag, add_to_argparse, build_settings
from .output.render import across_seeds_line, subject_lines, verdict_table
from .report import AcrossSeeds, Report, is_error_entry
from .settings import DEFAULT_ARCH, DEFAULT_DATA, DEFAULT_EPOCHS, Settings
from .subjects import Subject, check_data_root, checkpoint_subjects, fresh_subjects
from .text import printable
from .training.threads import use_threads
from .values import counted, parse_key_values, seed

PROG = "fa-checks"
EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class UsageError(Exception):
    """A command line that cannot be run; the message is one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and lets ``main`` return 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _pick(flags: dict[str, Flag], *names: str) -> list[Flag]:
    return [flags[name] for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Silent-failure checks for feedback-alignment "
                                            "style training.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser("train", help="train a method and write a checkpoint",
                                description="Train one method with one seed and write a "
                                            "fa-checks/1 checkpoint (kept in the cache too, "
                                            "so pytest --fa-method reuses it).")
    train.add_argument("--method", required=True, type=_text,
                       help="bp, fa, dfa, ... or module:Class")
    train.add_argument("--seed", type=_argparse(seed), default=0, metavar="N",
                       help="seed of the run (default 0)")
    add_to_argparse(train, [f for f in TRAINING.values() if f.name != "seeds"])
    add_to_argparse(train, _pick(EVALUATION, "device", "threads", "cache-dir", "retrain"))
    _add_progress(train)
    train.add_argument("-o", "--output", required=True, metavar="FILE",
                       help="where to write the checkpoint")
    train.set_defaults(handler=_cmd_train)

    check = commands.add_parser("check", help="run the protocol on checkpoints",
                                description="Run D1 (scale), D2 (reference), D3 (depth utility) "
                                            "and the credit metrics on checkpoints.")
    check.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                       help="checkpoint files or glob patterns, checked in the order given")
    add_to_argparse(check, EVALUATION.values())
    add_to_argparse(check, _pick(TRAINING, "data", "data-arg", "data-root", "epochs",
                                 "schedule", "lr", "batch-size", "weight-decay"))
    _add_check_outputs(check)
    check.set_defaults(handler=_cmd_check)

    report = commands.add_parser("report", help="print the verdicts of saved JSON reports",
                                 description="Print the verdict table (and per-layer figures) "
                                             "of JSON reports written by check --json or "
                                             "pytest --fa-report; verdicts are recomputed "
                                             "from the figures.")
    report.add_argument("reports", nargs="+", metavar="REPORT_JSON")
    # a report is judged against these (defaults when not given), never against its own
    add_to_argparse(report, _pick(EVALUATION, "max-growth", "grad-floor", "min-margin",
                                  "min-cosine", "min-rho", "baseline-acc"))
    report.add_argument("--baseline", choices=("auto", "none"), default=None,
                        help="none: accept reports made without D3 (the table says so)")
    report.add_argument("--html", metavar="FILE",
                        help="write the visual report: one self-contained HTML page")
    report.add_argument("--plots", metavar="DIR",
                        help="write the visual report's figures as PNG files")
    report.add_argument("--quiet", "-q", action="store_true", help="no per-layer figures")
    report.set_defaults(handler=_cmd_report)

    sweep = commands.add_parser("sweep", help="train and check a grid of methods and seeds",
                                description="Train every method x option value x seed, check "
                                            "each run, print mean and std over seeds per cell.")
    sweep.add_argument("--methods", nargs="+", required=True, metavar="METHOD", type=_text)
    add_to_argparse(sweep, [f for f in TRAINING.values() if f.name != "method-arg"])
    sweep.add_argument("--method-arg", action="extend", nargs="+", default=[], metavar="K=V[,V]",
                       help="a method option; comma-separated values each make a cell, e.g. "
                            "penalty=0,1e-4,1e-2 (applies to the methods that take it)")
    add_to_argparse(sweep, EVALUATION.values())
    _add_progress(sweep)
    _add_check_outputs(sweep)
    sweep.add_argument("-o", "--output", required=True, metavar="DIR",
                       help="folder for the checkpoints (named by cell and seed)")
    sweep.set_defaults(handler=_cmd_sweep)

    cache = commands.add_parser("cache", help="show or clear the cache of runs and reports",
                                description="The artifact cache fa-checks and pytest share: "
                                            "trained runs, baselines, reports.")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: where it is and what it holds; clear: remove artifacts")
    cache.add_argument("--kind", choices=("run", "baseline", "report"),
                       help="clear only this kind of artifact")
    add_to_argparse(cache, _pick(EVALUATION, "cache-dir"))
    cache.set_defaults(handler=_cmd_cache)
    return parser


def _add_progress(parser: argparse.ArgumentParser) -> None:
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=True,
                          help="a line per epoch on stderr, redrawn on a terminal (default)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="no progress lines")


def _add_check_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", choices=("auto", "none"), default=None,
                        help="auto (default): train and cache the frozen-blocks baseline with "
                             "the subject's own arch, data, seed, epochs and optimiser; none: "
                             "skip D3 (the table says so)")
    parser.add_argument("--no-credit", dest="credit", action="store_false",
                        help="skip the credit metrics")
    _add_report_outputs(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-layer figures")


def _add_report_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write every subject's report as JSON")
    parser.add_argument("--html", metavar="FILE",
                        help="write the visual report: one self-contained HTML page")
    parser.add_argument("--plots", metavar="DIR",
                        help="write the visual report's figures as PNG files")


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("it must not be empty")
    return text.strip()


def _argparse(parse: Any) -> Any:
    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: {exc}") from None

    typed.__name__ = parse.__name__
    return typed


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fa-checks``; returns the exit code (see the module docstring)."""
    try:
        args = build_parser().parse_args(None if argv is None else list(argv))
        return int(args.handler(args))
    except UsageError as exc:
        print(printable(one_line(exc)), file=sys.stderr)
        return EXIT_INPUT
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        error = as_user_error(exc)
        if error is not None:
            print(f"{PROG}: error: {printable(one_line(error))}", file=sys.stderr)
            return EXIT_INPUT
        print(f"{PROG}: internal error (a fault of fa-checks, not of your method or input; "
              f"please report it): {type(exc).__name__}: {printable(one_line(exc))}",
              file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


# -- helpers ---------------------------------------------------------------------------------
def _stderr(message: str) -> None:
    """A line on stderr; what it quotes of a file or path is escaped (``printable``)."""
    print(printable(message), file=sys.stderr, flush=True)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The shared flags the command has, by name, with the values given (None: not given)."""
    return {name: getattr(args, flag.dest) for name, flag in SHARED.items()
            if hasattr(args, flag.dest)}


def _settings(args: argparse.Namespace) -> Settings:
    """The settings from whichever shared flags the command has; the device is checked now,
    before any work."""
    given = given_flags(args)
    extra: dict[str, Any] = {"progress": bool(getattr(args, "progress", False))}
    if hasattr(args, "baseline"):
        if args.baseline is not None and args.baseline_acc is not None:
            raise UsageError(f"{PROG}: error: argument --baseline: not allowed with argument "
                             "--baseline-acc (a known accuracy is the baseline)")
        extra.update(depth_utility=args.baseline != "none", credit=args.credit)
    settings = build_settings(given, flag_prefix="--", **extra)
    if settings.ray_address is None:
        settings.torch_device()
    else:  # the workers resolve their own devices; Ray, the address and resources: now
        from .cluster import check_settings

        check_settings(settings)
    use_threads(settings.threads)
    return settings


def _evaluate(subjects: Sequence[Subject], settings: Settings, cache: Any,
              log: Any) -> list[Outcome]:
    """Each subject's outcome, in order: one after the other in this process, or all in one
    call as tasks on the Ray cluster ``--ray`` names."""
    if settings.ray_address is None:
        return [outcome(subject, settings, cache, log=log) for subject in subjects]
    from .cluster import evaluate_on_ray

    done = evaluate_on_ray(subjects, settings, cache, log=log)
    return [done[subject.id] for subject in subjects]


def _exit_code(outcomes: Sequence[Outcome]) -> int:
    if any(isinstance(o, TaskFault) for o in outcomes):
        return EXIT_INTERNAL
    if any(isinstance(o, Failure) for o in outcomes):
        return EXIT_INPUT
    return EXIT_PASS if all(o.passed for o in outcomes) else EXIT_FAIL  # type: ignore[union-attr]


def print_outcomes(outcomes: Sequence[Outcome], *, quiet: bool = False) -> None:
    """The verdict table, then each subject's sentences and per-layer figures (nothing when no
    subject could be evaluated: the errors, on stderr, say it all)."""
    if not any(isinstance(o, Report) for o in outcomes):
        return
    rows = [o.to_dict() if isinstance(o, Failure) else o for o in outcomes]
    print("\n".join(verdict_table(rows)))
    for item in outcomes:
        if isinstance(item, Report) and not (quiet and item.passed):
            print()
            print("\n".join(subject_lines(item, layers=not quiet)))


def _report_errors(outcomes: Sequence[Outcome]) -> None:
    for item in outcomes:
        if isinstance(item, TaskFault):  # raised on a Ray worker: as main() says it here
            _stderr(f"{PROG}: internal error (a fault of fa-checks, not of your method or "
                    f"input; please report it): {item.message}")
            _stderr(item.traceback)
        elif isinstance(item, Failure):
            _stderr(f"{PROG}: error: {item.message}")


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output path can be written: refused before any work."""
    for flag in ("json", "html"):
        if getattr(args, flag, None):
            check_writable(getattr(args, flag), what=f"--{flag}")
    if getattr(args, "plots", None):
        check_writable_folder(args.plots, what="--plots")


def _write_outputs(args: argparse.Namespace, entries: list[dict[str, Any]],
                   across: Sequence[dict[str, Any]] = ()) -> None:
    """The JSON report (also when every subject failed, so no earlier run's file is left to
    be read) and the visual report, each when asked for."""
    if getattr(args, "json", None):
        write_json_atomic(args.json, {"subjects": entries})
    if args.html or args.plots:
        from .output.render import write_visual_report

        for path in write_visual_report(entries, across, html=args.html, plots=args.plots):
            if path.suffix == ".html":
                _stderr(f"{PROG}: wrote the visual report to {path}")
        if args.plots:
            _stderr(f"{PROG}: wrote the figures to {args.plots}")


def _across_seeds(reports: Sequence[Report]) -> list[AcrossSeeds]:
    """The across-seeds gate of every method with two or more seeds among ``reports``."""
    return [across_seeds(label, group, group[0].d3.threshold_pp)
            for label, group in seed_groups(reports).items()]


# -- commands --------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from .training.runs import train_subject

    # every name and option is checked before training, and so is the output path
    (subject,) = fresh_subjects(
        args.method, [args.seed], arch=args.arch or DEFAULT_ARCH,
        data=args.data or DEFAULT_DATA, epochs=args.epochs or DEFAULT_EPOCHS,
        method_options=parse_key_values(args.method_arg or [], what="--method-arg"),
        arch_options=parse_key_values(args.arch_arg or [], what="--arch-arg"),
        data_options=parse_key_values(args.data_arg or [], what="--data-arg"),
    )
    check_writable(args.output, what="-o")
    settings = _settings(args)
    check_data_root(subject.data, settings.data_root)
    path = train_subject(subject, settings, settings.open_cache(_stderr), log=_stderr)
    from .checkpoint import load_checkpoint

    # read before it is copied: a cached file that cannot be read never reaches -o
    saved = load_checkpoint(path)
    copy_atomic(path, args.output)
    last = (saved.history or [{}])[-1]
    note = (f" (diverged in epoch {last.get('epoch')}: the loss is not finite)"
            if last.get("diverged") else "")
    epochs = counted(saved.epochs, "epoch")
    print(printable(f"wrote {args.output}: {saved.method} on {saved.arch}/{subject.data}, "
                    f"seed {saved.seed}, {epochs}, test acc {saved.test_acc:.4f}{note}"))
    return EXIT_PASS


def _cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    data_options = parse_key_values(args.data_arg or [], what="--data-arg")
    subjects = checkpoint_subjects(args.checkpoints, what="checkpoint")
    _check_outputs(args)
    fill: dict[str, Any] = {}
    if args.data or data_options:  # for checkpoints that record no data spec
        fill.update(data=args.data or DEFAULT_DATA, data_options=data_options)
    if args.epochs:
        fill["epochs"] = args.epochs
    cache = settings.open_cache(_stderr)
    log = None if args.quiet else _stderr
    outcomes = _evaluate([_filled(s, fill) for s in subjects], settings, cache, log)
    print_outcomes(outcomes, quiet=args.quiet)
    _write_outputs(args, [o.to_dict() for o in outcomes])
    _report_errors(outcomes)
    return _exit_code(outcomes)


def _filled(subject: Subject, fill: dict[str, Any]) -> Subject:
    from dataclasses import replace

    return replace(subject, **fill) if fill else subject


def load_report_files(paths: Sequence[str],
                      in_force: Any = None) -> list[Report | dict[str, Any]]:
    """Reports (and error entries) from JSON files holding ``{"subjects": [...]}`` or one
    report; each is a claim judged against ``in_force`` (:class:`fa_checks.claims.InForce`,
    default: the default thresholds), never against the thresholds it carries."""
    from .claims import InForce, read_report_files

    items, notes = read_report_files(paths, in_force or InForce())
    for note in notes:
        _stderr(f"{PROG}: {note}")
    return items


def _cmd_report(args: argparse.Namespace) -> int:
    from .claims import InForce

    _check_outputs(args)
    if args.baseline is not None and args.baseline_acc is not None:
        raise UsageError(f"{PROG}: error: argument --baseline: not allowed with argument "
                         "--baseline-acc (a known accuracy is the baseline)")
    settings = build_settings(given_flags(args), flag_prefix="--")
    items = load_report_files(args.reports, InForce(
        settings.thresholds, depth_utility=args.baseline != "none",
        baseline_acc=settings.baseline_acc))
    print("\n".join(verdict_table(items)))
    reports = [item for item in items if isinstance(item, Report)]
    for report in reports:
        if not (args.quiet and report.passed):
            print()
            print("\n".join(subject_lines(report, layers=not args.quiet)))
    gates = _across_seeds(reports)
    if gates:
        print()
        print("\n".join(across_seeds_line(gate.label, gate) for gate in gates))
    _write_outputs(args, [i.to_dict() if isinstance(i, Report) else i for i in items],
                   [gate.to_dict() for gate in gates])
    if any(is_error_entry(item) for item in items if isinstance(item, dict)):
        return EXIT_INPUT
    return EXIT_PASS if all(r.passed for r in reports) else EXIT_FAIL


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import cell_name, sweep_cells, sweep_table

    arch_options = parse_key_values(args.arch_arg or [], what="--arch-arg")
    data_options = parse_key_values(args.data_arg or [], what="--data-arg")
    cells = sweep_cells(args.methods, args.method_arg)
    # every cell, the device and the outputs are checked before anything is trained
    plan = [
        (cell_name(method, options),
         fresh_subjects(method, args.seeds or [0], arch=args.arch or DEFAULT_ARCH,
                        data=args.data or DEFAULT_DATA, epochs=args.epochs or DEFAULT_EPOCHS,
                        method_options=options, arch_options=arch_options,
                        data_options=data_options))
        for method, options in cells
    ]
    settings = _settings(args)
    check_data_root(args.data or DEFAULT_DATA, settings.data_root)
    out_dir = check_writable_folder(args.output, what="-o")
    _check_outputs(args)
    cache = settings.open_cache(_stderr)
    log = None if args.quiet else _stderr
    table_cells: list[tuple[str, list[Report]]] = []
    failures: dict[str, int] = {}
    everything: list[Outcome] = []
    every = [subject for _, subjects in plan for subject in subjects]
    results = dict(zip([s.id for s in every], _evaluate(every, settings, cache, log),
                       strict=True))
    for name, subjects in plan:
        reports = []
        for subject in subjects:
            result = results[subject.id]
            if isinstance(result, Report):  # its path is the run's file in the cache
                target = out_dir / f"{_file_name(subject.id)}.pt"
                copy_atomic(result.subject["path"], target)
                result.subject["path"] = str(target)
                reports.append(result)
            else:
                failures[name] = failures.get(name, 0) + 1
            everything.append(result)
        table_cells.append((name, reports))
    print("\n".join(sweep_table(table_cells, settings.thresholds.min_margin_pp, failures)))
    if not args.quiet:
        print()
        print_outcomes(everything, quiet=True)
    gates = _across_seeds([o for o in everything if isinstance(o, Report)])
    _write_outputs(args, [o.to_dict() for o in everything], [g.to_dict() for g in gates])
    _report_errors(everything)
    return _exit_code(everything)


def _cmd_cache(args: argparse.Namespace) -> int:
    from .output.render import table

    cache = build_settings(given_flags(args), flag_prefix="--").open_cache(_stderr)
    if args.action == "clear":
        left = cache.clear(args.kind)
        print(printable(f"cleared {args.kind + ' artifacts' if args.kind else 'every artifact'} "
                        f"in {cache.root}"))
        if left:
            shown = ", ".join(str(path) for path in left[:3])
            print(printable(f"left {len(left)} entr{'y' if len(left) == 1 else 'ies'} fa-checks "
                            f"did not write: {shown}{', ...' if len(left) > 3 else ''}"))
        return EXIT_PASS
    kinds = cache.info()
    print(printable(f"cache: {cache.root}" + ("" if kinds else " (empty)")))
    if kinds:
        rows = [[kind, str(k["artifacts"]), _megabytes(k["bytes"]), str(k["temporary_files"])]
                for kind, k in kinds.items()]
        print("\n".join(table(["kind", "artifacts", "size", "temporary files"], rows)))
    return EXIT_PASS


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB"


def _file_name(text: str) -> str:
    """A subject id as a file name (a user method's ``module:Class`` has a colon)."""
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
