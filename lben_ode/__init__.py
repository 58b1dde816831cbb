"""lben-ode: Lipschitz-bounded equilibrium networks with guaranteed well-posedness and γ-Lipschitz maps.

Equilibria are computed by operator splitting (forward-backward, Peaceman-Rachford) or by integrating
the neural ODE ``dz/dt = −z + σ(Wz + Ux + b)`` to steady state; gradients come from implicit
differentiation.
"""

from . import activations, solvers
from .errors import (
    ActivationError,
    CheckpointError,
    ConfigurationError,
    ConvergenceError,
    ConvergenceWarning,
    LBENError,
    NonFiniteInputError,
    ShapeError,
    UnknownNameError,
    UnsupportedSolverError,
)
from .models import LBEN, ConvLBEN, EquilibriumModel, ExplicitWeights, FeedforwardEquilibrium, MonDEQ, from_mlp
from .normalization import Normalization

__version__ = "0.1.0"

__all__ = [
    "LBEN",
    "ActivationError",
    "CheckpointError",
    "ConfigurationError",
    "ConvLBEN",
    "ConvergenceError",
    "ConvergenceWarning",
    "EquilibriumModel",
    "ExplicitWeights",
    "FeedforwardEquilibrium",
    "LBENError",
    "MonDEQ",
    "NonFiniteInputError",
    "Normalization",
    "ShapeError",
    "UnknownNameError",
    "UnsupportedSolverError",
    "activations",
    "from_mlp",
    "solvers",
]
