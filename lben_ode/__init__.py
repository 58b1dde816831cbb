"""lben-ode: Lipschitz-bounded equilibrium networks with guaranteed well-posedness and γ-Lipschitz maps.

Equilibria are computed by operator splitting (forward-backward, Peaceman-Rachford) or by integrating
the neural ODE ``dz/dt = −z + σ(Wz + Ux + b)`` to steady state; gradients come from implicit
differentiation.
"""

from . import activations, continuous, solvers
from .continuous import ContractingLBEN
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
from .models import LBEN, ConvLBEN, EquilibriumModel, ExplicitWeights, FeedforwardEquilibrium, MonDEQ, from_mlp
from .normalization import Normalization

__version__ = "0.1.0"

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
