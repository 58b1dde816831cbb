"""Lightning integration: :class:`LBENClassifier`, :class:`SequenceRegressor` and the ``lben-ode`` command.

The names below are imported on first use, so that ``lben-ode --help`` (whose entry point lives in
this package) does not wait for Lightning to load.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → module of this package that defines it.
_EXPORTS = {
    "DEFAULT_CERTIFY_EPS": "classifier",
    "LBENClassifier": "classifier",
    "LBENCLI": "cli",
    "main": "command",
    "CertificationMetrics": "metrics",
    "ClassificationMetrics": "metrics",
    "SolverMetrics": "metrics",
    "OutputFit": "sequence_metrics",
    "SequenceRegressor": "sequence",
    "SimulationMetrics": "sequence_metrics",
    "WarmStartCache": "warm_start",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
