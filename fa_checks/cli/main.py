"""The ``fa-checks`` command line: ``train``, ``check``, ``report``, ``sweep``, ``compare``
and ``cache`` (the CI loop's flags, ``compare`` and ``sweep --config`` in :mod:`.loop`).

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

from .. import __version__
from ..claims import InForce
from ..errors import UsageError, classify, one_line
from ..evaluation import Failure, Outcome, across_seeds, seed_groups
from ..files import check_writable, check_writable_folder, copy_atomic
from ..flags import (
    EVALUATION,
    FRESH_ONLY,
    OUTPUTS,
    SHARED,
    TRAINING,
    Flag,
    add_to_argparse,
    build_settings,
    fresh_only_error,
)
from ..output.render import across_seeds_line, outcome_lines, verdict_table
from ..report import AcrossSeeds, Report, is_error_entry
from ..session import CheckSession, Outputs, describe_failure, fill_checkpoints, prepare
from ..session.reports import load_report_files
from ..settings import DEFAULT_ARCH, DEFAULT_DATA, DEFAULT_EPOCHS, Settings
from ..subjects import check_data_root, checkpoint_subjects, fresh_subjects
from ..values import counted, non_empty_text, parse_key_values, printable, seed
from . import loop as cli_loop

PROG = "fa-checks"
EXIT_PASS, EXIT_FAIL, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


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
    train.add_argument("--method", required=True, type=_argparse(non_empty_text),
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
    add_to_argparse(check, _pick(TRAINING, *FRESH_ONLY))  # refused with a sentence
    _add_check_outputs(check)
    cli_loop.add_ci_flags(check)
    check.set_defaults(handler=_cmd_check)

    report = commands.add_parser("report", help="print the verdicts of saved JSON reports",
                                 description="Print the verdict table (and per-layer figures) "
                                             "of JSON reports written by check --json or "
                                             "pytest --fa-json; verdicts are recomputed "
                                             "from the figures.")
    report.add_argument("reports", nargs="+", metavar="REPORT_JSON")
    # a report is a claim: judged by the thresholds in force, never its own (claims.py)
    add_to_argparse(report, _pick(EVALUATION, "max-growth", "grad-floor", "min-margin",
                                  "min-cosine", "min-rho", "baseline-acc", "baseline"))
    add_to_argparse(report, _pick(OUTPUTS, "json", "html", "plots"))
    report.add_argument("--quiet", "-q", action="store_true", help="no per-layer figures")
    report.set_defaults(handler=_cmd_report)

    sweep = commands.add_parser("sweep", help="train and check a grid of methods and seeds",
                                description="Train every method x option value x seed, check "
                                            "each run, print mean and std over seeds per cell.")
    sweep.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                       type=_argparse(non_empty_text))
    add_to_argparse(sweep, [f for f in TRAINING.values() if f.name != "method-arg"])
    sweep.add_argument("--method-arg", action="extend", nargs="+", default=[], metavar="K=V[,V]",
                       help="a method option; comma-separated values each make a cell, e.g. "
                            "penalty=0,1e-4,1e-2 (applies to the methods that take it)")
    add_to_argparse(sweep, EVALUATION.values())
    _add_progress(sweep)
    _add_check_outputs(sweep)
    cli_loop.add_ci_flags(sweep, sweep=True)
    sweep.add_argument("-o", "--output", required=True, metavar="DIR",
                       help="folder for the checkpoints (named by cell and seed)")
    sweep.set_defaults(handler=_cmd_sweep)

    cli_loop.add_compare_command(commands)
    cache = commands.add_parser("cache", help="show or clear the cache of runs and reports",
                                description="The artifact cache fa-checks and pytest share: "
                                            "trained runs, baselines, reports, generated data.")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: where it is and what it holds; clear: remove artifacts")
    cache.add_argument("--kind", choices=("run", "baseline", "report", "data"),
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
    add_to_argparse(parser, OUTPUTS.values())
    parser.add_argument("--quiet", "-q", action="store_true", help="no per-layer figures")


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
    except UsageError as exc:  # argparse's own line names the program already
        print(printable(one_line(exc)), file=sys.stderr)
        return EXIT_INPUT
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message, ours = classify(exc)
        if not ours:
            print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
            return EXIT_INPUT
        print(f"{PROG}: internal error (a fault of fa-checks, not of your method or input; "
              f"please report it): {printable(message)}", file=sys.stderr)
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


def _settings(args: argparse.Namespace, *, ready: bool = True, lazy: bool = False) -> Settings:
    """The settings from whichever shared flags the command has; with ``ready``, the device
    (or Ray) and the threads are checked now, before any work (``lazy``: see prepare)."""
    settings = build_settings(given_flags(args), flag_prefix="--",
                              progress=bool(getattr(args, "progress", False)))
    if ready:
        prepare(settings, threads=not lazy, device=None if lazy else True)
    return settings


def _outputs(args: argparse.Namespace) -> Outputs:
    outputs = Outputs.of(getattr(args, "json", None), getattr(args, "html", None),
                         getattr(args, "plots", None))
    outputs.check()  # every output path can be written: refused before any work
    return outputs


def _exit_code(outcomes: Sequence[Outcome],
               gates: Sequence[tuple[str, AcrossSeeds | Failure]] = ()) -> int:
    failures = [o for o in outcomes if isinstance(o, Failure)]
    failures += [g for _, g in gates if isinstance(g, Failure)]
    if any(f.internal for f in failures):
        return EXIT_INTERNAL
    if failures:
        return EXIT_INPUT
    passed = all(o.passed for o in outcomes if isinstance(o, Report))
    return EXIT_PASS if passed and not any(g.fires for _, g in gates) else EXIT_FAIL


def print_outcomes(outcomes: Sequence[Outcome], *, quiet: bool = False) -> None:
    """The verdict table, then each subject's sentences and per-layer figures."""
    rows = [o.to_dict() if isinstance(o, Failure) else o for o in outcomes]
    lines = outcome_lines(rows, quiet=quiet)
    if lines:
        print("\n".join(lines))


