"""The user's own model as an architecture: a factory named ``module:callable`` or by an entry
point of the group ``fa_checks.models``.

A factory is called ``factory(input_shape=..., num_classes=..., **keywords)`` (the keywords
come from ``--arch-arg`` / ``arch_options``) and returns a module the anatomy can read
(:mod:`.anatomy`).  It is an architecture everywhere a built-in is: trained, cached (its
source file in the cache key), saved in checkpoints that name it and rebuilt from them, under
the trust rule of :mod:`fa_checks.references` (a file naming ``module:callable`` is refused
untrusted; an entry point is fine).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from ..references import entry_point, entry_point_names, import_reference
from .base import ModelError

ENTRY_POINT_GROUP = "fa_checks.models"
#: the keywords fa-checks itself passes to every factory
GIVEN = ("input_shape", "num_classes")


def model_factory(arch: str, *, allow_import: bool = True,
                  builtins: Sequence[str] = ()) -> Callable[..., nn.Module]:
    """The factory ``arch`` names: an entry point of ``fa_checks.models`` or ``module:callable``
    (imported only with ``allow_import``: a name the user typed, or a trusted file)."""
    if not isinstance(arch, str) or not arch.strip():
        raise ModelError(f"architecture {arch!r} must be a name or module:callable")
    factory = entry_point(ENTRY_POINT_GROUP, arch, ModelError)
    if factory is None:
        if ":" not in arch:
            known = sorted({*builtins, *entry_point_names(ENTRY_POINT_GROUP)})
            raise ModelError(f"unknown architecture {arch!r}; choose one of {', '.join(known)} "
                             "or name your own model factory as module:callable")
        factory = import_reference(arch, what="model factory", example="mymodels:make_net",
                                   spelled="module:callable",
                                   group=ENTRY_POINT_GROUP, allow_import=allow_import,
                                   error=ModelError)
    if not callable(factory) or isinstance(factory, nn.Module):
        raise ModelError(f"architecture {arch!r} names a {type(factory).__name__}, not a model "
                         "factory: give a function or class taking input_shape=, num_classes= "
                         "and keywords and returning an nn.Module")
    _check_takes_given(arch, factory)
    return factory


def _check_takes_given(arch: str, factory: Callable[..., Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(input_shape=(1,), num_classes=2)
    except TypeError:
        raise ModelError(
            f"model factory {arch!r}{signature} cannot be called as "
            f"{arch.rpartition(':')[2]}(input_shape=..., num_classes=...): give it those two "
            "keywords (other keywords need defaults or come from the arch options)"
        ) from None


def factory_keywords(factory: Callable[..., Any]) -> tuple[list[str], bool]:
    """The keywords a factory names besides ``input_shape`` and ``num_classes``, and whether it
    takes any keyword (a ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return [], True
    named = [name for name, p in params.items() if name not in GIVEN and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def factory_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keywords' defaults (a cache key's model part, so a default given or left out is
    the same run)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.default for name, p in params.items()
            if name not in GIVEN and p.default is not inspect.Parameter.empty
            and isinstance(p.default, (bool, int, float, str, type(None)))}


def build_from_factory(arch: str, factory: Callable[..., nn.Module], *,
                       input_shape: tuple[int, ...], num_classes: int,
                       kwargs: Mapping[str, Any]) -> nn.Module:
    """Call the factory and check that what it returns is a model the anatomy can read.

    An exception inside the factory is the user's own (it passes through, and each face names
    its line: :func:`fa_checks.errors.as_user_error`)."""
    from .anatomy import anatomy_of

    named, any_keyword = factory_keywords(factory)
    unknown = sorted(set(kwargs) - set(named))
    if unknown and not any_keyword:
        raise ModelError(f"model factory {arch!r} takes no keyword {', '.join(unknown)}; it "
                         f"takes {', '.join(named) or 'none besides input_shape, num_classes'}")
    model = factory(input_shape=tuple(input_shape), num_classes=int(num_classes), **kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model factory {arch!r} returned a {type(model).__name__}; it must "
                         "return an nn.Module with embed, blocks and out_head (or embed, step, "
                         "readout and num_blocks)")
    _probe(arch, anatomy_of(model), tuple(input_shape))  # an AnatomyError names what is missing
    return model


def _probe(arch: str, anatomy: Any, input_shape: tuple[int, ...]) -> None:
    """One forward pass of two zero inputs shaped like the data's: a model that cannot take
    them is refused now, in one sentence, not as a fault deep in the trainer."""
    import torch

    from ..errors import one_line, user_code_frame
    from .anatomy import eval_mode

    params = next(anatomy.model.parameters(), None)
    if params is not None and params.device.type == "meta":
        return  # shapes only (a checkpoint's check): the forward may need real storage
    probe = torch.zeros(2, *input_shape, device=None if params is None else params.device)
    try:
        with eval_mode(anatomy.model), torch.no_grad():
            anatomy.logits(probe)
    except Exception as exc:
        where = user_code_frame(exc.__traceback__)
        raise ModelError(
            f"model factory {arch!r} built a {type(anatomy.model).__name__} that cannot take "
            f"inputs shaped {input_shape}: {type(exc).__name__}: {one_line(exc)[:300]}"
            + (f" (in your code: {where})" if where else "")) from None


__all__ = ["ENTRY_POINT_GROUP", "build_from_factory", "factory_defaults", "factory_keywords",
           "model_factory"]
