"""The plugin's flags: the library's shared vocabulary as ``--fa-*`` options and ini keys.

Every setting a fresh run or an evaluation takes is defined once in :mod:`fa_checks.flags` (the
command line adds the same flags with the prefix ``--``); this module adds them to pytest with
the prefix ``--fa-`` and an ini key ``fa_<name>``, plus the few that only pytest has (what to
check, where the JSON report goes).  Values stay plain strings while pytest parses them
(pytest-xdist re-parses the command line on every worker); :func:`read_request` parses them
once into a :class:`Request`, the command line winning over the ini file.  A bad value is a
``pytest.UsageError`` with one line.  Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from fa_checks import values
from fa_checks.errors import ConfigError
from fa_checks.flags import FRESH_ONLY, OUTPUTS, SHARED, Flag, fresh_only_error

PREFIX = "--fa-"
GROUP = "fa-checks"

#: the flags only pytest has: the subjects to check (the command line takes them as arguments
#: and subcommands); the outputs are the library's, as ``fa-checks check`` has them
PLUGIN_ONLY = {flag.name: flag for flag in (
    Flag("checkpoint", "check a saved checkpoint; repeatable, globs allowed ('runs/*.pt')",
         values.non_empty_text, metavar="PATH", many="append"),
    Flag("method", "train this method fresh and check it (a built-in name, an entry point "
         "or module:Class); repeatable", values.non_empty_text, metavar="NAME", many="append",
         ini=True, ini_name="methods"),
)}
FLAGS: dict[str, Flag] = {**PLUGIN_ONLY, **OUTPUTS, **SHARED}

#: earlier spellings that keep working
ALIASES = {"trust": ("--fa-trust-checkpoint",), "json": ("--fa-report",)}

_INI_TYPES = {"int": "int", "float": "float", "string": "string", "switch": "bool"}
_INI_WORDS = {"int": "a whole number", "float": "a number", "switch": "true or false"}


def option_dest(flag: Flag) -> str:
    return "fa_" + flag.dest


def ini_key(flag: Flag) -> str:
    return flag.ini_key  # fa_max_growth, fa_data_root, fa_methods, ...


def check_ini_keys(config: pytest.Config) -> None:
    """An ``fa_*`` key in the configuration that is none of ours is a usage error naming the
    nearest key: pytest would only warn, and the gate would keep its default threshold."""
    from fa_checks.flags import nearest_ini_key

    known = sorted(ini_key(flag) for flag in FLAGS.values() if flag.ini)
    given = getattr(config, "_inicfg", None) or {}  # pytest has no public list of keys given
    for key in sorted(given):
        if isinstance(key, str) and key.startswith("fa_") and key not in known:
            where = f" in {config.inipath}" if config.inipath else ""
            raise pytest.UsageError(str(nearest_ini_key(key, known, where)))


@dataclass(frozen=True)
class Request:
    """What the user asked of the plugin: subjects to check and the flags given (parsed;
    a flag not given is absent from ``given``)."""

    checkpoints: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    #: the subjects come from the configuration alone (fa_methods), none from the command line
    from_config: bool = False
    report_path: str | None = None
    html_path: str | None = None
    plots_dir: str | None = None
    given: Mapping[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True when there is something to check (a checkpoint or a method to train)."""
        return bool(self.checkpoints or self.methods)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.given.get(name)
        return default if value is None else value


def add_flags(parser: pytest.Parser) -> None:
    """Register every ``--fa-*`` flag (plain strings) and its ini key, typed."""
    group = parser.getgroup(GROUP, "fa-checks: silent-failure checks for feedback-alignment "
                                   "training")
    for flag in FLAGS.values():
        add_option(group, flag, option_dest(flag),
                   ini_note=f" [ini: {ini_key(flag)}]" if flag.ini else "")
        if flag.ini:
            kind = "args" if flag.many else _INI_TYPES[flag.kind]
            parser.addini(ini_key(flag), flag.help_text(), type=kind, default=None)


