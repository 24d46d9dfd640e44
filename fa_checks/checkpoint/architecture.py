"""The architecture a checkpoint names: a built-in name, its keywords within the limits, and the
saved state against the model those keywords describe.

That model is built on the meta device (shapes, no storage) once the keywords are bounded, and
it alone says which keys and shapes the state must hold and how large it is: a file that
declares a model larger than its tensors costs a meta build, bounded by ``max_blocks``, and no
allocation of weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import UserError, one_line
from ..limits import Limits, check_arch_options, default_limits
from ..models.size import build_on_meta, check_model_size
from .errors import CheckpointError, machine_fault, preview, short


def architecture(path: Path, arch: Any, *, allow_import: bool = False) -> str:
    """``arch`` if it names a built-in architecture or a model factory: an entry point of
    ``fa_checks.models``, or ``module:callable`` only with ``allow_import`` (a trusted file,
    or a name the user gave); untrusted, such a name is refused before anything is imported."""
    from ..models import MODELS, ModelError, model_factory

    if not isinstance(arch, str) or len(arch) > 300:
        raise CheckpointError(f"{path}: 'arch' must be an architecture name, got {short(arch)}")
    if arch not in MODELS:
        try:
            model_factory(arch, allow_import=allow_import, builtins=list(MODELS))
        except ModelError as exc:
            raise CheckpointError(f"{path}: {one_line(exc)}") from None
    return arch


def checked_arch(path: Path, arch: str, arch_kwargs: dict[str, Any],
                 limits: Limits) -> dict[str, Any]:
    """``arch_kwargs`` parsed, if ``arch`` takes every one and each is within ``limits``."""
    from ..models import MODELS, model_keywords, takes_any_keyword

    # a factory with **kwargs takes any keyword: its own code bounds them
    if arch not in MODELS and takes_any_keyword(arch):
        return check_arch_options(arch, arch_kwargs, limits, where=f"{path}: ",
                                      prefix="arch_kwargs.", error=CheckpointError)
    bad_keys = [k for k in arch_kwargs if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"{path}: 'arch_kwargs' keys must be text, not {preview(bad_keys)}")
    takes = model_keywords(arch)
    unknown = sorted(set(arch_kwargs) - {"input_shape", "num_classes", *takes})
    if unknown:
        raise CheckpointError(
            f"{path}: arch_kwargs {preview(unknown)} do not build {arch!r}: it takes "
            f"{', '.join(takes)}")
    return check_arch_options(arch, arch_kwargs, limits, where=f"{path}: ",
                              prefix="arch_kwargs.", error=CheckpointError)


def check_state_fits(
    path: Path,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    state: Mapping[str, Tensor],
    model: nn.Module | None = None,
    *,
    limits: Limits | None = None,
    allow_import: bool = False,
) -> None:
    """Raise a CheckpointError naming every key and shape where ``state`` misfits ``arch``.

    Without ``model``, the keywords are checked against ``limits`` and the model they declare is
    built on the meta device and measured (:func:`meta_model`).
    """
    architecture(path, arch, allow_import=allow_import)
    if model is None:
        limits = limits if limits is not None else default_limits()
        model = meta_model(path, arch, checked_arch(path, arch, dict(arch_kwargs), limits), limits)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and expected[k] != found[k]]
    if missing:
        problems.append(f"missing {preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {preview(unexpected)}")
    if wrong:
        shown = [f"{k}: file {found[k]}, architecture {expected[k]}" for k in wrong[:6]]
        more = f" and {len(wrong) - 6} more" if len(wrong) > 6 else ""
        problems.append(f"shape mismatch {'; '.join(shown)}{more}")
    if problems:
        raise CheckpointError(
            f"{path}: the model state does not fit {arch} with {short(dict(arch_kwargs))}: "
            + " | ".join(problems)
        )


def meta_model(path: Path, arch: str, arch_kwargs: Mapping[str, Any], limits: Limits) -> nn.Module:
    """The model ``arch_kwargs`` (checked by :func:`checked_arch`) declare, built on the meta
    device, if its state and hidden state are within ``limits``."""
    from ..models import MODELS, ModelError, build_model

    kwargs = dict(arch_kwargs)
    input_shape = tuple(kwargs.pop("input_shape"))
    num_classes = kwargs.pop("num_classes")
    if arch not in MODELS:  # a user's factory (resolved under the trust rule already)
        from ..limits import check_input_shape

        check_input_shape(input_shape, limits, label="arch_kwargs.input_shape",
                          where=f"{path}: ", error=CheckpointError)
        try:
            return build_on_meta(lambda: build_model(arch, input_shape=input_shape,
                                                     num_classes=num_classes, **kwargs))
        except UserError as exc:
            raise CheckpointError(f"{path}: cannot build {arch!r}: {one_line(exc)}") from None
        except Exception as exc:  # the factory's own code, on the meta device
            raise CheckpointError(f"{path}: cannot build {arch!r}: {type(exc).__name__}: "
                                  f"{one_line(exc)}") from None
    try:  # the class itself: build_model would measure on meta, then build a second time
        model = build_on_meta(lambda: MODELS[arch](input_shape=input_shape,
                                                   num_classes=num_classes, **kwargs))
    except (ModelError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {arch!r}: {one_line(exc)}") from None
    except Exception as exc:  # memory
        raise machine_fault(path, exc, f"building its {arch} on the meta device") from None
    check_model_size(model, limits, label=f"arch_kwargs.{arch}", where=f"{path}: ",
                     error=CheckpointError)
    return model
