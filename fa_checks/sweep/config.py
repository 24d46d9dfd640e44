"""A sweep written in a file (``fa-checks sweep --config sweep.toml``), so a paper's grid is
versioned with its code::

    methods = ["dfa", "fa"]
    seeds = [0, 1, 2, 3]
    arch = "resmlp"
    data = "mnist1d"
    epochs = 20
    lr = 1e-3

    [method_args]            # each list makes one cell per value
    penalty = [0, 1e-4, 1e-2]

    [arch_args]
    d_hidden = 256

The file is data: an unknown key, a value of the wrong type or a grid larger than the limits
is refused with one line naming the key.  A flag given on the command line wins over the
file's value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: a sweep file is a few hundred bytes; far more is not one
MAX_CONFIG_BYTES = 1 << 20
MAX_LIST = 1_000

_TEXT, _INT, _NUMBER = "a string", "a whole number", "a number"
#: key -> (what it holds, the sweep flag it stands for)
KEYS: dict[str, tuple[str, str]] = {
    "methods": ("a list of strings", "--methods"),
    "seeds": ("a list of whole numbers", "--seeds"),
    "arch": (_TEXT, "--arch"),
    "data": (_TEXT, "--data"),
    "epochs": (_INT, "--epochs"),
    "lr": (_NUMBER, "--lr"),
    "batch_size": (_INT, "--batch-size"),
    "weight_decay": (_NUMBER, "--weight-decay"),
    "schedule": (_TEXT, "--schedule"),
    "method_args": ("a table of values or lists of values", "--method-arg"),
    "arch_args": ("a table of values", "--arch-arg"),
    "data_args": ("a table of values", "--data-arg"),
}


def _scalar(value: Any) -> bool:
    return (isinstance(value, (str, int, float)) and not isinstance(value, bool)
            and not (isinstance(value, float) and not math.isfinite(value))) or isinstance(
        value, bool)


def _fits(key: str, value: Any) -> bool:
    what = KEYS[key][0]
    if what == _TEXT:
        return isinstance(value, str) and bool(value.strip())
    if what == _INT:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if what == _NUMBER:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if key == "methods":
        return (isinstance(value, list) and 0 < len(value) <= MAX_LIST
                and all(isinstance(v, str) and v.strip() for v in value))
    if key == "seeds":
        return (isinstance(value, list) and 0 < len(value) <= MAX_LIST
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                        for v in value))
    if not isinstance(value, Mapping):
        return False
    for item in value.values():
        listed = item if key == "method_args" and isinstance(item, list) else [item]
        if not listed or len(listed) > MAX_LIST or not all(_scalar(v) for v in listed):
            return False
    return True


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def read_sweep_config(path: str | Path) -> dict[str, Any]:
    """The file's settings as the sweep command's argument values (``method_args`` as
    ``["penalty=0,0.0001,0.01"]``); a ConfigError naming the file and key when it is not a
    sweep."""
    import tomllib

    from ..files import regular_file

    source = regular_file(path, what="sweep config")
    if source.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES} bytes; not a sweep config")
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not a TOML file ({exc})") from None
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; a sweep config takes "
                          f"{', '.join(KEYS)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        what, flag = KEYS[key]
        if not _fits(key, value):
            raise ConfigError(f"{source}: {key} must be {what} (as {flag} takes)")
        if key.endswith("_args"):
            out[key] = [f"{k}=" + ",".join(_text(v) for v in (item if isinstance(item, list)
                                                            else [item]))
                        for k, item in value.items()]
        elif key == "methods":
            out[key] = [v.strip() for v in value]
        else:
            out[key] = value
    return out


__all__ = ["KEYS", "read_sweep_config"]
