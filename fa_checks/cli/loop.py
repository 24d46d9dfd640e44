"""The command line's part of the CI loop: ``compare``, the ``--compare`` / ``--autosave`` /
``--md`` flags of ``check`` and ``sweep`` (adapting :mod:`fa_checks.compare.ci`, as the plugin
does), and ``sweep --config``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError, UsageError, one_line
from ..files import check_writable
from ..flags import CI_LOOP, TRAINING, add_to_argparse
from ..report import Report, is_error_entry

EXIT_PASS, EXIT_FAIL, EXIT_INPUT = 0, 1, 2
PROG = "fa-checks"


def add_compare_command(commands: Any) -> None:
    compare = commands.add_parser("compare", help="compare a report with an accepted one",
                                  description="Compare NEW against BASE: subjects matched by "
                                              "id, methods across their seeds; exit 1 on a "
                                              "regression. Each is a report file, a saved "
                                              "name (or its number) or 'last'.")
    compare.add_argument("base", metavar="BASE")
    compare.add_argument("new", metavar="NEW")
    add_ci_flags(compare, run=False)
    compare.add_argument("--html", metavar="FILE",
                         help="write NEW's visual report with the comparison as a section")
    compare.set_defaults(handler=cmd_compare)


def add_ci_flags(parser: argparse.ArgumentParser, *, run: bool = True,
                 sweep: bool = False) -> None:
    """The CI loop's flags (:data:`fa_checks.flags.CI_LOOP`, pytest's without ``fa-``);
    ``run``: also ``--compare`` and ``--autosave``; ``sweep``: also ``--config`` and ``-j``."""
    if sweep:
        parser.add_argument("--config", metavar="TOML",
                            help="the sweep in a file: methods, method_args (lists make cells), "
                                 "seeds, arch, arch_args, data, data_args, epochs, lr, "
                                 "batch_size, weight_decay, schedule; flags given here win")
        parser.add_argument("-j", "--jobs", type=_jobs, default=1, metavar="N",
                            help="run N subjects at a time in parallel processes on this "
                                 "machine (one cache; the cores divided among them); default 1")

    run_only = ("compare", "autosave") if run else ()
    add_to_argparse(parser, [CI_LOOP[name] for name in (*run_only, "compare-fail", "store",
                                                        "md")])


def _jobs(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: give 1 or more processes")
    return count


def jobs_of(args: argparse.Namespace, settings: Any) -> int:
    """``-j``, refused beside ``--ray`` (processes here, or tasks on a cluster: one of them)."""
    jobs = int(getattr(args, "jobs", 1) or 1)
    if jobs > 1 and settings.ray_address is not None:
        raise ConfigError("-j runs processes on this machine and --ray tasks on a cluster; "
                          "give one of them")
    return jobs


def ci_plan_of(args: argparse.Namespace, settings: Any = None) -> Any:
    from ..claims import InForce
    from ..compare.ci import CiRequest, prepare

    request = CiRequest(autosave=bool(getattr(args, "autosave", False)), store=args.store,
                        compare=getattr(args, "compare", None), compare_fail=args.compare_fail,
                        md=args.md)
    in_force = InForce.of(settings) if settings is not None else None
    return prepare(request, in_force=in_force) if request.active else None


def ci_comparison(plan: Any, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The comparison as the HTML page's section (None without ``--compare``)."""
    if plan is None or plan.base is None:
        return None
    from ..compare.diff import compare_reports
    from ..report import read_entries

    return compare_reports(plan.base.items, read_entries(entries), rule=plan.rule,
                           base_name=plan.base.name, new_name="this run").to_dict()


def ci_finish(plan: Any, data: dict[str, Any], code: int) -> int:
    """Compare, save and write the job page; a regression turns a pass into exit 1."""
    if plan is None:
        return code
    from ..compare.ci import finish

    result = finish(plan, data)
    lines = result.lines()
    if lines:
        print()
        print("\n".join(lines))
    for command in result.commands:
        print(command)
    return EXIT_FAIL if code == EXIT_PASS and result.regressed else code


def apply_sweep_config(args: argparse.Namespace) -> None:
    """Fill the sweep's flags that were not given from ``--config`` (each value read by the
    flag's own parser, so the file meets the same checks as the command line)."""
    if args.config:
        from ..sweep.config import KEYS, read_sweep_config

        for key, value in read_sweep_config(args.config).items():
            name = KEYS[key][1].removeprefix("--")
            dest = name.replace("-", "_")
            if getattr(args, dest, None) not in (None, []):
                continue  # the command line wins
            flag = TRAINING.get(name)
            if flag is not None and flag.parse is not None and not key.endswith("_args"):
                try:
                    value = ([flag.parse(str(v)) for v in value] if isinstance(value, list)
                             else flag.parse(str(value)))
                except ValueError as exc:
                    raise ConfigError(f"{args.config}: {key}: {one_line(exc)}") from None
            setattr(args, dest, value)
    if not args.methods:
        raise UsageError("sweep needs --methods, or methods in --config (see "
                         "fa-checks sweep --help)")


def cmd_compare(args: argparse.Namespace) -> int:
    """Exit 0 no regression, 1 a regression, 2 a file that is not a report."""
    from ..compare import comparison_lines, parse_fail_rule, read_report_file
    from ..compare.diff import compare_reports
    from ..compare.store import ReportStore, store_root
    from ..output.markdown import write_job_page

    rule = parse_fail_rule(args.compare_fail)
    if args.html:
        check_writable(args.html, what="--html")
    if args.md:
        check_writable(args.md, what="--md")
    store = ReportStore(store_root(args.store))
    base, new = (read_report_file(store.resolve(ref)) for ref in (args.base, args.new))
    comparison = compare_reports(base.items, new.items, rule=rule, base_name=base.name,
                                 new_name=new.name)
    print("\n".join(comparison_lines(comparison)))
    entries = [i.to_dict() if isinstance(i, Report) else i for i in new.items]
    if args.html:
        from ..output.render import write_visual_report

        write_visual_report(entries, new.across_seeds, html=args.html,
                            comparison=comparison.to_dict())
        print(f"{PROG}: wrote the visual report to {args.html}", file=sys.stderr)
    written, commands = write_job_page(entries, comparison, md_path=args.md)
    for command in commands:
        print(command)
    if any(is_error_entry(i) for i in new.items if isinstance(i, dict)):
        return EXIT_INPUT
    return EXIT_FAIL if comparison.regressed else EXIT_PASS


__all__ = ["add_ci_flags", "add_compare_command", "apply_sweep_config", "ci_comparison",
           "ci_finish",
           "ci_plan_of", "cmd_compare", "jobs_of"]
