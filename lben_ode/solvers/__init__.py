"""Equilibrium solvers, chosen by name from a registry, all run by one loop.

Adding a solver is one new module with a ``@register``-decorated
:class:`~lben_ode.solvers.base.IterativeSolver` subclass (its state, one step, and the hooks it
needs; :func:`~lben_ode.solvers.loop.run` does the rest), imported below. It declares in
``REQUIRES`` what it needs from a model's operator; the conformance tests then cover it.
"""

from . import anderson, forward_backward, neural_ode, newton, peaceman_rachford  # noqa: F401  (registers the solvers)
from .base import IterativeSolver, Solver
from .loop import Check, run
from .options import COMMON_OPTIONS, Option
from .problem import RESOLVENT, EquilibriumOperator, FixedPointProblem, operator_capabilities
from .registry import available, get_solver, register, solver_class
from .results import Result
from .stats import SolverStats

__all__ = [
    "COMMON_OPTIONS",
    "RESOLVENT",
    "Check",
    "EquilibriumOperator",
    "FixedPointProblem",
    "IterativeSolver",
    "Option",
    "Result",
    "Solver",
    "SolverStats",
    "available",
    "get_solver",
    "operator_capabilities",
    "register",
    "run",
    "solver_class",
]