def add_option(group: Any, flag: Flag, dest: str, *, ini_note: str = "") -> None:
    """``--fa-<name>`` for ``flag`` in ``group``, kept at ``dest``: a switch, a repeatable
    flag, several values or one (``ini_note``: said after a one-value flag's help)."""
    name, aliases = PREFIX + flag.name, ALIASES.get(flag.name, ())
    if flag.parse is None:
        group.addoption(name, *aliases, action="store_true", default=False, dest=dest,
                        help=flag.help)
    elif flag.many == "append":
        group.addoption(name, action="append", default=[], dest=dest, metavar=flag.metavar,
                        help=flag.help_text())
    elif flag.many == "+":
        group.addoption(name, nargs="+", default=None, dest=dest, metavar=flag.metavar,
                        help=flag.help_text())
    else:
        group.addoption(name, *aliases, default=None, dest=dest, metavar=flag.metavar,
                        help=flag.help_text() + ini_note)


def _read(flag: Flag, raw: Any, where: str) -> Any:
    try:
        return flag.read(raw, where)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def _value(config: pytest.Config, flag: Flag) -> Any:
    """The command line's value, else the ini key's, parsed; None when neither is given."""
    if flag.parse is None:
        given = bool(config.getoption(option_dest(flag), default=False))
        if not given and flag.ini:
            given = bool(_ini(config, flag))
        return given or None
    raw = config.getoption(option_dest(flag), default=None)
    if raw is not None and not (flag.many is not None and not raw):  # [] is not given
        if flag.many is not None:
            return tuple(_read(flag, item, PREFIX + flag.name) for item in raw) or None
        return _read(flag, raw, PREFIX + flag.name)
    if flag.ini:
        raw = _ini(config, flag)
        if flag.many is not None and raw:  # a list: "dfa bp" or ["dfa", "bp"]
            return tuple(_read(flag, item, f"ini option {ini_key(flag)} =") for item in raw)
        if flag.many is None and raw is not None and str(raw).strip() != "":
            return _read(flag, raw, f"ini option {ini_key(flag)} =")
    return None


def _ini(config: pytest.Config, flag: Flag) -> Any:
    """The ini key's value as pytest types it; a value of the wrong type is a UsageError
    naming the key and the file (pytest's own message names neither)."""
    try:
        return config.getini(ini_key(flag))
    except (pytest.UsageError, ValueError) as exc:
        raise pytest.UsageError(
            f"ini option {ini_key(flag)} in {config.inipath}: {exc}; it must be "
            f"{_INI_WORDS.get(flag.kind, flag.kind)}") from None


def read_request(config: pytest.Config) -> Request:
    """Parse and check every ``--fa-*`` flag and ini key; a bad one is a UsageError."""
    check_ini_keys(config)
    given = {name: _value(config, flag) for name, flag in FLAGS.items()}

    def typed(name: str) -> bool:  # given on the command line (not only in the ini)
        return bool(config.getoption(option_dest(FLAGS[name]), default=None))

    # subjects on the command line replace the configuration's (fa_methods)
    from_config = bool(given.get("method")) and not (typed("method") or typed("checkpoint"))
    if typed("checkpoint") and not typed("method"):
        given["method"] = None
    methods = given.pop("method") or ()
    checkpoints = given.pop("checkpoint") or ()
    report_path, html_path, plots_dir = given.pop("json"), given.pop("html"), given.pop("plots")
    for name in FRESH_ONLY:
        if given.get(name) and not methods and typed(name):  # an ini's belong to fa_methods
            raise pytest.UsageError(str(fresh_only_error(name, PREFIX,
                                                         f"give {PREFIX}method NAME too")))
    if given.get("seeds"):
        given["seeds"] = tuple(dict.fromkeys(given["seeds"]))
    return Request(checkpoints=tuple(checkpoints), methods=tuple(dict.fromkeys(methods)),
                   from_config=from_config, report_path=report_path, html_path=html_path,
                   plots_dir=plots_dir,
                   given={name: value for name, value in given.items() if value is not None})
