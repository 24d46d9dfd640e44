"""The plugin's command-line options and ini keys, and their parsing into typed values.

Option values stay plain strings while pytest parses them (pytest-xdist re-parses the
command line on every worker); :func:`read_options` turns them into a :class:`PluginOptions`
once, raising ``pytest.UsageError`` with one clear line for a bad value.  The command line wins
over the ini file.  Nothing here imports torch or fa_checks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

PREFIX = "--fa-"
GROUP = "fa-checks"
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
SCHEDULES = ("cosine", "constant")  # fa_checks.training.SCHEDULES, without importing torch


@dataclass(frozen=True)
class PluginOptions:
    """Everything the user asked for, typed; None means "not given" (the library's default)."""

    checkpoints: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    method_args: tuple[str, ...] = ()
    arch: str | None = None
    arch_args: tuple[str, ...] = ()
    data: str | None = None
    data_args: tuple[str, ...] = ()
    data_root: str | None = None
    epochs: int | None = None
    schedule: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    seeds: tuple[int, ...] = ()
    device: str = "auto"
    eval_size: int | None = None
    max_growth: float | None = None
    grad_floor: float | None = None
    min_margin_pp: float | None = None
    baseline_acc: float | None = None
    min_cosine: float | None = None
    min_rho: float | None = None
    report_path: str | None = None
    trust: bool = False
    retrain: bool = False
    #: the thresholds given (by name of fa_checks.Thresholds field), for building Thresholds
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True when there is something to check (a checkpoint or a method to train)."""
        return bool(self.checkpoints or self.methods)


# -- typed parse functions: text -> value, ValueError with the reason ------------------------
def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("it must be a finite number")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise ValueError("it must be greater than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError("it must be 0 or more")
    return value


def any_float(text: str) -> float:
    return _number(text)


def fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise ValueError("it is an accuracy, a fraction between 0 and 1 (e.g. 0.35)")
    return value


def correlation(text: str) -> float:
    value = _number(text)
    if not -1 <= value <= 1:
        raise ValueError("it must be between -1 and 1")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("it must be a whole number") from None
    if value < 1:
        raise ValueError("it must be 1 or more")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("a seed is a whole number") from None
    if value < 0:
        raise ValueError("a seed must be 0 or more")
    return value


def device(text: str) -> str:
    value = text.strip().lower()
    if value in ("auto", "cpu", "cuda"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return value
    raise ValueError(f"use one of {', '.join(DEVICES)}")


def schedule(text: str) -> str:
    value = text.strip().lower()
    if value not in SCHEDULES:
        raise ValueError(f"use one of {', '.join(SCHEDULES)}")
    return value


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("it must not be empty")
    return value.strip()


@dataclass(frozen=True)
class Option:
    """One ``--fa-*`` option: its flag, its parse function, and whether an ini key backs it."""

    name: str  # the part after --fa-, e.g. "max-growth"
    help: str
    parse: Callable[[str], Any] | None = None  # None: a flag (store_true)
    metavar: str | None = None
    many: str | None = None  # "append" (repeatable) or "+" (several values after one flag)
    ini: bool = False

    @property
    def flag(self) -> str:
        return PREFIX + self.name

    @property
    def dest(self) -> str:
        return "fa_" + self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("checkpoint", "check a saved checkpoint; repeatable, globs allowed ('runs/*.pt')",
           text, "PATH", many="append"),
    Option("method", "train this method fresh and check it (a built-in name, an entry point "
           "or module:Class); repeatable", text, "NAME", many="append"),
    Option("method-arg", "an option of the method, key=value; repeatable", text, "K=V",
           many="append"),
    Option("arch", "architecture of fresh runs (default resmlp)", text, "ARCH"),
    Option("arch-arg", "an architecture keyword of fresh runs, key=value; repeatable", text,
           "K=V", many="append"),
    Option("data", "dataset of fresh runs (default mnist1d)", text, "NAME", ini=True),
    Option("data-arg", "a dataset parameter of fresh runs, key=value; repeatable", text, "K=V",
           many="append"),
    Option("data-root", "folder holding datasets that are read from disk (cifar10, mnist, ...)",
           text, "DIR", ini=True),
    Option("epochs", "epochs of fresh runs (default 20)", positive_int, "N", ini=True),
    Option("schedule", "learning-rate schedule of fresh runs and baselines: cosine (default) or "
           "constant", schedule, "NAME", ini=True),
    Option("lr", "AdamW learning rate of fresh runs and baselines (default 1e-3)",
           positive_float, "LR", ini=True),
    Option("batch-size", "batch size of fresh runs and baselines (default 128)", positive_int,
           "N", ini=True),
    Option("weight-decay", "AdamW weight decay of fresh runs and baselines (default 0.01)",
           non_negative_float, "WD", ini=True),
    Option("seeds", "seeds of fresh runs, one subject each (default 0)", seed, "N", many="+"),
    Option("device", "where to train and evaluate: auto, cpu, cuda or cuda:N (default auto)",
           device, "DEVICE", ini=True),
    Option("eval-size", "samples in the diagnostic eval batch (default 1024)", positive_int,
           "N", ini=True),
    Option("max-growth", "D1 fails above this growth of the hidden norm across a block "
           "(default 50)", positive_float, "X", ini=True),
    Option("grad-floor", "D2 fails below this per-sample BP gradient norm at h_L "
           "(default 1.28e-5)", non_negative_float, "G", ini=True),
    Option("min-margin", "D3 fails below this margin over the frozen-blocks baseline, in "
           "percentage points (default 2)", any_float, "PP", ini=True),
    Option("baseline-acc", "frozen-blocks baseline accuracy (a fraction) to use instead of "
           "training the baseline", fraction, "ACC"),
    Option("min-cosine", "opt-in gate: fail when the mean credit cosine over the deep layers is "
           "below this", correlation, "C", ini=True),
    Option("min-rho", "opt-in gate: fail when the mean perturbation correlation over the deep "
           "layers is below this", correlation, "R", ini=True),
    Option("report", "write every subject's report as JSON to PATH", text, "PATH"),
    Option("trust-checkpoint", "allow checkpoints that need arbitrary unpickling (runs code "
           "from the file: only for files you made)"),
    Option("retrain", "recompute cached runs, baselines and reports instead of reusing them"),
)

_BY_NAME = {option.name: option for option in OPTIONS}

#: option name -> fa_checks.Thresholds field
THRESHOLD_FIELDS = {
    "max-growth": "max_growth",
    "grad-floor": "grad_floor",
    "min-margin": "min_margin_pp",
    "min-cosine": "min_cosine",
    "min-rho": "min_rho",
}


def ini_key(option: Option) -> str:
    return option.dest  # fa_max_growth, fa_data_root, ...


def add_options(parser: pytest.Parser) -> None:
    """Register every ``--fa-*`` option (plain strings) and its ini key."""
    group = parser.getgroup(GROUP, "fa-checks: silent-failure checks for feedback-alignment "
                                   "training")
    for option in OPTIONS:
        if option.parse is None:
            group.addoption(option.flag, action="store_true", default=False, dest=option.dest,
                            help=option.help)
        elif option.many == "append":
            group.addoption(option.flag, action="append", default=[], dest=option.dest,
                            metavar=option.metavar, help=option.help)
        elif option.many == "+":
            group.addoption(option.flag, nargs="+", default=None, dest=option.dest,
                            metavar=option.metavar, help=option.help)
        else:
            group.addoption(option.flag, default=None, dest=option.dest, metavar=option.metavar,
                            help=option.help + (f" [ini: {ini_key(option)}]" if option.ini
                                                else ""))
        if option.ini:
            _add_ini(parser, ini_key(option), option.help)


def _add_ini(parser: pytest.Parser, name: str, help: str) -> None:
    if pytest.version_tuple >= (9, 2):
        # str first keeps ini-file text as written; TOML numbers are accepted as floats
        parser.addini(name, help, type=str | float, default=None)
    else:
        parser.addini(name, help, default=None)


def _parse(option: Option, raw: Any, where: str) -> Any:
    assert option.parse is not None
    try:
        return option.parse(str(raw))
    except ValueError as exc:
        raise pytest.UsageError(f"{where} {raw!r} is not valid: {exc}") from None


def _value(config: pytest.Config, option: Option) -> Any:
    """The command line's value, else the ini key's, parsed; None when neither is given."""
    raw = config.getoption(option.dest, default=None)
    if raw is not None:
        return _parse(option, raw, option.flag)
    if option.ini:
        raw = config.getini(ini_key(option))
        if raw is not None and str(raw).strip() != "":
            return _parse(option, raw, f"ini option {ini_key(option)} =")
    return None


def _values(config: pytest.Config, option: Option) -> tuple[Any, ...]:
    raw: Sequence[str] | None = config.getoption(option.dest, default=None)
    return tuple(_parse(option, item, option.flag) for item in (raw or ()))


def read_options(config: pytest.Config) -> PluginOptions:
    """Parse and check every ``--fa-*`` option and ini key; a bad one is a UsageError."""
    get = {name: _value(config, option) for name, option in _BY_NAME.items()
           if option.parse is not None and option.many is None}
    many = {name: _values(config, option) for name, option in _BY_NAME.items()
            if option.many is not None}
    methods = many["method"]
    for needs_method in ("method-arg", "seeds", "arch-arg", "data-arg"):
        if many[needs_method] and not methods:
            raise pytest.UsageError(
                f"{PREFIX}{needs_method} applies to fresh runs: give {PREFIX}method NAME too"
            )
    thresholds = {field_name: get[name] for name, field_name in THRESHOLD_FIELDS.items()
                  if get[name] is not None}
    return PluginOptions(
        checkpoints=many["checkpoint"],
        methods=tuple(dict.fromkeys(methods)),
        method_args=many["method-arg"],
        arch=get["arch"],
        arch_args=many["arch-arg"],
        data=get["data"],
        data_args=many["data-arg"],
        data_root=get["data-root"],
        epochs=get["epochs"],
        schedule=get["schedule"],
        lr=get["lr"],
        batch_size=get["batch-size"],
        weight_decay=get["weight-decay"],
        seeds=tuple(dict.fromkeys(many["seeds"])),
        device=get["device"] or "auto",
        eval_size=get["eval-size"],
        max_growth=get["max-growth"],
        grad_floor=get["grad-floor"],
        min_margin_pp=get["min-margin"],
        baseline_acc=get["baseline-acc"],
        min_cosine=get["min-cosine"],
        min_rho=get["min-rho"],
        report_path=get["report"],
        trust=bool(config.getoption("fa_trust_checkpoint", default=False)),
        retrain=bool(config.getoption("fa_retrain", default=False)),
        thresholds=thresholds,
    )
