"""The interface every training rule implements, and the registry of rules by name.

A method is set up on a model, then ``step(x, y)`` performs one update of every trainable tensor
it owns (the model's parameters and any feedback it learns).  ``credit(x, y)`` returns the signal
it would use for each hidden state, so the protocol's credit metrics work for every rule.

Credit convention: ``credit(x, y)`` returns ``[a_0, ..., a_L]``, one tensor per hidden state and
shaped like it.  ``a_{l+1}`` is the signal that trains block ``l`` (its branch output feeds
``h_{l+1}``, so ``a_{l+1}`` stands in for ``dLoss/dh_{l+1}``) and ``a_0`` the one that trains the
embedding.  For backpropagation it is the true per-sample gradient.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..models.anatomy import Anatomy, anatomy_of
from ..references import TRUST_FLAGS  # noqa: F401 - re-exported: messages name the flags

ENTRY_POINT_GROUP = "fa_checks.methods"

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]
#: what ``step`` returns: figure name -> a number or a one-element tensor
Figures = dict[str, "float | Tensor"]


def default_optimizer(params: Iterable[Any]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)


class MethodError(UserError):
    """An unknown method, a bad method option, or a method used where it does not apply."""


class Method:
    """Base class of a training rule.  Subclasses set ``name`` and implement ``step``.

    Keyword options are given to ``__init__`` and kept in ``self.options`` (they travel in the
    checkpoint); tensors that define the rule (feedback matrices) go in ``state_dict``.
    """

    name: str = "method"
    #: the architectures the rule applies to; None means any model with an anatomy
    architectures: tuple[str, ...] | None = None
    #: why the rule is limited to ``architectures`` (ends the refusal's message)
    architecture_reason: str = ""

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = dict(options)
        self.model: nn.Module | None = None
        self.anatomy: Anatomy | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.num_classes = 0
        #: the shape of one input sample, when known (the trainer sets it before ``setup``)
        self.input_shape: tuple[int, ...] | None = None
        #: the generator ``setup`` was given (seeded from the run's seed)
        self.generator: torch.Generator | None = None

    # -- life cycle ------------------------------------------------------------------------
    def setup(
        self,
        model: nn.Module,
        num_classes: int,
        generator: torch.Generator,
        optimizer: OptimizerFactory = default_optimizer,
    ) -> None:
        """Attach to ``model``, draw any random feedback from ``generator``, build the optimizer.

        ``generator`` is kept as ``self.generator`` (seeded from the run's seed), for a rule
        that draws again later (feedback redrawn every epoch, random directions)."""
        self.check_model(model)
        self.model = model
        self.anatomy = anatomy_of(model)
        self.num_classes = int(num_classes)
        self.generator = generator
        self.init_state(generator)
        self.optimizer = optimizer(self.trainable_parameters())

    def check_model(self, model: nn.Module) -> None:
        """Raise a MethodError naming the architecture if the rule cannot train ``model``;
        ``setup`` calls it first.  By default: the model's arch must be in ``architectures``."""
        arch = (getattr(model, "spec", None) or {}).get("arch")
        if self.architectures is not None and arch not in self.architectures:
            reason = f": {self.architecture_reason}" if self.architecture_reason else ""
            raise MethodError(
                f"method {self.name!r} applies to {', '.join(self.architectures)}, "
                f"not {arch!r}{reason}"
            )

    @classmethod
    def model_overrides(cls, arch: str) -> dict[str, Any]:
        """Model keywords the rule forces when the trainer builds its model (e.g. no blocks)."""
        return {}

    def init_state(self, generator: torch.Generator) -> None:
        """Draw feedback matrices and other rule state; nothing by default."""

    def trainable_parameters(self) -> list[Any]:
        """Parameters (or param groups) the optimizer updates; all that require grad by default."""
        assert self.model is not None
        return [p for p in self.model.parameters() if p.requires_grad]

    def step(self, x: Tensor, y: Tensor) -> Figures:  # pragma: no cover - abstract
        """One update on the batch; returns figures for the history (at least ``loss``): numbers
        or one-element tensors, which the trainer keeps on the device until the epoch ends."""
        raise NotImplementedError

    def credit(self, x: Tensor, y: Tensor) -> list[Tensor] | None:
        """``[a_0, ..., a_L]`` (see the module docstring), or None if the rule has none."""
        return None

    def epoch_start(self, epoch: int, epochs: int) -> None:
        """Called before each epoch (1-based), for rules with schedules."""

    def redraw_feedback(self, generator: torch.Generator) -> bool:
        """Replace random feedback by a fresh draw (for the chance-level null); False if none."""
        return False

    # -- model facts (for rules that size their own state) ----------------------------------
    def model_device(self) -> torch.device:
        """The device of the model's parameters (the CPU for a model without any)."""
        assert self.model is not None
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def model_dtype(self) -> torch.dtype:
        """The dtype of the model's floating-point parameters."""
        assert self.model is not None
        for tensor in self.model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def feature_dims(self) -> list[int]:
        """Feature size of each hidden state ``[d_0..d_L]`` (channels for convolutional maps),
        read off a probe forward pass of two zero inputs shaped like the data's (the model's
        ``spec``, else ``self.input_shape``, which the trainer sets before ``setup``)."""
        from ..models.anatomy import eval_mode

        if self.model is None:
            raise MethodError(f"method {self.name!r} is not set up: call setup(model, ...) first")
        anatomy = self.anatomy if self.anatomy is not None else anatomy_of(self.model)
        model = anatomy.model
        spec = getattr(model, "spec", None)
        input_shape = (spec.get("kwargs", {}).get("input_shape")
                       if isinstance(spec, Mapping) else None) or getattr(self, "input_shape", None)
        if input_shape is None:
            for attribute in ("d_hidden", "d_model", "width"):
                size = getattr(model, attribute, None)
                if isinstance(size, int):
                    return [size] * (anatomy.num_blocks + 1)
            raise MethodError(
                f"method {self.name!r} cannot tell the hidden sizes of {type(model).__name__}: "
                "set method.input_shape to the data's input shape before setup (the trainer "
                "does), or build the model with fa_checks.build_model"
            )
        probe = torch.zeros(2, *input_shape, device=self.model_device(), dtype=self.model_dtype())
        with eval_mode(model), torch.no_grad():
            hidden = anatomy.hidden_states(probe)
        return [anatomy.feature_dim(h) for h in hidden]

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state:
            raise MethodError(f"method {self.name!r} keeps no state, got keys {sorted(state)}")


# -- registry ----------------------------------------------------------------------------
_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    _load_builtins()
    names = set(_REGISTRY)
    names.update(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def _load_builtins() -> None:
    importlib.import_module("fa_checks.methods.builtins")


def method_class(name: str, *, allow_import: bool = True) -> type[Method]:
    """Resolve a built-in name, an entry point of ``fa_checks.methods``, or ``module:Class``,
    and check the class against the method contract (:mod:`.contract`) before any work.

    ``allow_import=False`` is for names read from a file someone else may have written: only
    built-ins and installed entry points resolve, and a ``module:Class`` is refused without
    importing anything (importing a module runs its top-level code).  A name the user typed
    (``--fa-method mypkg.rules:Rule``) imports, as ``pytest -p`` does.
    """
    from ..references import entry_point, import_reference

    if not isinstance(name, str) or not name.strip():
        raise MethodError(f"method name {name!r} must be a non-empty name or module:Class")
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    loaded = entry_point(ENTRY_POINT_GROUP, name, MethodError)
    if loaded is not None:
        return _checked(loaded, name)
    if ":" not in name:
        raise MethodError(
            f"unknown method {name!r}; choose one of {', '.join(available_methods())} "
            "or name your own as module:Class"
        )
    target = import_reference(name, what="method", example="mypkg.rules:SignSymmetry",
                              spelled="module:Class",
                              group=ENTRY_POINT_GROUP, allow_import=allow_import,
                              error=MethodError)
    return _checked(target, name)


def _checked(obj: Any, name: str) -> type[Method]:
    from .contract import check_rule_class

    needed = ("setup", "step", "credit", "state_dict", "load_state_dict")
    if isinstance(obj, type) and (issubclass(obj, Method) or all(
            callable(getattr(obj, a, None)) for a in needed)):
        check_rule_class(obj, name)  # duck-typed user rules too
        return obj
    raise MethodError(
        f"{name!r} is not a training method: it needs methods {', '.join(needed)} "
        "(subclass fa_checks.Method)"
    )


def method_reference(method: Any) -> str:
    """The name that resolves back to ``type(method)``: its registered name, else
    ``module:Class`` (what a checkpoint stores so :func:`method_class` can rebuild the rule)."""
    cls = type(method)
    name = getattr(cls, "name", None)
    if isinstance(name, str):
        try:
            if method_class(name) is cls:
                return name
        except MethodError:
            pass
    return f"{cls.__module__}:{cls.__qualname__}"


def method_option_names(cls: type) -> list[str]:
    """The options the constructor of the rule ``cls`` names (empty for a rule without)."""
    if cls.__init__ is Method.__init__:
        return []
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return []
    return [name for name, p in params.items() if name != "self"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def method_takes_option(cls: type, key: str) -> bool:
    """Whether the constructor of ``cls`` takes ``key``: by name, or through its own ``**``.

    The base class's generic ``**options`` does not count: a rule that defines no constructor
    (``bp``) takes no options, whatever it would silently accept.
    """
    if cls.__init__ is Method.__init__:
        return False
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return True  # cannot tell: let the constructor itself refuse
    return key in method_option_names(cls) or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def get_method(name: str, **options: Any) -> Method:
    """An instance of the method ``name`` with ``options``; bad options are a MethodError."""
    return method_from_name(name, options)


def method_from_name(
    name: str, options: Mapping[str, Any], *, allow_import: bool = True
) -> Method:
    """Like :func:`get_method`; ``allow_import=False`` for a name read from a file (see
    :func:`method_class`)."""
    cls = method_class(name, allow_import=allow_import)
    unknown = [key for key in options if not method_takes_option(cls, key)]
    if unknown:
        takes = method_option_names(cls)
        raise MethodError(
            f"bad option for method {name!r}: no option {', '.join(map(repr, unknown))} "
            f"({'it takes ' + ', '.join(takes) if takes else 'it takes no options'})"
        )
    try:
        return cls(**options)
    except TypeError as exc:
        raise MethodError(f"bad option for method {name!r}: {exc}") from None
