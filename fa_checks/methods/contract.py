"""The method contract, checked before any work: a mistake in a rule is the user's to fix.

Two checks, each a :class:`~.base.MethodError` (the command line exits 2, pytest 4) whose one
sentence says what is wrong and what is expected:

* :func:`check_rule_class`, when a rule is resolved: it defines what it must (``step``, or
  ``local_credit`` for a local-loss rule) and every hook it defines takes the arguments
  fa-checks passes (``step(self, x, y)``, ``local_credit(self, hidden, logits, y)``, ...);
* :func:`check_figures` and :func:`fit_signals`, on the first batch: ``step`` returns a dict
  of figures with ``loss``, each a number or a one-element tensor; ``credit`` returns None or
  one signal per hidden state, shaped like it or per sample ``(N, d)``, which is spread over a
  hidden state's positions (vit tokens, resnet maps) here, once for every rule.

An exception raised inside the rule's own code is not checked here: it stays the user's,
naming its line (:func:`fa_checks.errors.as_user_error`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ..references import defined_at, is_library_code
from .base import Method, MethodError

#: every hook fa-checks may call on a rule: (positional arguments after self, keywords)
HOOKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "setup": (("model", "num_classes", "generator"), ("optimizer",)),
    "step": (("x", "y"), ()),
    "credit": (("x", "y"), ()),
    "local_credit": (("hidden", "logits", "y"), ()),
    "feedback_specs": ((), ()),
    "epoch_start": (("epoch", "epochs"), ()),
    "init_state": (("generator",), ()),
    "draw_feedback": (("generator",), ()),
    "redraw_feedback": (("generator",), ()),
    "after_backward": ((), ()),
    "check_model": (("model",), ()),
    "trainable_parameters": ((), ()),
    "state_dict": ((), ()),
    "load_state_dict": (("state",), ()),
}


def spelled(hook: str) -> str:
    """``"step(self, x, y)"``: how the contract spells a hook."""
    positional, keywords = HOOKS[hook]
    extra = [f"{k}=..." for k in keywords]
    return f"{hook}({', '.join(['self', *positional, *extra])})"


def check_rule_class(cls: type, name: str) -> None:
    """Raise a MethodError if ``cls`` misses what a rule must define or defines a hook whose
    signature does not take what fa-checks passes.  Built-in rules are held to it by tests."""
    from .local import LocalLossMethod

    who = f"method {name!r} ({cls.__name__})"
    if issubclass(cls, LocalLossMethod):
        if cls.step is LocalLossMethod.step and cls.local_credit is LocalLossMethod.local_credit:
            raise MethodError(
                f"{who} defines no {spelled('local_credit')}: a local-loss rule returns its "
                "credit signals [a_0..a_L] there (or defines its own step(self, x, y))")
    elif issubclass(cls, Method) and cls.step is Method.step:
        raise MethodError(
            f"{who} defines no {spelled('step')}: it must do one update on the batch and "
            "return its figures, at least {'loss': ...} (or subclass "
            "fa_checks.methods.local.LocalLossMethod and define local_credit)")
    for hook in HOOKS:
        static = inspect.getattr_static(cls, hook, None)
        if static is None:
            continue
        function = getattr(cls, hook)
        if not callable(function):
            raise MethodError(f"{who}: {hook} is a {type(static).__name__}, not a method; "
                              f"define {spelled(hook)}")
        if isinstance(static, (staticmethod, classmethod)):
            continue  # bound already: fa-checks never relies on these two kinds
        _check_signature(who, hook, function)


def _check_signature(who: str, hook: str, function: Any) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C function: cannot tell, let the call say
    positional, keywords = HOOKS[hook]
    calls = [((None, *([None] * len(positional))), {})]
    if keywords:  # setup is called with and without its optimizer
        calls.append(((None, *([None] * len(positional))), dict.fromkeys(keywords)))
    for args, kwargs in calls:
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            where = defined_at(function)
            shown = f"{hook}{signature}"
            raise MethodError(
                f"{who}: {shown}{f' ({where})' if where else ''} does not take what fa-checks "
                f"passes; define it as {spelled(hook)}"
            ) from None


def check_figures(figures: Any, name: str) -> dict[str, Any]:
    """``figures`` if ``step`` returned a dict with ``loss`` whose values are numbers or
    one-element tensors (checked on the first batch); else a MethodError saying so."""
    expected = ("step(self, x, y) must return a dict of figures with 'loss', each a number or "
                "a one-element tensor")
    if not isinstance(figures, dict):
        raise MethodError(f"method {name!r}: step returned {_what(figures)}; {expected}")
    if "loss" not in figures:
        raise MethodError(f"method {name!r}: step returned figures {sorted(map(str, figures))} "
                          f"without 'loss'; {expected}")
    for key, value in figures.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number or (isinstance(value, Tensor) and value.numel() == 1)):
            raise MethodError(f"method {name!r}: step's figure {key!r} is {_what(value)}; "
                              f"{expected}")
    return figures


def fit_signals(method: Any, signals: Any, hidden: Sequence[Tensor], anatomy: Any = None, *,
                hook: str = "credit") -> list[Tensor]:
    """``signals`` (what ``method``'s ``hook`` returned) as one tensor per hidden state, each
    shaped like it.

    A per-sample signal ``(N, d)`` for a hidden state with positions (vit ``(N, T, d)``,
    resnet ``(N, C, H, W)``) is spread over its positions with the anatomy's ``broadcast``: a
    rule written for flat models works on every architecture.  Anything else is a MethodError
    naming the shapes returned and expected.  ``anatomy``: the model's (the method's own when
    None).
    """
    from ..models.anatomy import anatomy_of

    name = rule_label(method)
    if anatomy is None:  # a duck-typed rule may keep neither
        anatomy = getattr(method, "anatomy", None) or anatomy_of(getattr(method, "model", None))
    expected = [tuple(h.shape) for h in hidden]
    per_sample = [(e[0], anatomy.feature_dim(h)) for e, h in zip(expected, hidden, strict=True)]
    either = "" if per_sample == expected else f" or per sample {_shapes(per_sample)}"
    rule = (f"it must return {len(hidden)} signals [a_0..a_L], one per hidden state, each "
            f"shaped like it {_shapes(expected)}{either}")
    if not isinstance(signals, (list, tuple)) or not all(isinstance(a, Tensor) for a in signals):
        raise MethodError(f"method {name!r}: {hook} returned {_what(signals)}; {rule}")
    if len(signals) != len(hidden):
        raise MethodError(f"method {name!r}: {hook} returned {len(signals)} signals for "
                          f"{len(hidden)} hidden states h_0..h_L; {rule}")
    fitted: list[Tensor] = []
    spread: dict[int, Tensor] = {}  # one tensor given twice (DFA's a_0 = a_1) stays shared
    for a, h, flat in zip(signals, hidden, per_sample, strict=True):
        if tuple(a.shape) == tuple(h.shape):
            fitted.append(a)
        elif h.dim() > 2 and tuple(a.shape) == flat:
            if id(a) not in spread:
                spread[id(a)] = anatomy.broadcast(a, h)
            fitted.append(spread[id(a)])
        else:
            shapes = _shapes([tuple(s.shape) for s in signals])
            raise MethodError(f"method {name!r}: {hook} returned signals shaped {shapes}; {rule}")
    return fitted


def rule_label(method: Any) -> str:
    """How messages name a rule: its registered name, else ``module:Class``."""
    cls = type(method)
    if cls.__module__ == "builtins":  # None: credit given without its rule
        return "credit"
    if is_library_code(cls):
        return str(getattr(cls, "name", cls.__name__))
    return f"{cls.__module__}:{cls.__qualname__}"


def _shapes(shapes: Sequence[tuple[int, ...]]) -> str:
    """A list of shapes, runs of equal ones written once with a count (L may be large)."""
    parts: list[str] = []
    for shape in shapes:
        text = str(tuple(shape))
        if parts and parts[-1].split(" x")[0] == text:
            count = int(parts[-1].split(" x")[1]) + 1 if " x" in parts[-1] else 2
            parts[-1] = f"{text} x{count}"
        else:
            parts.append(text)
    return "[" + ", ".join(parts) + "]"


def _what(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor shaped {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} {_kinds(value)}"
    return f"a {type(value).__name__}" if value is not None else "None"


def _kinds(items: Sequence[Any]) -> str:
    kinds = sorted({type(v).__name__ for v in items})
    return "items" if not kinds else f"{'/'.join(kinds)} items"


__all__ = ["HOOKS", "check_figures", "check_rule_class", "fit_signals", "rule_label", "spelled"]
