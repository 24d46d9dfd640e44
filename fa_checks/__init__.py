"""fa-checks: silent-failure diagnostics for feedback-alignment style training.

The names below are imported lazily so that ``import fa_checks`` (and loading the pytest
plugin) costs nothing until one is used.
"""

__version__ = "0.2.0"

_EXPORTS = {
    "Anatomy": "fa_checks.models.anatomy",
    "anatomy_of": "fa_checks.models.anatomy",
    "per_sample_norm": "fa_checks.models.anatomy",
    "build_model": "fa_checks.models",
    "Method": "fa_checks.methods",
    "get_method": "fa_checks.methods",
    "load_data": "fa_checks.data",
    "Dataset": "fa_checks.data",
    "save_checkpoint": "fa_checks.checkpoint",
    "load_checkpoint": "fa_checks.checkpoint",
    "Checkpoint": "fa_checks.checkpoint",
    "CheckpointError": "fa_checks.checkpoint",
    "evaluate": "fa_checks.diagnostics.protocol",
    "gate_across_seeds": "fa_checks.diagnostics.protocol",
    "Report": "fa_checks.report",
    "Thresholds": "fa_checks.report",
    "AcrossSeeds": "fa_checks.report",
    "UserError": "fa_checks.errors",
    "train": "fa_checks.training.loop",
    "Run": "fa_checks.training.loop",
    "cosine": "fa_checks.diagnostics.metrics",
    "perturbation_correlation": "fa_checks.diagnostics.metrics",
    "nudging": "fa_checks.diagnostics.metrics",
    "fresh_feedback_null": "fa_checks.diagnostics.metrics",
    "feature_drift": "fa_checks.diagnostics.metrics",
    "alignment": "fa_checks.diagnostics.metrics",
    "training_threads": "fa_checks.training.threads",
    "model_factory": "fa_checks.models",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fa_checks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return list(__all__)
