"""Equilibrium solvers, chosen by name from a registry.

Adding a solver is one new module with a ``@register``-decorated :class:`Solver` subclass, imported
below.
"""

from . import anderson, forward_backward, neural_ode, peaceman_rachford  # noqa: F401  (registers the solvers)
from .base import IterativeSolver, Solver
from .options import COMMON_OPTIONS, Option
from .problem import EquilibriumOperator, FixedPointProblem
from .registry import available, get_solver, register, solver_class
from .stats import SolverStats

__all__ = [
    "COMMON_OPTIONS",
    "EquilibriumOperator",
    "FixedPointProblem",
    "IterativeSolver",
    "Option",
    "Solver",
    "SolverStats",
    "available",
    "get_solver",
    "register",
    "solver_class",
]
