"""One vocabulary of flags for both faces: ``fa-checks --max-growth`` is ``pytest --fa-max-growth``.

Each :class:`Flag` says once what a setting is called, how its text is parsed (the parsers of
:mod:`fa_checks.values`), its default and its help.  The command line adds them to argparse with
the prefix ``--`` (:func:`add_to_argparse`), the plugin to pytest with ``--fa-`` (and an ini key
``fa_<name>``); both turn the values the user gave into the same :class:`Settings` with
:func:`build_settings`, so a flag has one name, default, type and meaning in both.  This is how
pytest-benchmark shares its ``add_*_options(addoption, prefix)`` with its own command line.

Nothing here imports torch: the plugin loads this module when pytest starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from . import values
from .direction import DEFAULT_D4_ALPHA, DEFAULT_D4_FLOOR, DEFAULT_D4_SHARE
from .errors import ConfigError
from .report import DEFAULT_GRAD_FLOOR, DEFAULT_MAX_GROWTH, DEFAULT_MIN_MARGIN_PP, Thresholds
from .settings import (
    DEFAULT_ARCH,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COMPARE_FAIL,
    DEFAULT_CPUS_PER_RUN,
    DEFAULT_DATA,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_EVAL_SIZE,
    DEFAULT_GPUS_PER_RUN,
    DEFAULT_LR,
    DEFAULT_SCHEDULE,
    DEFAULT_SEED,
    DEFAULT_WEIGHT_DECAY,
    Settings,
)

Parse = Callable[[Any], Any]


@dataclass(frozen=True)
class Flag:
    """One setting as a flag: ``--<name>`` on the command line, ``--fa-<name>`` in pytest."""

    name: str
    help: str
    #: text -> value (raises ValueError with the reason); None: a switch that takes no value
    parse: Parse | None = None
    #: the value when the flag is not given (shown in the help); None: not set
    default: Any = None
    metavar: str | None = None
    #: "+": several values after one flag; "append": the flag may be repeated
    many: str | None = None
    #: pytest also reads it from the ini key ``fa_<name>``
    ini: bool = False
    #: the Settings field it sets ("thresholds.max_growth" for a threshold); None: a subject's
    setting: str | None = None
    #: the ini key's name after ``fa_`` when it differs from the flag's (``fa_methods``)
    ini_name: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def ini_key(self) -> str:
        """``fa_max_growth``; a flag given several times has a plural key (``fa_methods``)."""
        return "fa_" + (self.ini_name or self.dest)

    @property
    def kind(self) -> str:
        """``"switch"``, ``"int"``, ``"float"`` or ``"string"``: the type of its value."""
        if self.parse is None:
            return "switch"
        return _KINDS.get(self.parse, "string")

    def help_text(self) -> str:
        if self.default is None or self.parse is None:
            return self.help
        shown = self.default
        if isinstance(shown, (list, tuple)):
            shown = " ".join(map(str, shown))
        return f"{self.help} (default {shown})"

    def read(self, raw: Any, where: str) -> Any:
        """``raw`` parsed; a bad value is a ConfigError naming ``where`` it came from."""
        assert self.parse is not None
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{where} {raw!r} is not valid: {exc}") from None


_KINDS: dict[Parse, str] = {
    values.positive_int: "int",
    values.seed: "int",
    values.positive_float: "float",
    values.non_negative_float: "float",
    values.finite_float: "float",
    values.fraction: "float",
    values.correlation: "float",
    values.level: "float",
}


def _flags(*flags: Flag) -> dict[str, Flag]:
    return {flag.name: flag for flag in flags}


#: what to train: the subjects' architecture, data and training (fresh runs and baselines)
TRAINING = _flags(
    Flag("method-arg", "a method option, key=value (e.g. penalty=0.01); repeatable",
         values.non_empty_text, metavar="K=V", many="append", ini=True,
         ini_name="method_args"),
    Flag("arch", "architecture of fresh runs: resmlp, mlp, vit, resnet, an entry point of "
         "fa_checks.models, or your model factory as module:callable", values.non_empty_text,
         DEFAULT_ARCH, "ARCH", ini=True),
    Flag("arch-arg", "an architecture keyword, key=value (e.g. d_hidden=256); repeatable",
         values.non_empty_text, metavar="K=V", many="append", ini=True, ini_name="arch_args"),
    Flag("data", "dataset: mnist1d (offline), digits (offline 8x8 images), synthetic, cifar10, "
         "cifar100, mnist",
         values.non_empty_text, DEFAULT_DATA, "NAME", ini=True),
    Flag("data-arg", "a dataset parameter, key=value (e.g. num_samples=2000); repeatable",
         values.non_empty_text, metavar="K=V", many="append", ini=True,
         ini_name="data_args"),
    Flag("data-root", "folder holding datasets read from disk (cifar10, cifar100, mnist); "
         "nothing is downloaded", values.non_empty_text, metavar="DIR", ini=True,
         setting="data_root"),
    Flag("epochs", "epochs of fresh runs", values.positive_int, DEFAULT_EPOCHS, "N", ini=True),
    Flag("seeds", "seeds of fresh runs, one subject each", values.seed, [DEFAULT_SEED], "N",
         many="+", ini=True),
    Flag("schedule", "learning-rate schedule of fresh runs and baselines: cosine or constant",
         values.schedule, DEFAULT_SCHEDULE, "NAME", ini=True, setting="schedule"),
    Flag("lr", "AdamW learning rate of fresh runs and baselines", values.positive_float,
         DEFAULT_LR, "LR", ini=True, setting="lr"),
    Flag("batch-size", "batch size of fresh runs and baselines", values.positive_int,
         DEFAULT_BATCH_SIZE, "N", ini=True, setting="batch_size"),
    Flag("weight-decay", "AdamW weight decay of fresh runs and baselines",
         values.non_negative_float, DEFAULT_WEIGHT_DECAY, "WD", ini=True,
         setting="weight_decay"),
)

#: how to evaluate: where, on how many samples, against which thresholds
EVALUATION = _flags(
    Flag("device", "where to train and evaluate: auto, cpu, cuda or cuda:N", values.device,
         DEFAULT_DEVICE, "DEVICE", ini=True, setting="device"),
    Flag("threads", "torch threads per process (default: chosen for the work; the "
         "environment's FA_CHECKS_THREADS or OMP_NUM_THREADS win over the choice)",
         values.positive_int, None, "N", ini=True, setting="threads"),
    Flag("eval-size", "samples in the diagnostics' eval batch",
         values.positive_int, DEFAULT_EVAL_SIZE, "N", ini=True, setting="eval_size"),
    Flag("max-growth", "D1 fails above this growth of the median hidden norm across a block",
         values.positive_float, DEFAULT_MAX_GROWTH, "X", ini=True,
         setting="thresholds.max_growth"),
    Flag("grad-floor", "D2 fails below this per-sample BP gradient norm at h_L",
         values.non_negative_float, DEFAULT_GRAD_FLOOR, "G", ini=True,
         setting="thresholds.grad_floor"),
    Flag("min-margin", "D3 fails below this margin over the frozen-blocks baseline, in "
         "percentage points", values.finite_float, DEFAULT_MIN_MARGIN_PP, "PP", ini=True,
         setting="thresholds.min_margin_pp"),
    Flag("min-cosine", "opt-in gate: fail when the mean credit cosine over h_1..h_L is below "
         "this", values.correlation, None, "C", ini=True, setting="thresholds.min_cosine"),
    Flag("min-rho", "opt-in gate: fail when the mean perturbation correlation over h_1..h_L "
         "is below this", values.correlation, None, "R", ini=True,
         setting="thresholds.min_rho"),
    Flag("gate-d4", "gate D4 (direction quality: at least the D4 share of the blocks with a "
         "valid BP reference learn from a signal no better than freshly drawn feedback); D4 "
         "is always reported, and joins the verdict only with this flag",
         ini=True, setting="thresholds.gate_d4"),
    Flag("d4-alpha", "D4: the one-sided level at which a block's cosine and rho must beat the "
         "fresh-feedback null", values.level, DEFAULT_D4_ALPHA, "P", ini=True,
         setting="thresholds.d4_alpha"),
    Flag("d4-share", "D4 fires when at least this share of the judged blocks are at chance",
         values.level, DEFAULT_D4_SHARE, "S", ini=True, setting="thresholds.d4_share"),
    Flag("d4-floor", "D4, for a rule with no random feedback to redraw: the cosine and rho a "
         "block's signal must exceed", values.correlation, DEFAULT_D4_FLOOR, "C", ini=True,
         setting="thresholds.d4_floor"),
    Flag("baseline-acc", "use this frozen-blocks baseline accuracy (a fraction, e.g. 0.496) "
         "instead of training the baseline", values.fraction, None, "ACC",
         setting="baseline_acc"),
    Flag("baseline", "auto: train and cache the frozen-blocks baseline with the subject's own "
         "arch, data, seed, epochs and optimiser; none: skip D3 (the table says so)",
         values.baseline, "auto", "{auto,none}"),
    Flag("no-credit", "skip the credit metrics"),
    Flag("trust", "allow checkpoints that need arbitrary unpickling or name code to import "
         "(runs code from the file: only for files you made)", setting="trust"),
    Flag("retrain", "recompute cached runs, baselines and reports instead of reusing them",
         setting="retrain"),
    Flag("cache-dir", "the artifact cache shared by fa-checks and pytest (default "
         "$FA_CHECKS_CACHE, else $XDG_CACHE_HOME/fa-checks, else ~/.cache/fa-checks)",
         values.non_empty_text, None, "DIR", ini=True, setting="cache_dir"),
    Flag("ray", "run every training run, baseline and evaluation as a task on the Ray cluster "
         "at ADDRESS: auto (the one `ray start` began here), host:port or ray://host:port; "
         "results land in the local cache (needs pip install 'fa-checks[ray]')",
         values.non_empty_text, None, "ADDRESS", setting="ray_address"),
    Flag("gpus-per-run", "GPUs each Ray task asks for; a fraction lets runs share a GPU "
         "(0.25: four at once)", values.non_negative_float, DEFAULT_GPUS_PER_RUN, "F",
         ini=True, setting="gpus_per_run"),
    Flag("cpus-per-run", "CPUs each Ray task asks for (its torch threads unless threads is "
         "given)", values.positive_int, DEFAULT_CPUS_PER_RUN, "N", ini=True,
         setting="cpus_per_run"),
)

#: every flag both faces share, by name
SHARED = {**TRAINING, **EVALUATION}

#: flags that name what a fresh run is: a checkpoint records its own method, options,
#: architecture and seed, so both faces refuse them without a method to train
FRESH_ONLY = ("method-arg", "seeds", "arch", "arch-arg")


def fresh_only_error(name: str, flag_prefix: str, fix: str) -> ConfigError:
    """The one sentence both faces refuse a :data:`FRESH_ONLY` flag with (``fix``: how to
    train a fresh run in that face)."""
    return ConfigError(f"{flag_prefix}{name} applies to fresh runs (a checkpoint records its "
                       f"own method, options, architecture and seed): {fix}")

#: what a run writes, in both faces (the plugin spells them --fa-json, --fa-html, --fa-plots)
OUTPUTS = _flags(
    Flag("json", "write every subject's report (and the across-seeds gates) as JSON to FILE",
         values.non_empty_text, metavar="FILE"),
    Flag("html", "write the visual report: one self-contained HTML page",
         values.non_empty_text, metavar="FILE"),
    Flag("plots", "write the visual report's figures as PNG files into DIR",
         values.non_empty_text, metavar="DIR"),
)


#: the CI loop (:mod:`fa_checks.compare.ci`), in both faces: ``fa-checks check --compare`` is
#: ``pytest --fa-compare``
CI_LOOP = _flags(
    Flag("compare", "compare this run with BASE (a report file, a saved name or 'last'); a "
                    "regression fails the run (exit 1)", values.non_empty_text, metavar="BASE"),
    Flag("compare-fail", f"what counts as a regression (default {DEFAULT_COMPARE_FAIL}; 'none': "
                         "report only)", values.non_empty_text, metavar="SPEC"),
    Flag("store", "the store of saved reports (default $FA_CHECKS_STORE, else "
                  ".fa-checks/reports in the folder the run starts in)",
         values.non_empty_text, metavar="DIR"),
    Flag("md", "write the job page (Markdown verdicts and comparison) to FILE; it is also "
               "appended to $GITHUB_STEP_SUMMARY when that is set",
         values.non_empty_text, metavar="FILE"),
    Flag("autosave", "save this run's report in the store of saved reports"),
)


def nearest_ini_key(key: str, known: Sequence[str], where: str = "") -> ConfigError:
    """The error for an ini key ``key`` that looks like ours (``fa_*``) but is none of
    ``known`` (``where``: " in FILE"): one sentence naming the nearest key (a misspelt
    threshold must not be dropped with a warning while the gate keeps its default)."""
    import difflib

    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}?" if near else f"the fa-checks keys are {', '.join(known)}"
    return ConfigError(f"unknown ini option {key}{where}: {hint}")


def add_to_argparse(parser: argparse.ArgumentParser | Any, flags: Sequence[Flag]) -> None:
    """Add ``flags`` to an argparse parser (or group) as ``--<name>``, parsed on the spot."""
    for flag in flags:
        if flag.parse is None:
            parser.add_argument(f"--{flag.name}", dest=flag.dest, action="store_true",
                                default=None, help=flag.help)
            continue
        kwargs: dict[str, Any] = {"dest": flag.dest, "metavar": flag.metavar,
                                  "help": flag.help_text(), "type": _argparse_type(flag)}
        if flag.many == "+":
            kwargs["nargs"] = "+"
        elif flag.many == "append":
            kwargs.update(action="extend", nargs="+")
        parser.add_argument(f"--{flag.name}", **kwargs)


def _argparse_type(flag: Flag) -> Parse:
    def parse(text: str) -> Any:
        assert flag.parse is not None
        try:
            return flag.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: {exc}") from None

    parse.__name__ = flag.dest  # argparse names the type in some messages
    return parse


def build_settings(given: Mapping[str, Any], *, flag_prefix: str, **extra: Any) -> Settings:
    """The :class:`Settings` from the flags a user gave (``given``: flag name -> parsed value,
    None when not given); defaults fill in the rest.  ``extra``: settings no flag sets."""
    fields: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, value in given.items():
        flag = SHARED.get(name)
        if flag is None or flag.setting is None or value is None:
            continue
        if flag.parse is None and value is False:
            continue
        if flag.setting.startswith("thresholds."):
            limits[flag.setting.partition(".")[2]] = value
        else:
            fields[flag.setting] = value
    # the two switches of what D3 and the credit metrics do; no Settings field has their name
    if given.get("baseline") is not None:
        if given.get("baseline-acc") is not None:
            raise ConfigError(f"{flag_prefix}baseline is not allowed with {flag_prefix}"
                              "baseline-acc: a known accuracy is the baseline; give one of them")
        fields["depth_utility"] = given["baseline"] != "none"
    if given.get("no-credit"):
        fields["credit"] = False
    try:
        thresholds = replace(Thresholds(), **limits)
    except ValueError as exc:  # a combination the flags' own parsers cannot see
        raise ConfigError(str(exc)) from None
    # imported here, not at the top: a plain pytest run with the plugin idle stays light
    from .cache.store import default_lock_timeout
    from .limits import check_count, check_training
    from .training.threads import env_threads

    # the flags meet the limits a checkpoint's own fields meet, before any work (not after
    # training, in the file the run wrote); so do the environment variables that shape it
    sizes = {name: fields[name] for name in ("batch_size", "eval_size") if name in fields}
    check_training(**sizes, names={name: f"{flag_prefix}{name.replace('_', '-')}"
                                   for name in sizes})
    if fields.get("threads") is not None:
        check_count(f"{flag_prefix}threads", fields["threads"], "max_threads")
    env_threads()
    default_lock_timeout()
    return Settings(thresholds=thresholds, flag_prefix=flag_prefix, **fields, **extra)


__all__ = ["EVALUATION", "FRESH_ONLY", "OUTPUTS", "SHARED", "TRAINING", "Flag",
           "add_to_argparse", "build_settings", "fresh_only_error", "nearest_ini_key"]
