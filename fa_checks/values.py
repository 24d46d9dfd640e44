"""Typed values from text: the parsers every face (the command line, pytest, a file) shares.

Each parser takes the text a user typed (or a number read from a file) and returns the typed
value, or raises ``ValueError`` whose message is the reason alone ("it must be 1 or more"); the
caller adds the option or file it came from.  ``key=value`` lists (``--method-arg
penalty=0.01``) are parsed here too.  Nothing here imports torch.
"""

from __future__ import annotations

import math
import numbers
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError

#: the largest seed torch's generators take
MAX_SEED = 2**63 - 1
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")

Text = str | int | float


def _number(value: Text) -> float:
    if isinstance(value, bool):
        raise ValueError("it must be a number, not a yes/no value")
    if isinstance(value, numbers.Real):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError("it must be a number") from None
    if not math.isfinite(number):
        raise ValueError("it must be a finite number")
    return number


def _whole(value: Text) -> int:
    if isinstance(value, bool):
        raise ValueError("it must be a whole number, not a yes/no value")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ValueError("it must be a whole number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("it must be a whole number") from None


def finite_float(value: Text) -> float:
    return _number(value)


def positive_float(value: Text) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError("it must be greater than 0")
    return number


def non_negative_float(value: Text) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError("it must be 0 or more")
    return number


def fraction(value: Text) -> float:
    number = _number(value)
    if not 0 <= number <= 1:
        raise ValueError("it is an accuracy, a fraction between 0 and 1 (e.g. 0.35)")
    return number


def correlation(value: Text) -> float:
    number = _number(value)
    if not -1 <= number <= 1:
        raise ValueError("it must be between -1 and 1")
    return number


def level(value: Text) -> float:
    """A significance level or a share: a number in (0, 1]."""
    number = _number(value)
    if not 0 < number <= 1:
        raise ValueError("it must be greater than 0 and at most 1 (e.g. 0.05)")
    return number


def positive_int(value: Text) -> int:
    number = _whole(value)
    if number < 1:
        raise ValueError("it must be 1 or more")
    return number


def seed(value: Text) -> int:
    number = _whole(value)
    if not 0 <= number <= MAX_SEED:
        raise ValueError(f"a seed is a whole number from 0 to 2^63-1 ({MAX_SEED})")
    return number


def device(value: Text) -> str:
    text = str(value).strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return text
    if text.startswith("cuda:") and text[5:].isdigit():
        return text
    raise ValueError(f"use one of {', '.join(DEVICES)}")


def schedule(value: Text) -> str:
    text = str(value).strip().lower()
    if text not in SCHEDULES:
        raise ValueError(f"use one of {', '.join(SCHEDULES)}")
    return text


def baseline(value: Text) -> str:
    """How D3 finds its baseline: ``auto`` (train it) or ``none`` (skip D3)."""
    text = str(value).strip().lower()
    if text not in ("auto", "none"):
        raise ValueError("use auto or none")
    return text


def non_empty_text(value: Text) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError("it must not be empty")
    return text


# -- key=value lists ---------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"1e-2"`` -> 0.01, ``"true"`` -> True, ``"none"`` -> None, else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_key_values(pairs: Sequence[str], *, what: str) -> dict[str, Any]:
    """``["penalty=0.01", "residual=false"]`` -> ``{"penalty": 0.01, "residual": False}``.

    ``what`` names the flag the pairs came from (``--fa-method-arg``), for the error message.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{what} {pair!r} is not key=value (for example {what} penalty=0.01)")
        if key in values:
            raise ConfigError(f"{what} gives {key!r} twice ({pair!r}); give each key once")
        values[key] = parse_value(value)
    return values


def format_value(value: Any) -> str:
    """The inverse of :func:`parse_value`, for ids and file names."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def format_key_values(values: Mapping[str, Any]) -> str:
    """``{"penalty": 0.01}`` -> ``"penalty=0.01"`` (sorted, joined by ``-``)."""
    return "-".join(f"{k}={format_value(v)}" for k, v in sorted(values.items()))


def fits_annotation(value: Any, annotation: str) -> bool:
    """Whether a value read from JSON is of a dataclass field's annotated type (``"float"``,
    ``"list[float | None]"``): a file's wrong type is said as such, not met later as a
    failed comparison."""
    if annotation.endswith(" | None"):
        return value is None or fits_annotation(value, annotation[: -len(" | None")])
    if annotation.startswith("list[") and annotation.endswith("]"):
        return isinstance(value, list) and all(fits_annotation(item, annotation[5:-1])
                                               for item in value)
    if annotation == "bool":
        return isinstance(value, bool)
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    return True


def describe_annotation(annotation: str) -> str:
    """``"float | None"`` -> ``"a number or null"``, for messages."""
    words = {"float": "a number", "int": "a whole number", "bool": "true or false",
             "str": "a string"}
    if annotation.endswith(" | None"):
        return f"{describe_annotation(annotation[: -len(' | None')])} or null"
    if annotation.startswith("list[") and annotation.endswith("]"):
        return f"a list, each {describe_annotation(annotation[5:-1])}"
    return words.get(annotation, annotation)


def counted(number: int, noun: str) -> str:
    """``"1 epoch"``, ``"20 epochs"``."""
    return f"{number} {noun}{'s' * (number != 1)}"


# -- strings from files, shown on a terminal ----------------------------------------------------
# A report's ids, sentences and error entries, a checkpoint's file name, a value read from a
# pickle may hold escape sequences (which repaint the table a person reads) or bidi overrides
# (which reorder what they see): every face shows such strings through printable().
#: Unicode categories that are not shown as themselves: controls (C0, DEL, C1), format
#: characters (bidi overrides and isolates, zero-width joiners), line and paragraph
#: separators, surrogates and unassigned code points
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: Any) -> str:
    """``text`` (any value: it is ``str``-ed) with every control, format, separator or
    unassigned character escaped as ``\\xNN`` / ``\\uNNNN``; printable text is unchanged."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _HIDDEN else c for c in text)


__all__ = [
    "printable",
    "baseline",
    "DEVICES",
    "MAX_SEED",
    "SCHEDULES",
    "correlation",
    "level",
    "counted",
    "describe_annotation",
    "device",
    "finite_float",
    "fits_annotation",
    "format_key_values",
    "format_value",
    "fraction",
    "non_empty_text",
    "non_negative_float",
    "parse_key_values",
    "parse_value",
    "positive_float",
    "positive_int",
    "schedule",
    "seed",
]
