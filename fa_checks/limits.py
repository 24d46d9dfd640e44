"""Limits on the work a file or an option can ask for, checked before any of it is done.

A checkpoint is data received from someone else: every size it declares (the width and depth of
its model, its input shape, its classes, the epochs and batch size of the baseline it asks for,
the dataset it names) decides how much memory and time the tool spends on it.  Each such size is
checked here, by type and range, against a :class:`Limits` of sane defaults, so
``num_blocks=10**6`` or ``d_hidden=abc`` is refused at once with one sentence naming the field,
the value, the limit and how to raise it.  Once every keyword is bounded, the whole model is
cheap to build on the meta device, and :mod:`fa_checks.models.size` measures it there: this
module knows sizes, not architectures (beyond their keywords' defaults).

The defaults suit research on one machine.  Someone who really trains larger models raises them
with the environment variable ``FA_CHECKS_LIMITS``, a comma-separated list of ``name=value``::

    FA_CHECKS_LIMITS="max_params=5e9,max_epochs=100000" fa-checks check big.pt

The same checks serve the options of a fresh run (a :class:`~fa_checks.errors.ConfigError`, the
default) and the fields of a file (the caller passes ``error=CheckpointError`` and
``where="run.pt: "``).  Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import values
from .errors import ConfigError, UserError

#: the environment variable that overrides the defaults
LIMITS_VARIABLE = "FA_CHECKS_LIMITS"

Refusal = type[UserError]


@dataclass(frozen=True)
class Limits:
    """The largest value each size may take.  Every field is a positive whole number."""

    #: bytes of a checkpoint file
    max_file_bytes: int = 8 * 2**30
    #: tensors (storages) in one checkpoint file
    max_tensors: int = 100_000
    #: bytes of a checkpoint's pickle: everything but the tensors' data (keys, settings, history)
    max_metadata_bytes: int = 16 * 2**20
    #: elements of a model's state (parameters and buffers), and of a method's feedback network
    max_params: int = 1_000_000_000
    #: d_hidden, d_model, width, vnet_width, an MLP's hidden size
    max_width: int = 65_536
    #: num_blocks, an MLP's hidden layers, vnet_depth
    max_blocks: int = 1_024
    #: input features (the product of the input shape)
    max_input_features: int = 2**24
    #: each dimension of the input shape
    max_input_dim: int = 65_536
    #: dimensions of the input shape
    max_input_rank: int = 4
    #: classes of a model or a dataset
    max_classes: int = 100_000
    #: tokens of a ViT (its attention costs their square)
    max_tokens: int = 4_096
    #: elements of one sample's hidden state (tokens x d_model, width x height x width)
    max_hidden_elements: int = 2**24
    #: training epochs (fresh runs, and the baseline a checkpoint asks for)
    max_epochs: int = 10_000
    #: training batch size
    max_batch_size: int = 2**20
    #: samples of the evaluation batch
    max_eval_size: int = 2**20
    #: samples of a generated dataset (MNIST-1D generates about 1,700 a second, once)
    max_samples: int = 1_000_000
    #: epochs x training samples of the frozen-blocks baseline a checkpoint asks for (the
    #: one piece of training a file from someone else can cause)
    max_sample_passes: int = 20_000_000
    #: elements of a generated dataset (samples x features)
    max_data_elements: int = 2**30
    #: entries of a checkpoint's per-epoch history
    max_history: int = 100_000
    #: random directions of a method's finite-difference probes
    max_directions: int = 4_096
    #: torch threads of one process (past the cores they only spin; torch crashes near 10^5)
    max_threads: int = 1_024

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"limit {item.name}={value!r} must be a whole number of 1 or "
                                  "more")


def limit_names() -> list[str]:
    """The names :data:`LIMITS_VARIABLE` may set."""
    return [item.name for item in dataclasses.fields(Limits)]


def parse_limits(text: str, *, base: Limits | None = None, what: str = LIMITS_VARIABLE) -> Limits:
    """``"max_params=5e9,max_epochs=100000"`` applied to ``base`` (default: the defaults).

    A malformed entry is a :class:`ConfigError` naming ``what`` (the variable it came from).
    """
    base = base if base is not None else Limits()
    known = set(limit_names())
    changes: dict[str, int] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        key, sep, raw = entry.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ConfigError(
                f"{what}: {entry.strip()!r} is not name=value with a known name; use e.g. "
                f"{what}=max_params=5e9,max_epochs=100000 (names: {', '.join(sorted(known))})"
            )
        try:
            changes[key] = _whole_number(raw)
        except ValueError as exc:
            raise ConfigError(f"{what}: {key}={raw.strip()!r}: {exc}") from None
    return dataclasses.replace(base, **changes)


def _whole_number(text: str) -> int:
    """``"100000"`` or ``"5e9"`` as a positive int (the values parsers, in that order)."""
    try:
        return values.positive_int(text)
    except ValueError:
        number = values.finite_float(text)
        if not float(number).is_integer():
            raise ValueError("a limit must be a whole number") from None
        return values.positive_int(number)


def default_limits() -> Limits:
    """The defaults, with :data:`LIMITS_VARIABLE` applied when it is set (read on every call)."""
    text = os.environ.get(LIMITS_VARIABLE, "")
    return parse_limits(text) if text.strip() else Limits()


# -- refusing, in one sentence ----------------------------------------------------------------
def _shown(value: Any) -> str:
    text = " ".join(repr(value).split())  # one line, whatever the value
    return text if len(text) <= 60 else text[:57] + "..."


def key_name(key: str) -> str:
    """A key as a message shows it: bare when it is a plain name, else quoted and escaped."""
    return key if key.replace(".", "_").isidentifier() else _shown(key)


def _refuse(error: Refusal, where: str, label: str, value: Any, reason: str) -> UserError:
    return error(f"{where}{label}={_shown(value)}: {reason}")


def beyond(limit: str, limits: Limits, wanted: Any) -> str:
    """The end of every refusal for a size past a limit: the limit and how to raise it."""
    return (f"the limit {limit}={getattr(limits, limit)}; if you mean it, raise it with "
            f"{LIMITS_VARIABLE}={limit}={wanted}")


def _over(error: Refusal, where: str, label: str, value: Any, limit: str, limits: Limits,
          amount: int | None = None) -> UserError:
    wanted = amount if amount is not None else value
    return _refuse(error, where, label, value, f"above {beyond(limit, limits, wanted)}")


def _parsed(parser: Callable[[Any], Any], value: Any, error: Refusal, where: str,
            label: str) -> Any:
    try:
        return parser(value)
    except (ValueError, TypeError) as exc:
        raise _refuse(error, where, label, value, str(exc) or "it is not valid") from None


def check_count(
    label: str,
    value: Any,
    limit: str,
    limits: Limits | None = None,
    *,
    minimum: int = 1,
    where: str = "",
    error: Refusal = ConfigError,
) -> int:
    """``value`` as a whole number from ``minimum`` to the limit named ``limit``.

    ``label`` is how the caller names the field (``"--fa-epochs"``, ``"arch_kwargs.d_hidden"``,
    ``"mnist1d: num_samples"``); ``where`` goes first (``"run.pt: "``).
    """
    limits = limits if limits is not None else default_limits()
    number = _whole_at_least(label, value, minimum, where=where, error=error)
    if number > getattr(limits, limit):
        raise _over(error, where, label, value, limit, limits, amount=number)
    return number


def _whole_at_least(label: str, value: Any, minimum: int, *, where: str, error: Refusal) -> int:
    if isinstance(value, bool):
        raise _refuse(error, where, label, value, "it must be a whole number, not true/false")
    # values' own whole-number parser (positive_int would refuse the 0 that num_blocks takes)
    number = _parsed(values._whole, value, error, where, label)
    if number < minimum:
        raise _refuse(error, where, label, value, f"it must be {minimum} or more")
    return number


def check_total(label: str, value: int, limit: str, limits: Limits, *, detail: str,
                where: str = "", error: Refusal = ConfigError) -> None:
    """Refuse a derived size (``detail`` says what it is made of) above the limit ``limit``."""
    if value > getattr(limits, limit):
        raise error(f"{where}{label} needs {value:,} {detail}, above "
                    f"{beyond(limit, limits, value)}")


# -- architectures ----------------------------------------------------------------------------
#: the size keywords of every built-in architecture and their defaults (a test checks them
#: against the constructors' signatures)
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "resmlp": {"d_hidden": 256, "num_blocks": 4, "residual": True, "w2_std": 0.01},
    "mlp": {"d_hidden": 256, "depth": 4, "activation": "linear", "layer_norm": True},
    "vit": {"patch_size": 4, "d_model": 128, "n_heads": 4, "num_blocks": 4, "mlp_ratio": 4.0},
    "resnet": {"width": 64, "num_blocks": 4},
}
MLP_ACTIVATIONS = ("linear", "relu", "tanh")
_IMAGE_ARCHS = ("vit", "resnet")


def check_arch_options(
    arch: str,
    options: Mapping[str, Any],
    limits: Limits | None = None,
    *,
    where: str = "",
    prefix: str = "",
    error: Refusal = ConfigError,
) -> dict[str, Any]:
    """Check a built-in architecture's keywords by type and range, before any module is built.

    ``options`` may hold ``input_shape`` and ``num_classes`` (a checkpoint's ``arch_kwargs``):
    they are checked too, with an image model's tokens.  The whole model (parameters and
    buffers, hidden elements per sample) is measured afterwards on the meta device by
    :func:`fa_checks.models.size.check_model_size`, which these bounds keep cheap.  Keywords
    the architecture does not take, and architectures that are not built in, are left to
    :func:`fa_checks.models.build_model` to refuse.
    ``prefix`` is put before each keyword in messages (``"arch_kwargs."``, ``"--fa-arch-arg "``).

    Returns the options with their values parsed (``"16"`` -> 16); others are kept as given.
    """
    limits = limits if limits is not None else default_limits()
    if arch not in ARCH_DEFAULTS:
        return dict(options)
    checked = dict(options)

    def count(key: str, limit: str, minimum: int = 1) -> None:
        if key in checked:
            checked[key] = check_count(f"{prefix}{key}", checked[key], limit, limits,
                                       minimum=minimum, where=where, error=error)

    def flag(key: str) -> None:
        if key in checked and not isinstance(checked[key], bool):
            raise _refuse(error, where, f"{prefix}{key}", checked[key],
                          "it must be true or false")

    def real(key: str, parser: Callable[[Any], float]) -> None:
        if key in checked:
            checked[key] = _parsed(parser, checked[key], error, where, f"{prefix}{key}")

    if "input_shape" in checked:
        checked["input_shape"] = check_input_shape(
            checked["input_shape"], limits, label=f"{prefix}input_shape", where=where,
            error=error)
    count("num_classes", "max_classes")
    if arch == "resmlp":
        count("d_hidden", "max_width")
        count("num_blocks", "max_blocks", minimum=0)
        flag("residual")
        real("w2_std", values.non_negative_float)
    elif arch == "mlp":
        count("d_hidden", "max_width")
        if "depth" in checked:  # weight matrices: the hidden layers (blocks) are depth - 2
            depth = _whole_at_least(f"{prefix}depth", checked["depth"], 2, where=where,
                                    error=error)
            if depth - 2 > limits.max_blocks:
                raise _over(error, where, f"{prefix}depth", depth, "max_blocks", limits,
                            amount=depth - 2)
            checked["depth"] = depth
        flag("layer_norm")
        if "activation" in checked and checked["activation"] not in MLP_ACTIVATIONS:
            raise _refuse(error, where, f"{prefix}activation", checked["activation"],
                          f"use one of {', '.join(MLP_ACTIVATIONS)}")
    elif arch == "vit":
        count("patch_size", "max_input_dim")
        count("d_model", "max_width")
        count("n_heads", "max_width")
        count("num_blocks", "max_blocks", minimum=0)
        real("mlp_ratio", values.positive_float)
        merged = {**ARCH_DEFAULTS["vit"], **checked}
        if merged["d_model"] % merged["n_heads"]:
            raise _refuse(error, where, f"{prefix}n_heads", merged["n_heads"],
                          f"it must divide d_model={merged['d_model']}")
        hidden = int(merged["d_model"] * merged["mlp_ratio"])
        if hidden > limits.max_width:
            raise _refuse(error, where, f"{prefix}mlp_ratio", merged["mlp_ratio"],
                          f"d_model x mlp_ratio = {hidden} is above "
                          f"{beyond('max_width', limits, hidden)}")
    elif arch == "resnet":
        count("width", "max_width")
        count("num_blocks", "max_blocks", minimum=0)

    if "input_shape" in checked and arch in _IMAGE_ARCHS:
        _check_image(arch, checked, limits, where=where, prefix=prefix, error=error)
    return checked


def check_input_shape(shape: Any, limits: Limits | None = None, *, label: str = "input_shape",
                      where: str = "", error: Refusal = ConfigError) -> list[int]:
    """A list of 1 to ``max_input_rank`` positive dimensions within the limits."""
    limits = limits if limits is not None else default_limits()
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise _refuse(error, where, label, shape, "it must be a list of dimensions")
    if not 1 <= len(shape) <= limits.max_input_rank:
        if len(shape) > limits.max_input_rank:
            raise _over(error, where, f"len({label})", len(shape), "max_input_rank", limits)
        raise _refuse(error, where, label, shape, "it must have at least one dimension")
    dims = [check_count(f"{label}[{i}]", dim, "max_input_dim", limits, where=where, error=error)
            for i, dim in enumerate(shape)]
    check_total(label, math.prod(dims), "max_input_features", limits,
                detail="input features", where=where, error=error)
    return dims


def _check_image(arch: str, checked: dict[str, Any], limits: Limits, *, where: str,
                 prefix: str, error: Refusal) -> None:
    shape = checked["input_shape"]
    if len(shape) != 3:
        raise _refuse(error, where, f"{prefix}input_shape", shape,
                      f"{arch} needs image inputs shaped (channels, height, width), not "
                      f"{tuple(shape)}; use arch 'resmlp' or 'mlp' for flat inputs")
    if arch == "vit":
        patch = {**ARCH_DEFAULTS["vit"], **checked}["patch_size"]
        if shape[1] % patch or shape[2] % patch:
            raise _refuse(error, where, f"{prefix}patch_size", patch,
                          f"it must divide the image size {shape[1]}x{shape[2]}")
        tokens = (shape[1] // patch) * (shape[2] // patch) + 1
        check_total(f"{prefix}patch_size", tokens, "max_tokens", limits,
                    detail="tokens per image", where=where, error=error)


# -- methods ----------------------------------------------------------------------------------
#: option names (by their ending) that size a method's work, and the limit of each
_METHOD_SIZES = (("width", "max_width"), ("depth", "max_blocks"), ("directions", "max_directions"),
                 ("epochs", "max_epochs"), ("epoch", "max_epochs"))


def check_method_options(
    method: str,
    options: Mapping[str, Any],
    limits: Limits | None = None,
    *,
    where: str = "",
    prefix: str = "",
    error: Refusal = ConfigError,
) -> dict[str, Any]:
    """Check a method's options by shape: plain values, and sizes within the limits.

    Values must be None, true/false, numbers (finite) or short text; whole-number options whose
    names end in ``width``, ``depth``, ``directions``, ``epochs`` or ``epoch`` (``vnet_width``,
    ``fd_directions``, ``switch_epoch``) are bounded by ``max_width``, ``max_blocks``,
    ``max_directions`` and ``max_epochs``, and a ``*width`` with a ``*depth`` by ``max_params``
    (a network of that many ``width x width`` layers).  Everything else is the method's own
    constructor's to check.
    """
    limits = limits if limits is not None else default_limits()
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise _refuse(error, where, f"{prefix}{_shown(key)}", value,
                          "option names must be text")
        label = f"{prefix}{key_name(key)}"
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse(error, where, label, value, "it must be a finite number")
        if isinstance(value, str) and len(value) > 200:
            raise _refuse(error, where, label, value, "text options are at most 200 characters")
        if value is not None and not isinstance(value, (bool, numbers.Real, str)):
            raise _refuse(error, where, label, value,
                          "a method option is a number, true/false, text or none")
        for ending, limit in _METHOD_SIZES:
            is_whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if key.endswith(ending) and is_whole:
                value = check_count(label, value, limit, limits, minimum=0, where=where,
                                    error=error)
                break
        checked[key] = value
    size = method_network_size(checked)
    if size is not None:
        check_total(f"{prefix}{method}", size, "max_params", limits,
                    detail="elements in its network (about width^2 x (depth+1))",
                    where=where, error=error)
    return checked


def method_network_size(options: Mapping[str, Any]) -> int | None:
    """About how many elements the network a method's ``*width`` and ``*depth`` options size
    holds (``width^2 x (depth+1)``, an upper estimate); None without both options."""
    widths = [v for k, v in options.items() if k.endswith("width") and _whole(v)]
    depths = [v for k, v in options.items() if k.endswith("depth") and _whole(v)]
    if not widths or not depths:
        return None
    return max(widths) ** 2 * (max(depths) + 1)


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# -- training ---------------------------------------------------------------------------------
def check_training(
    *,
    epochs: Any = None,
    seed: Any = None,
    batch_size: Any = None,
    lr: Any = None,
    weight_decay: Any = None,
    schedule: Any = None,
    eval_size: Any = None,
    limits: Limits | None = None,
    names: Mapping[str, str] | None = None,
    where: str = "",
    error: Refusal = ConfigError,
) -> dict[str, Any]:
    """Parse and check the training settings given (None: not given) with :mod:`values`.

    ``names`` spells each field as the caller does (``{"epochs": "--fa-epochs"}``).  Returns
    the parsed values of the fields given: epochs, batch_size and eval_size within the limits,
    a seed from 0 to 2^63-1, lr > 0, weight_decay >= 0, a known schedule.
    """
    limits = limits if limits is not None else default_limits()
    names = dict(names or {})
    out: dict[str, Any] = {}

    def label(name: str) -> str:
        return names.get(name, name)

    for name, value, limit in (("epochs", epochs, "max_epochs"),
                               ("batch_size", batch_size, "max_batch_size"),
                               ("eval_size", eval_size, "max_eval_size")):
        if value is not None:
            out[name] = check_count(label(name), value, limit, limits, where=where, error=error)
    for name, value, parser in (("seed", seed, values.seed), ("lr", lr, values.positive_float),
                                ("weight_decay", weight_decay, values.non_negative_float),
                                ("schedule", schedule, values.schedule)):
        if value is None:
            continue
        if isinstance(value, bool):
            raise _refuse(error, where, label(name), value, "it must not be true/false")
        if name == "schedule" and not isinstance(value, str):
            raise _refuse(error, where, label(name), value,
                          f"use one of {', '.join(values.SCHEDULES)}")
        out[name] = _parsed(parser, value, error, where, label(name))
    return out


__all__ = [
    "ARCH_DEFAULTS",
    "beyond",
    "LIMITS_VARIABLE",
    "Limits",
    "check_arch_options",
    "check_count",
    "check_input_shape",
    "check_method_options",
    "check_total",
    "check_training",
    "default_limits",
    "key_name",
    "limit_names",
    "method_network_size",
    "parse_limits",
]
