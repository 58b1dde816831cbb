"""Gradient methods of equilibria, beside the solvers: chosen by the model from the solver's options.

- ``"implicit"`` (:class:`ImplicitGradient`): the implicit-function-theorem gradient, for every solver.
- ``"adjoint"`` (:class:`ODEAdjoint`): torchdiffeq's adjoint method through the ODE solver's
  integration (``set_solver("ode", backward="adjoint")``).
"""

from __future__ import annotations

from ..errors import unknown_name
from .adjoint import ODEAdjoint
from .base import EquilibriumGraph, GradientMethod, WarmStart
from .implicit import ImplicitGradient, adjoint_solve, equilibrium_with_implicit_gradient

#: The gradient methods by name.
GRADIENT_METHODS: dict[str, type[GradientMethod]] = {cls.name: cls for cls in (ImplicitGradient, ODEAdjoint)}


def get_gradient_method(name: str) -> GradientMethod:
    """A gradient method by name; an unknown name lists the valid ones."""
    if name not in GRADIENT_METHODS:
        raise unknown_name("gradient method", name, sorted(GRADIENT_METHODS))
    return GRADIENT_METHODS[name]()


__all__ = [
    "GRADIENT_METHODS",
    "EquilibriumGraph",
    "GradientMethod",
    "ImplicitGradient",
    "ODEAdjoint",
    "WarmStart",
    "adjoint_solve",
    "equilibrium_with_implicit_gradient",
    "get_gradient_method",
]