def print_gates(gates: Sequence[tuple[str, AcrossSeeds | Failure]]) -> None:
    """One across-seeds line per group: the line the plugin prints in its summary."""
    if gates:
        print()
        print("\n".join(across_seeds_line(label, None, gate.message)
                        if isinstance(gate, Failure) else across_seeds_line(label, gate)
                        for label, gate in gates))


def _report_errors(failures: Sequence[Outcome | AcrossSeeds]) -> None:
    for item in failures:
        if isinstance(item, Failure):
            _stderr(describe_failure(item, PROG))
            if item.internal and item.traceback:
                _stderr(item.traceback.rstrip())


def _write_outputs(session: CheckSession, entries: list[dict[str, Any]] | None = None,
                   across: Sequence[dict[str, Any]] | None = None, **more: Any) -> None:
    """The JSON report and the visual report, each when asked for."""
    outputs = session.outputs
    for path in session.write_outputs(entries, across, **more):
        if path.suffix == ".html":
            _stderr(f"{PROG}: wrote the visual report to {path}")
    if outputs.plots is not None:
        _stderr(f"{PROG}: wrote the figures to {outputs.plots}")


# -- commands --------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from ..training.runs import train_subject

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
    from ..checkpoint import load_checkpoint

    # read before it is copied: a cached file that cannot be read never reaches -o
    saved = load_checkpoint(path, import_archs={subject.arch})  # the model the user named
    copy_atomic(path, args.output)
    last = (saved.history or [{}])[-1]
    note = (f" (diverged in epoch {last.get('epoch')}: the loss is not finite)"
            if last.get("diverged") else "")
    epochs = counted(saved.epochs, "epoch")
    print(printable(f"wrote {args.output}: {saved.method} on {saved.arch}/{subject.data}, seed "
          f"{saved.seed}, {epochs}, test acc {saved.test_acc:.4f}{note}"))
    return EXIT_PASS


def _cmd_check(args: argparse.Namespace) -> int:
    for name in FRESH_ONLY:
        if getattr(args, name.replace("-", "_")) is not None:
            raise fresh_only_error(name, "--", "train one with fa-checks train or sweep")
    settings = _settings(args, lazy=True)  # all cached: no torch (threads before real work)
    data_options = parse_key_values(args.data_arg or [], what="--data-arg")
    subjects = fill_checkpoints(checkpoint_subjects(args.checkpoints, what="checkpoint"),
                                data=args.data, data_options=data_options, epochs=args.epochs)
    session = CheckSession(settings, subjects, _outputs(args), log=None if args.quiet else _stderr,
                           on_compute=lambda: prepare(settings, device=False))
    ci = cli_loop.ci_plan_of(args, settings)
    outcomes = session.outcomes()
    print_outcomes(outcomes, quiet=args.quiet)
    gates = session.gates()
    print_gates(gates)
    entries = [o.to_dict() for o in outcomes]
    _write_outputs(session, comparison=cli_loop.ci_comparison(ci, entries))
    _report_errors([*outcomes, *(gate for _, gate in gates)])
    return cli_loop.ci_finish(ci, {"subjects": entries}, _exit_code(outcomes, gates))


def _cmd_report(args: argparse.Namespace) -> int:
    settings = _settings(args, ready=False)  # nothing is computed: no device, no Ray
    session = CheckSession(settings, [], _outputs(args))
    items = load_report_files(args.reports, InForce.of(settings), log=_stderr)
    # the table even when every entry is an error: the file's own errors are the news
    print("\n".join(outcome_lines(items, quiet=args.quiet) or verdict_table(items)))
    reports = [item for item in items if isinstance(item, Report)]
    gates = [(label, across_seeds(label, group, settings.thresholds.min_margin_pp))
             for label, group in seed_groups(reports).items()]
    print_gates(gates)
    _write_outputs(session, [i.to_dict() if isinstance(i, Report) else i for i in items],
                   [gate.to_dict() for _, gate in gates])
    if any(is_error_entry(item) for item in items if isinstance(item, dict)):
        return EXIT_INPUT
    return EXIT_PASS if all(r.passed for r in reports) else EXIT_FAIL


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..sweep.grid import cell_name, sweep_cells, sweep_table

    cli_loop.apply_sweep_config(args)
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
    every = [subject for _, subjects in plan for subject in subjects]
    session = CheckSession(settings, every, _outputs(args), jobs=cli_loop.jobs_of(args, settings),
                           log=None if args.quiet else _stderr)
    ci = cli_loop.ci_plan_of(args, settings)
    table_cells: list[tuple[str, list[Report]]] = []
    failures: dict[str, int] = {}
    everything: list[Outcome] = []
    session.outcomes()  # with --ray: every run at once
    for name, subjects in plan:
        reports = []
        for subject in subjects:
            result = session.outcome(subject.id)
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
    entries = [o.to_dict() for o in everything]
    _write_outputs(session, entries, comparison=cli_loop.ci_comparison(ci, entries))
    _report_errors(everything)
    return cli_loop.ci_finish(ci, {"subjects": entries}, _exit_code(everything))


def _cmd_cache(args: argparse.Namespace) -> int:
    from ..cache.summary import cache_summary

    cache = _settings(args, ready=False).open_cache(_stderr)
    print("\n".join(printable(line) for line in cache_summary(cache, args.action, args.kind)))
    return EXIT_PASS


def _file_name(text: str) -> str:
    """A subject id as a file name (a user method's ``module:Class`` has a colon)."""
    return "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
