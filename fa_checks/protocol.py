"""The evaluation protocol: three diagnostics, a verdict, and the credit metrics, as a Report.

===  =====================  ===========================================================  ======
id   name                   quantity                                                     fires
===  =====================  ===========================================================  ======
D1   scale stability        max over blocks of (median per-sample ||h_{l+1}||) /         > 50
                            (median per-sample ||h_l||)
D2   reference validity     median per-sample norm of each sample's own loss gradient    < floor
                            at the deepest hidden state h_L
D3   depth utility          test accuracy minus the frozen-blocks baseline, in pp        < 2 pp
COS  credit cosine (opt-in) mean over layers 1..L of the mean per-sample cosine          < min
RHO  credit rho (opt-in)    mean over layers 1..L of the perturbation correlation        < min
===  =====================  ===========================================================  ======

The verdict is ``PASS`` or ``FAIL(`` + the firing ids joined by ``+`` + ``)``, in the order of
the table; ``mode1`` (the silent failure: the stream explodes behind a terminal LayerNorm and
the BP reference collapses) is D1 and D2 together.

D2 is batch-size independent: it is the gradient of each sample's *own* loss (the gradient of
the summed per-sample losses), where the research code took the mean loss, whose per-sample
gradients shrink as 1/N.  The default floor 1.28e-5 is the research code's floor at its eval
batch of 128 (``10 * 1e-8 * 128``).

Everything non-finite (a diverged model) makes the diagnostic that sees it fire, with a
sentence saying where; nothing here raises on NaN or Inf, and nothing non-finite passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from . import metrics
from .anatomy import Anatomy, anatomy_of, eval_mode, per_sample_gradients
from .files import json_safe

#: the research code's D2 floor at its eval batch: 10 x the 1e-8 cosine clamp x 128 samples
DEFAULT_GRAD_FLOOR = 10 * 1e-8 * 128

DIAGNOSTIC_IDS = ("D1", "D2", "D3", "COS", "RHO")

#: D3's margin in pp is rounded to this many decimals before it is compared
MARGIN_DECIMALS = 9


# -- numbers in sentences and JSON -----------------------------------------------------------
def format_number(x: float | None) -> str:
    """A compact number for a sentence or a table: 1.293, 8433, 1.02e+04, 3.60e-09, NaN, Inf."""
    if x is None:
        return "n/a"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.2e}"


_fmt = format_number  # short name for the sentences below


def _signed(x: float | None) -> str:
    """A figure in [-1, 1] (a cosine, a correlation): +0.031."""
    return f"{x:+.3f}" if _finite(x) else _fmt(x)


_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _decode(value: Any) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# -- thresholds ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """The limits of the protocol; ``min_cosine`` and ``min_rho`` are opt-in gates (None: off).

    The credit gates compare the mean over the deep layers ``h_1..h_L`` (the embedding's layer
    ``h_0`` is left out, as in the research code) and add ``COS`` / ``RHO`` to the verdict.
    """

    max_growth: float = 50.0
    grad_floor: float = DEFAULT_GRAD_FLOOR
    min_margin_pp: float = 2.0
    min_cosine: float | None = None
    min_rho: float | None = None

    def __post_init__(self) -> None:
        checks = {
            "max_growth": (self.max_growth, lambda v: v > 0, "a positive number"),
            "grad_floor": (self.grad_floor, lambda v: v >= 0, "a number >= 0"),
            "min_margin_pp": (self.min_margin_pp, lambda v: True, "a finite number of pp"),
            "min_cosine": (self.min_cosine, lambda v: -1 <= v <= 1, "None or within [-1, 1]"),
            "min_rho": (self.min_rho, lambda v: -1 <= v <= 1, "None or within [-1, 1]"),
        }
        for name, (value, ok, what) in checks.items():
            if value is None and name in ("min_cosine", "min_rho"):
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and ok(value)):
                raise ValueError(f"Thresholds.{name} must be {what}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown threshold {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)


# -- results ---------------------------------------------------------------------------------
@dataclass
class ScaleStability:
    """D1: growth of the median per-sample hidden norm across each block."""

    max_growth: float
    per_block_growth: list[float]
    hidden_norms: list[float]
    threshold: float
    fires: bool
    explanation: str
    #: the block with the largest growth (or the first non-finite one); None without blocks
    worst_block: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class ReferenceValidity:
    """D2: the size of the BP reference, each sample's own loss gradient, at every layer."""

    g_L: float  # noqa: N815 - the paper's symbol
    grad_norms: list[float]
    floor: float
    fires: bool
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class DepthUtility:
    """D3: what the trained blocks add over frozen random blocks; ``fires`` None when skipped."""

    margin_pp: float | None
    baseline_acc: float | None
    threshold_pp: float
    fires: bool | None
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass
class CreditSummary:
    """Per-layer credit metrics (index l is hidden state h_l; None where a layer has no signal).

    ``cosine``: mean per-sample cosine with each sample's own BP gradient; ``pooled_cosine``:
    the closed-form limit of ``rho``; ``rho``: perturbation correlation; ``nudging``: mean loss
    change after a small step along the signal (negative is useful); ``null_mean`` /
    ``null_std``: the cosine with freshly drawn feedback (None for rules without random
    feedback).  ``deep_*``: means over layers 1..L.  ``cosine_fires`` / ``rho_fires``: the opt-in
    gates (None when off or not measurable).
    """

    cosine: list[float | None]
    pooled_cosine: list[float | None]
    rho: list[float | None]
    nudging: list[float | None]
    null_mean: list[float] | None = None
    null_std: list[float] | None = None
    null_draws: int = 0
    deep_cosine: float | None = None
    deep_rho: float | None = None
    null_deep_mean: float | None = None
    null_deep_std: float | None = None
    min_cosine: float | None = None
    min_rho: float | None = None
    cosine_fires: bool | None = None
    rho_fires: bool | None = None
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


