"""lben-ode: Lipschitz-bounded equilibrium networks with guaranteed well-posedness and γ-Lipschitz maps.

Equilibria are computed by operator splitting (forward-backward, Peaceman-Rachford) or by integrating
the neural ODE ``dz/dt = −z + σ(Wz + Ux + b)`` to steady state; gradients come from implicit
differentiation.

The errors are imported with the package; the models, solvers and the rest (torch, torchdiffeq) on
first use, so that ``lben-ode --help`` and ``import lben_ode.errors`` answer at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ActivationError,
    CheckpointError,
    ConfigurationError,
    ConvergenceError,
    ConvergenceWarning,
    IntegrationError,
    LBENError,
    NonFiniteInputError,
    ShapeError,
    StepSizeWarning,
    TimeGridError,
    UnknownNameError,
    UnsupportedSolverError,
)

if TYPE_CHECKING:
    from . import activations, continuous, solvers
    from .continuous import ContractingLBEN
    from .models import LBEN, ConvLBEN, EquilibriumModel, ExplicitWeights, FeedforwardEquilibrium, MonDEQ, from_mlp
    from .normalization import Normalization

__version__ = "0.1.0"

#: Names imported on first use: name → module (relative to this package) that defines it.
_LAZY = {
    "LBEN": ".models",
    "ConvLBEN": ".models",
    "EquilibriumModel": ".models",
    "ExplicitWeights": ".models",
    "FeedforwardEquilibrium": ".models",
    "MonDEQ": ".models",
    "from_mlp": ".models",
    "Normalization": ".normalization",
    "ContractingLBEN": ".continuous",
}

#: Subpackages and modules reachable as attributes (``lben_ode.solvers.available()``).
_SUBMODULES = ("activations", "solvers", "models", "robustness", "normalization", "implicit", "continuous")

__all__ = [
    "LBEN",
    "ActivationError",
    "CheckpointError",
    "ConfigurationError",
    "ContractingLBEN",
    "ConvLBEN",
    "ConvergenceError",
    "ConvergenceWarning",
    "EquilibriumModel",
    "ExplicitWeights",
    "FeedforwardEquilibrium",
    "IntegrationError",
    "LBENError",
    "MonDEQ",
    "NonFiniteInputError",
    "Normalization",
    "ShapeError",
    "StepSizeWarning",
    "TimeGridError",
    "UnknownNameError",
    "UnsupportedSolverError",
    "activations",
    "continuous",
    "from_mlp",
    "solvers",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})
