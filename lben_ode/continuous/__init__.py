"""Continuous-time models: the contracting, gain-bounded LBEN-ODE driven by an input signal.

``dz/dt = −z + σ(W z + U u(t) + b_z)``, ``y = W_o z + b_y``, parameterized so that it contracts at
rate α and has incremental ℓ2 gain at most γ for every value of its parameters (DESIGN §5).
"""

from .certificate import ContractionCertificate
from .integrator import GRADIENTS, INTEGRATOR_OPTIONS, IntegratorConfig
from .interpolation import INTERPOLATIONS, SampledSignal
from .model import ContractingLBEN
from .parameterization import ContractingWeights, contracting_weights, strict_contraction
from .stats import SimulationStats
from .steady_state import SteadyStateLBEN

__all__ = [
    "GRADIENTS",
    "INTEGRATOR_OPTIONS",
    "INTERPOLATIONS",
    "ContractingLBEN",
    "ContractingWeights",
    "ContractionCertificate",
    "IntegratorConfig",
    "SampledSignal",
    "SimulationStats",
    "SteadyStateLBEN",
    "contracting_weights",
    "strict_contraction",
]