_SECTIONS = {"D1": ScaleStability, "D2": ReferenceValidity, "D3": DepthUtility}


@dataclass
class Report:
    """Everything the protocol found about one model (a checkpoint or a method + seed).

    ``verdict`` and ``mode1`` are derived from the diagnostics, so they cannot disagree with
    them.  ``subject`` is free metadata set by callers (id, method, seed, path).
    """

    test_acc: float
    d1: ScaleStability
    d2: ReferenceValidity
    d3: DepthUtility
    credit: CreditSummary | None = None
    num_samples: int | None = None
    subject: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """The ids of the firing diagnostics, in the table's order."""
        fired = {
            "D1": self.d1.fires,
            "D2": self.d2.fires,
            "D3": bool(self.d3.fires),
            "COS": bool(self.credit and self.credit.cosine_fires),
            "RHO": bool(self.credit and self.credit.rho_fires),
        }
        return [name for name in DIAGNOSTIC_IDS if fired[name]]

    @property
    def verdict(self) -> str:
        failures = self.failures
        return "PASS" if not failures else f"FAIL({'+'.join(failures)})"

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def divergence(self) -> str | None:
        """Why the model diverged (NaN or Inf in its accuracy, hidden states or gradients), or
        None.  A diverged model passes no diagnostic, whatever the others found."""
        values = [self.test_acc, *self.d1.hidden_norms, *self.d2.grad_norms]
        if all(v is None or math.isfinite(float(v)) for v in values):
            return None
        forward_finite = all(math.isfinite(float(v)) for v in self.d1.hidden_norms)
        return self.d2.explanation if forward_finite else self.d1.explanation

    @property
    def mode1(self) -> bool:
        """The silent failure: the stream exploded (D1) and the BP reference collapsed (D2)."""
        return self.d1.fires and self.d2.fires

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; non-finite numbers become "NaN", "Infinity", "-Infinity"."""
        return {
            "verdict": self.verdict,
            "mode1": self.mode1,
            "test_acc": json_safe(self.test_acc),
            "num_samples": self.num_samples,
            "D1": self.d1.to_dict(),
            "D2": self.d2.to_dict(),
            "D3": self.d3.to_dict(),
            "credit": None if self.credit is None else self.credit.to_dict(),
            "subject": dict(self.subject),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Rebuild a report from :meth:`to_dict` output (``verdict``/``mode1`` are recomputed)."""
        missing = [key for key in ("test_acc", *_SECTIONS) if key not in data]
        if missing:
            raise ValueError(f"not a fa-checks report: missing {', '.join(missing)}")
        sections = {}
        for key, section_cls in _SECTIONS.items():
            try:
                sections[key] = section_cls(**_decode(data[key]))
            except TypeError as exc:
                raise ValueError(f"bad {key} section in report: {exc}") from None
        credit = data.get("credit")
        try:
            credit_summary = None if credit is None else CreditSummary(**_decode(credit))
        except TypeError as exc:
            raise ValueError(f"bad credit section in report: {exc}") from None
        return cls(
            test_acc=_decode(data["test_acc"]),
            d1=sections["D1"],
            d2=sections["D2"],
            d3=sections["D3"],
            credit=credit_summary,
            num_samples=data.get("num_samples"),
            subject=dict(data.get("subject") or {}),
        )

    def summary(self) -> str:
        """A few human lines: the verdict, each diagnostic's figure and its sentence."""

        def mark(fires: bool | None) -> str:
            return "skip" if fires is None else ("FIRE" if fires else "pass")

        name = self.subject.get("id")
        head = f"{name}: " if name else ""
        samples = f"; diagnostics on {self.num_samples} eval samples" if self.num_samples else ""
        lines = [
            f"{head}{self.verdict}  test accuracy {_pct(self.test_acc)}{samples}"
            + ("  [mode 1]" if self.mode1 else ""),
            f"  D1 scale stability    {mark(self.d1.fires)}  {self.d1.explanation}",
            f"  D2 reference validity {mark(self.d2.fires)}  {self.d2.explanation}",
            f"  D3 depth utility      {mark(self.d3.fires)}  {self.d3.explanation}",
        ]
        if self.credit is not None:
            lines.append(f"  credit                {self.credit.explanation}")
        return "\n".join(lines)


def _pct(acc: float | None) -> str:
    return "n/a" if acc is None else ("NaN" if math.isnan(acc) else f"{100 * acc:.1f}%")


# -- the diagnostics ---------------------------------------------------------------------------
def _layer_norms(tensors: Sequence[Tensor]) -> tuple[list[float], int | None, int]:
    """Median per-sample norm of each tensor, the first non-finite layer, and its bad samples.

    Norms are taken in float64 (a float32 square overflows above 1.8e19).  A layer where any
    sample is non-finite reports NaN (or Inf when no sample is NaN).
    """
    medians: list[float] = []
    first_bad, bad_count = None, 0
    for l, t in enumerate(tensors):
        norms = metrics.as_float64(t.reshape(t.shape[0], -1)).norm(dim=1)
        bad = ~torch.isfinite(norms)
        if bool(bad.any()):
            if first_bad is None:
                first_bad, bad_count = l, int(bad.sum())
            medians.append(math.nan if bool(torch.isnan(norms).any()) else math.inf)
        else:
            medians.append(float(norms.median()))
    return medians, first_bad, bad_count


def _growth(before: float, after: float) -> float:
    if before == 0 and after == 0:
        return 1.0  # a stream that stays at zero does not grow
    return after / before if before != 0 else math.inf


def scale_stability(
    hidden: Sequence[Tensor],
    threshold: float = 50.0,
    *,
    residual: bool = True,
    terminal_layer_norm: bool = False,
) -> ScaleStability:
    """D1 from the hidden states ``[h_0..h_L]`` of one eval batch."""
    norms, first_bad, bad_count = _layer_norms(hidden)
    growth = [_growth(norms[l], norms[l + 1]) for l in range(len(norms) - 1)]
    stream = "residual stream" if residual else "hidden state"
    n = hidden[0].shape[0]
    if first_bad is not None:
        # h_0 is the embedding's output; h_l for l >= 1 is block l-1's
        block = first_bad - 1 if first_bad > 0 else None
        worst = math.inf if growth and not any(math.isnan(g) for g in growth) else math.nan
        return ScaleStability(
            max_growth=worst,
            per_block_growth=growth,
            hidden_norms=norms,
            threshold=threshold,
            fires=True,
            worst_block=block,
            explanation=(
                f"the hidden state became non-finite at h_{first_bad} ({bad_count} of {n} "
                "samples have NaN or Inf): the model has diverged"
            ),
        )
    if not growth:
        return ScaleStability(1.0, [], norms, threshold, False, "no blocks: nothing can grow")
    worst_block = max(range(len(growth)), key=lambda l: growth[l])
    top = growth[worst_block]
    fires = not top <= threshold
    detail = (
        f"across block {worst_block} (median per-sample norm {_fmt(norms[worst_block])} -> "
        f"{_fmt(norms[worst_block + 1])})"
    )
    if fires:
        explanation = (
            f"the {stream} grew {_fmt(top)}x {detail} against a limit of {_fmt(threshold)}x"
        )
        if terminal_layer_norm:
            explanation += "; a terminal LayerNorm would hide this from the loss"
    else:
        explanation = (
            f"the largest growth of the {stream} is {_fmt(top)}x {detail}, within the limit of "
            f"{_fmt(threshold)}x"
        )
    return ScaleStability(top, growth, norms, threshold, fires, explanation, worst_block)


def reference_validity(
    grads: Sequence[Tensor], floor: float = DEFAULT_GRAD_FLOOR
) -> ReferenceValidity:
    """D2 from each sample's own loss gradient at every hidden state ``[g_0..g_L]``."""
    norms, first_bad, bad_count = _layer_norms(grads)
    g_last = norms[-1]
    last = len(norms) - 1
    n = grads[0].shape[0]
    if first_bad is not None:
        return ReferenceValidity(
            g_last, norms, floor, True,
            f"the per-sample BP gradient is non-finite at h_{first_bad} ({bad_count} of {n} "
            "samples): there is no BP reference to compare a credit signal with",
        )
    fires = not g_last >= floor
    if fires:
        explanation = (
            f"the per-sample BP gradient at h_{last} is {_fmt(g_last)}, below the floor "
            f"{_fmt(floor)}: gradient-based comparisons (cosine against BP) are meaningless at "
            "this scale"
        )
    else:
        explanation = (
            f"the per-sample BP gradient at h_{last} is {_fmt(g_last)}, above the floor "
            f"{_fmt(floor)}"
        )
    return ReferenceValidity(g_last, norms, floor, fires, explanation)


def depth_utility(
    test_acc: float, baseline_acc: float | None, min_margin_pp: float = 2.0
) -> DepthUtility:
    """D3: ``100 * (test_acc - baseline_acc)`` against ``min_margin_pp``; skipped without a
    baseline."""
    if baseline_acc is None:
        return DepthUtility(
            None, None, min_margin_pp, None,
            "not evaluated: no frozen-blocks baseline accuracy was given",
        )
    # Rounded to 1e-9 pp (far below any accuracy's resolution): accuracies are fractions k/n,
    # and unrounded 100 * (0.03 - 0.01) = 1.9999999999999998 would fail a 2 pp margin.
    margin = round(100.0 * (test_acc - baseline_acc), MARGIN_DECIMALS)
    if not math.isfinite(margin):
        return DepthUtility(
            margin, baseline_acc, min_margin_pp, True,
            f"the accuracy margin is not a number (test accuracy {_pct(test_acc)}, baseline "
            f"{_pct(baseline_acc)}): the model has diverged",
        )
    fires = not margin >= min_margin_pp
    side = "above" if margin >= 0 else "below"
    return DepthUtility(
        margin, baseline_acc, min_margin_pp, fires,
        f"test accuracy {_pct(test_acc)} is {abs(margin):.1f} pp {side} the frozen-blocks "
        f"baseline {_pct(baseline_acc)}; the trained blocks must add at least "
        f"{min_margin_pp:.1f} pp",
    )


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of samples whose largest logit is the label; non-finite logits count as wrong."""
    finite = torch.isfinite(logits).all(dim=1)
    correct = (logits.argmax(dim=1) == y) & finite
    return float(correct.to(torch.float64).mean())


# -- credit metrics ----------------------------------------------------------------------------
def credit_metrics(
    model: nn.Module | Anatomy,
    hidden: Sequence[Tensor],
    grads: Sequence[Tensor],
    credit: Sequence[Tensor | None],
    y: Tensor,
    *,
    thresholds: Thresholds | None = None,
    method: Any = None,
    x: Tensor | None = None,
    directions: int = 32,
    epsilon: float = 1e-3,
    eta: float = 0.01,
    null_draws: int = 10,
    seed: int = 0,
    reference_valid: bool = True,
) -> CreditSummary:
    """Per-layer cosine, pooled cosine, rho, nudging and (given a method) the fresh-feedback null.

    ``hidden`` / ``grads``: the hidden states and each sample's own gradient at them;
    ``credit``: ``[a_0..a_L]`` shaped like ``hidden``.  The random directions of rho come from
    a generator seeded ``seed + l`` for layer l, so a report is reproducible.
    """
    thresholds = thresholds or Thresholds()
    anatomy = anatomy_of(model)
    if len(credit) != len(hidden):
        raise ValueError(
            f"got {len(credit)} credit signals for {len(hidden)} hidden states h_0..h_"
            f"{len(hidden) - 1}; a method's credit is one tensor per hidden state [a_0..a_L]"
        )
    signals: list[Tensor | None] = []
    for l, (a, h) in enumerate(zip(credit, hidden, strict=True)):
        if a is not None and tuple(a.shape) != tuple(h.shape):
            raise ValueError(
                f"credit signal a_{l} has shape {tuple(a.shape)}, but h_{l} has shape "
                f"{tuple(h.shape)}"
            )
        signals.append(None if a is None else a.detach().to(h.device))
    cos, pooled, rho, nudge = [], [], [], []
    bad_layers = []
    for l, a in enumerate(signals):
        if a is None:
            for column in (cos, pooled, rho, nudge):
                column.append(None)
            continue
        if not bool(torch.isfinite(a).all()):
            bad_layers.append(l)
        loss_fn = metrics.layer_loss(anatomy, l, y)
        generator = torch.Generator(device=hidden[l].device).manual_seed(seed + l)
        cos.append(float(metrics.cosine(a, grads[l]).mean()))
        pooled.append(metrics.pooled_cosine(a, grads[l]))
        rho.append(metrics.perturbation_correlation(
            hidden[l], a, loss_fn, epsilon=epsilon, M=directions, generator=generator
        ))
        nudge.append(metrics.nudging(hidden[l], a, loss_fn, eta=eta))
    null = None
    if method is not None and x is not None and null_draws >= 2:
        null = metrics.fresh_feedback_null(
            method, x, y, draws=null_draws, seed=seed, reference=grads
        )
    summary = CreditSummary(
        cosine=cos,
        pooled_cosine=pooled,
        rho=rho,
        nudging=nudge,
        null_mean=None if null is None else null.mean,
        null_std=None if null is None else null.std,
        null_draws=0 if null is None else null.draws,
        deep_cosine=_deep(cos),
        deep_rho=_deep(rho),
        null_deep_mean=None if null is None else null.deep_mean,
        null_deep_std=None if null is None else null.deep_std,
        min_cosine=thresholds.min_cosine,
        min_rho=thresholds.min_rho,
    )
    summary.cosine_fires = _gate(summary.deep_cosine, thresholds.min_cosine)
    summary.rho_fires = _gate(summary.deep_rho, thresholds.min_rho)
    summary.explanation = _credit_sentence(summary, len(hidden) - 1, bad_layers, reference_valid)
    return summary


def _deep(values: Sequence[float | None]) -> float | None:
    deep = [v for v in values[1:] if v is not None]
    return math.fsum(deep) / len(deep) if deep else None


def _gate(value: float | None, minimum: float | None) -> bool | None:
    if minimum is None or value is None:
        return None
    return not value >= minimum  # NaN fires


def _credit_sentence(
    s: CreditSummary, num_blocks: int, bad_layers: list[int], reference_valid: bool
) -> str:
    if s.deep_cosine is None:
        scope = "h_0 only (no deep layers)"
        cos_value, rho_value = s.cosine[0], s.rho[0]
    else:
        scope = f"deep layers h_1..h_{num_blocks}"
        cos_value, rho_value = s.deep_cosine, s.deep_rho
    parts = [f"over {scope}: mean cosine with the per-sample BP gradient {_signed(cos_value)}"]
    if s.null_deep_mean is not None:
        parts[-1] += (
            f" (fresh-feedback null {_signed(s.null_deep_mean)} +- {_fmt(s.null_deep_std)} over "
            f"{s.null_draws} draws)"
        )
    parts.append(f"perturbation correlation {_signed(rho_value)}")
    sentence = ", ".join(parts)
    for label, value, minimum, fires in (
        ("cosine", cos_value, s.min_cosine, s.cosine_fires),
        ("perturbation correlation", rho_value, s.min_rho, s.rho_fires),
    ):
        if fires is not None:
            verb = "is below" if fires else "meets"
            sentence += f"; the {label} {_signed(value)} {verb} the minimum {_fmt(minimum)}"
    if bad_layers:
        sentence += (
            "; the credit signal is non-finite at "
            + ", ".join(f"h_{l}" for l in bad_layers)
        )
    if not reference_valid:
        sentence += (
            "; the BP reference failed D2, so these comparisons measure numerical noise"
        )
    return sentence


# -- the protocol ------------------------------------------------------------------------------
def _device_of(module: nn.Module) -> torch.device | None:
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return None


def evaluate(
    model: nn.Module | Anatomy,
    x: Tensor,
    y: Tensor,
    *,
    baseline_acc: float | None = None,
    thresholds: Thresholds | None = None,
    method: Any = None,
    credit: Sequence[Tensor | None] | None = None,
    test_acc: float | None = None,
    directions: int = 32,
    epsilon: float = 1e-3,
    eta: float = 0.01,
    null_draws: int = 10,
    seed: int = 0,
) -> Report:
    """Run the protocol on ``model`` with the eval batch ``(x, y)``.

    ``baseline_acc``: the frozen-blocks baseline's test accuracy (a fraction); D3 is skipped
    when None.  ``test_acc``: the model's full test accuracy; accuracy on ``(x, y)`` when None.
    ``method``: a set-up :class:`fa_checks.methods.Method` whose ``credit(x, y)`` gives the
    credit signals (and whose feedback is redrawn ``null_draws`` times for the null);
    ``credit``: the signals ``[a_0..a_L]`` directly.  ``directions`` / ``epsilon``: rho's M and
    step; ``eta``: nudging's step; ``seed``: the random directions and redrawn feedback.

    The model is evaluated in eval mode (its mode is restored after) and gets no ``.grad``.
    """
    thresholds = thresholds or Thresholds()
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"evaluate needs a non-empty eval batch with one label per sample; got "
            f"{x.shape[0]} inputs and {y.shape[0]} labels"
        )
    for name, value in (("baseline_acc", baseline_acc), ("test_acc", test_acc)):
        if value is not None and math.isfinite(value) and not 0 <= value <= 1:
            raise ValueError(f"{name} is a fraction in [0, 1], got {value!r}")
    anatomy = anatomy_of(model)
    module = anatomy.model
    device = _device_of(module)
    if device is not None:
        x, y = x.to(device), y.to(device)
    with eval_mode(module):  # restores each submodule's own mode (e.g. a frozen BN's eval)
        hidden, grads, logits = per_sample_gradients(anatomy, x, y)
        d1 = scale_stability(
            hidden,
            thresholds.max_growth,
            residual=anatomy.residual,
            terminal_layer_norm=isinstance(getattr(module, "out_ln", None), nn.LayerNorm),
        )
        d2 = reference_validity(grads, thresholds.grad_floor)
        acc = accuracy(logits, y) if test_acc is None else float(test_acc)
        d3 = depth_utility(acc, baseline_acc, thresholds.min_margin_pp)
        if credit is None and method is not None:
            credit = method.credit(x, y)
            module.eval()  # a rule's credit() may restore the mode it found; keep eval here
        summary = None
        if credit is not None:
            summary = credit_metrics(
                anatomy, hidden, grads, credit, y,
                thresholds=thresholds, method=method, x=x, directions=directions,
                epsilon=epsilon, eta=eta, null_draws=null_draws, seed=seed,
                reference_valid=not d2.fires,
            )
    return Report(
        test_acc=acc, d1=d1, d2=d2, d3=d3, credit=summary, num_samples=int(x.shape[0])
    )


__all__ = [
    "DEFAULT_GRAD_FLOOR",
    "CreditSummary",
    "DepthUtility",
    "ReferenceValidity",
    "Report",
    "ScaleStability",
    "Thresholds",
    "accuracy",
    "credit_metrics",
    "depth_utility",
    "evaluate",
    "reference_validity",
    "scale_stability",
]
